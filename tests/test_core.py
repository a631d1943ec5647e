"""The shared core: parameter budgets, the training loop (ensembles, divergence), data loading,
tracking contents, configs and the CLI."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from findings_readback import findings_json
from mlflow.tracking import MlflowClient

import experiments
from experiments import catalog
from experiments.core.config import build_config, flatten
from experiments.core.data import DatasetUnavailable, Split, load_dataset, target_function
from experiments.core.models import cnn, cnn_features, count_params, mlp, mlp_params, widths_for_budget
from experiments.core.train import Convergence, LearningRates, TrainSpec, seeded, train


@pytest.mark.parametrize("budget", [300, 571, 2_000, 50_000, 400_000])
@pytest.mark.parametrize("depth", [1, 2, 3, 5, 7])
def test_widths_for_budget_within_one_percent(budget: int, depth: int) -> None:
    widths = widths_for_budget(budget, depth)
    assert len(widths) == depth
    n = count_params(mlp(1, widths, 1))
    assert n == mlp_params(1, widths, 1)
    assert abs(n - budget) / budget <= 0.01


def test_course_models_have_the_documented_counts() -> None:
    counts = [count_params(mlp(1, w, 1)) for w in ([190], [10, 18, 15, 4], [5, 10, 10, 10, 10, 10, 5])]
    assert counts == [571, 572, 571]
    assert count_params(mlp(1, [5, 10, 10, 10, 10, 5], 1)) == 461  # the seeds' miscount


def test_widths_for_budget_rejects_impossible_budget() -> None:
    with pytest.raises(ValueError, match="more than"):
        widths_for_budget(10, 5, in_dim=784, out_dim=10)


def test_cnn_feature_count_matches_the_module() -> None:
    conv_params, features = cnn_features((1, 28, 28), [8, 16])
    model = cnn((1, 28, 28), [8, 16], [32], 10)
    assert count_params(model) == conv_params + mlp_params(features, [32], 10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def _blobs(n: int = 256, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return Split(x, (x[:, 0] * x[:, 1] > 0).long())


def test_ensemble_matches_models_trained_alone() -> None:
    data = _blobs()
    seeds = [3, 4, 5]
    spec = TrainSpec(optimizer="momentum", lr=0.05, batch_size=32, epochs=3)

    def factory() -> torch.nn.Module:
        return mlp(2, [16, 16], 2)

    together = seeded(factory, seeds, "cpu")
    joint = train(together, data, spec, seeds=seeds)
    for i, seed in enumerate(seeds):
        alone = seeded(factory, [seed], "cpu")
        single = train(alone, data, spec, seeds=[seed])
        for (name, a), b in zip(alone[0].state_dict().items(), together[i].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        assert single[0].history[-1]["running_loss"] == pytest.approx(
            joint[i].history[-1]["running_loss"], rel=1e-4)


def test_a_budget_in_steps_alone_crosses_epochs_and_stops_at_the_step() -> None:
    data = _blobs()  # 256 examples: 8 steps of 32 an epoch
    models = seeded(lambda: mlp(2, [8], 2), [0], "cpu")
    spec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=32, epochs=None, max_steps=25,
                     eval_unit="step", eval_every=10)
    (result,) = train(models, data, spec, seeds=[0])
    assert result.stop_step == 25
    assert [(r["epoch"], r["step"], r["x"]) for r in result.history] == [(2, 10, 10), (3, 20, 20),
                                                                       (4, 25, 25)]
    with pytest.raises(ValueError, match="budget"):
        train(models, data, TrainSpec(epochs=None), seeds=[0])


def test_eval_at_start_measures_the_initial_weights() -> None:
    data, test = _blobs(), _blobs(64, seed=1)
    models = seeded(lambda: mlp(2, [8], 2), [0], "cpu")
    with torch.no_grad():
        initial = torch.nn.functional.cross_entropy(models[0](test.x), test.y).item()
    spec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=64, epochs=2, eval_at_start=True)
    (result,) = train(models, data, spec, seeds=[0], evals={"test": test})
    first, *rest = result.history
    assert (first["epoch"], first["step"], first["x"]) == (0, 0, 0)
    assert "running_loss" not in first  # no mini-batch seen yet
    assert first["test_loss"] == pytest.approx(initial, rel=1e-5)
    assert [r["epoch"] for r in rest] == [1, 2] and all("running_loss" in r for r in rest)


def test_divergence_stops_only_the_diverging_model() -> None:
    data = _blobs()
    models = seeded(lambda: mlp(2, [16], 1), [0, 1], "cpu")
    with torch.no_grad():
        for p in models[0].parameters():
            p.mul_(1e4)  # a blown-up start: its MSE overflows within a few SGD steps
    target = Split(data.x, data.y.float().unsqueeze(1))
    spec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=64, epochs=4, loss="mse")
    results = train(models, target, spec, seeds=[0, 1])
    assert results[0].status == "diverged"
    assert results[0].stop_step is not None and 1 <= results[0].stop_step <= 4
    assert results[1].status == "finished"
    assert len(results[1].history) == 4
    assert all(np.isfinite(p.detach().numpy()).all() for p in models[1].parameters())


def test_convergence_rule_stops_a_flat_fit() -> None:
    data = target_function("sin_linear", 64, (0.0, 1.0))
    spec = TrainSpec(optimizer="adam", lr=1e-2, epochs=5000, loss="mse", eval_every=10)
    result = train(seeded(lambda: mlp(1, [16], 1), [0], "cpu"), data, spec, seeds=[0],
                   hooks=[Convergence(1e-3, 5, n_models=1)])[0]
    assert result.status == "converged"
    assert result.stop_step < 5000


def test_targets_have_their_closed_forms() -> None:
    sinc = target_function("sinc", 5, (0.0, 1.0))
    assert sinc.y[0].item() == pytest.approx(1.0)
    assert sinc.y[2].item() == pytest.approx(np.sin(2.5 * np.pi) / (2.5 * np.pi), abs=1e-6)
    sign = target_function("sign", 11, (0.05, 0.95))
    assert set(sign.y.flatten().tolist()) <= {-1.0, 0.0, 1.0}


def test_mnist_loads_normalized_on_device(mnist_dir) -> None:
    ds = load_dataset("mnist", "cpu", train_subset=1000)
    assert ds.train.x.shape == (1000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    full = load_dataset("mnist", "cpu")
    assert abs(full.train.x.mean().item()) < 1e-3 and full.train.x.std().item() == pytest.approx(1, abs=0.01)
    assert sorted(full.train.y.unique().tolist()) == list(range(10))


def test_missing_dataset_names_the_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PHENOLAB_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DatasetUnavailable, match="MNIST/raw"):
        load_dataset("mnist")


def test_cifar10_reads_its_own_format(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, n).tolist()}

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch(4)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    monkeypatch.setenv("PHENOLAB_DATA_DIR", str(tmp_path))
    ds = load_dataset("cifar10")
    assert ds.train.x.shape == (20, 3, 32, 32) and ds.test.x.shape == (4, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32)
    raw = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0].reshape(3, 32, 32)
    expected = (raw[0, 0, 0] / 255 - 0.4914) / 0.2470
    assert ds.train.x[0, 0, 0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_configs_are_bounded_and_flatten() -> None:
    cls = catalog.get("function-fit").config_cls
    config = build_config(cls, "quick", {"epochs": 7})
    assert config.epochs == 7 and config.n_points == 256
    assert flatten(config)["domain"] == [0.0, 1.0]
    for bad in ({"epochs": -1}, {"epochs": 10**9}, {"nope": 1}, {"domain": [1, 0]}):
        with pytest.raises(ValueError):
            build_config(cls, None, bad)


def _tiny_function_fit() -> dict:
    return {"epochs": 60, "n_points": 64, "eval_every": 5, "lrs": [1e-3, 1e-2]}


ARCHITECTURES = ("1-190-1", "1-10-18-15-4-1", "1-5-10-10-10-10-10-5-1")


def test_function_fit_tunes_each_architecture_over_rates_and_seeds(store: str, tmp_path: Path) -> None:
    run_id = experiments.run("function-fit", _tiny_function_fit(), preset="quick")
    client = MlflowClient(store)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["epochs"] == "60"
    assert {"torch_version", "device", "git_revision", "seed"} <= set(parent.data.tags)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 3 * 2 * 2  # architectures × rates × seeds
    assert {c.info.run_name for c in children} == {f"{a} lr{lr:g} seed{s}" for a in ARCHITECTURES
                                                   for lr in (1e-3, 1e-2) for s in (0, 1)}
    counts = [int(c.data.params["n_params"]) for c in children]
    assert max(counts) - min(counts) <= 0.01 * min(counts)
    history = client.get_metric_history(children[0].info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(5, 61, 5))
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:  # hidden layers of each model: 1, 4, 7
        dead = {k: v for k, v in child.data.metrics.items() if k.startswith("dead_units/")}
        assert len(dead) == int(child.data.params["depth"])
        assert all(0.0 <= v <= 1.0 for v in dead.values())
        assert child.data.tags["collapsed"] == str(1.0 in dead.values()).lower()
    metrics = parent.data.metrics
    best_mses = {}
    for arch in ARCHITECTURES:  # the best rate has the lowest mean final MSE over the seeds
        means = {lr: metrics[f"mean/{arch} lr{lr:g}/final_train_loss"] for lr in (1e-3, 1e-2)}
        best = metrics[f"best_lr/{arch}"]
        assert means[best] == min(means.values())
        best_mses[arch] = [c.data.metrics["final_train_loss"] for c in children
                           if c.data.params["variant"] == f"{arch} lr{best:g}"]
        assert means[best] == pytest.approx(np.mean(best_mses[arch]))
        assert metrics[f"best_final_mse/{arch}"] == pytest.approx(min(best_mses[arch]))
        assert metrics[f"median_final_mse/{arch}"] == pytest.approx(np.median(best_mses[arch]))
    findings = findings_json(client, run_id, tmp_path)
    assert findings.keys() == {"deeper_lower_mse_1_10_18_15_4_1",
                               "deeper_lower_mse_1_5_10_10_10_10_10_5_1"}
    for arch in ARCHITECTURES[1:]:  # deep − shallow, each at its best rate
        finding = findings[f"deeper_lower_mse_{arch.replace('-', '_')}"]
        assert finding["expect"] == "below" and finding["null"] == 0.0
        assert finding["value"] == pytest.approx(np.mean(best_mses[arch]) - np.mean(best_mses["1-190-1"]))
        assert finding["verdict"] == "inconclusive"  # 2 seeds: too few to resample
    files = {f.path: f.file_size for f in client.list_artifacts(run_id, "figures")}
    assert files.keys() == {"figures/loss.png", "figures/predictions.png"}
    assert all(size > 10_000 for size in files.values())


def test_task_fit_on_mnist_has_equal_budgets_and_epoch_curves(store: str, mnist_dir,
                                                               tmp_path: Path) -> None:
    run_id = experiments.run("task-fit", {"epochs": 2, "train_subset": 3000, "test_subset": 500,
                                          "param_budget": 20_000, "seeds": 2})
    client = MlflowClient(store)
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 2 * 2  # depths × seeds
    counts = [int(c.data.params["n_params"]) for c in children]
    assert all(abs(n - 20_000) <= 200 for n in counts)
    accuracies: dict[str, list[float]] = {}
    for child in children:
        accs = client.get_metric_history(child.info.run_id, "test_acc")
        assert [m.step for m in accs] == [1, 2]
        assert accs[-1].value > 0.5  # well above the 10% of chance even after 2 tiny epochs
        accuracies.setdefault(child.data.params["variant"], []).append(accs[-1].value)
    for variant, values in accuracies.items():
        assert parent.data.metrics[f"mean/{variant}/final_test_acc"] == pytest.approx(np.mean(values))
        assert parent.data.metrics[f"n/{variant}/final_test_acc"] == 2
    (finding,) = findings_json(client, run_id, tmp_path).values()
    assert finding["key"] == "deeper_higher_test_acc_depth3" and finding["expect"] == "above"
    assert finding["value"] == pytest.approx(np.mean(accuracies["cnn-depth3"])
                                             - np.mean(accuracies["cnn-depth1"]))
    assert finding["verdict"] == "inconclusive"  # 2 seeds: too few to resample
    figures = {f.path for f in client.list_artifacts(run_id, "figures")}
    assert figures == {"figures/loss.png", "figures/accuracy.png"}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize(("sets", "needle"), [
    (["epochs=-3"], "epochs"), (["epochs=abc"], "epochs"), (["bogus=1"], "bogus"),
    (["epochs"], "key=value")])
def test_cli_bad_set_is_one_line_naming_the_key(sets: list[str], needle: str) -> None:
    args = [a for s in sets for a in ("--set", s)]
    out = _cli("run", "function-fit", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_cli_unknown_experiment_lists_names() -> None:
    out = _cli("run", "nope")
    assert out.returncode == 2 and "function-fit" in out.stderr


def test_cli_list_shows_parameters_and_defaults() -> None:
    out = _cli("list")
    assert out.returncode == 0
    assert "function-fit" in out.stdout and "--set epochs=20000" in out.stdout


def test_cli_run_prints_run_id(store: str) -> None:
    import os

    out = _cli("run", "function-fit", "--preset", "quick", "--set", "epochs=20",
               "--set", "n_points=32", env={**os.environ})
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split("MLflow run: ")[1].split()[0]
    assert MlflowClient(store).get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "momentum"])
def test_per_model_rates_train_each_model_as_at_its_own_rate(optimizer: str) -> None:
    data, rates = _blobs(), [1e-3, 1e-2]
    together = seeded(lambda: mlp(2, [16], 2), [0, 0], "cpu")
    train(together, data, TrainSpec(optimizer=optimizer, lr=1.0, batch_size=32, epochs=3), seeds=[0, 0],
          hooks=[LearningRates(rates, optimizer, "cpu")])
    for model, rate in zip(together, rates):
        alone = seeded(lambda: mlp(2, [16], 2), [0], "cpu")
        train(alone, data, TrainSpec(optimizer=optimizer, lr=rate, batch_size=32, epochs=3), seeds=[0])
        for a, b in zip(alone[0].parameters(), model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
