"""HW1-3 experiments end to end on real MNIST (tiny sizes): what each logs to MLflow, read back,
and the properties their science rests on (shuffled labels, interpolation endpoints,
per-batch-size measures)."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from findings_readback import findings_json
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file
from scipy.stats import spearmanr

import experiments
from experiments.core import measures
from experiments.core.config import build_config
from experiments.core.data import load_dataset
from experiments.core.models import mlp, mlp_params
from experiments.interpolation.config import Config as InterpolationConfig
from experiments.interpolation.experiment import alpha_grid
from experiments.param_count.config import Config as ParamCountConfig
from experiments.random_labels.experiment import shuffle_labels
from experiments.sensitivity.config import Config as SensitivityConfig

TINY = {"train_subset": 300, "test_subset": 200, "epochs": 1, "hidden": [16]}


def _children(client: MlflowClient, run_id: str) -> dict[str, object]:
    parent = client.get_run(run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return {r.info.run_name: r for r in runs}


def _table(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> list[dict[str, str]]:
    path = client.download_artifacts(run_id, f"tables/{name}.csv", str(tmp_path))
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _figures(client: MlflowClient, run_id: str) -> dict[str, int]:
    return {f.path: f.file_size for f in client.list_artifacts(run_id, "figures")}


def test_shuffle_labels_is_a_seeded_permutation_of_the_chosen_fraction() -> None:
    y = torch.arange(1000) % 10
    assert torch.equal(shuffle_labels(y, 0.0, 0), y)
    full = shuffle_labels(y, 1.0, 0)
    assert torch.equal(full.bincount(), y.bincount())  # class counts kept
    assert (full != y).float().mean() > 0.8
    assert torch.equal(full, shuffle_labels(y, 1.0, 0))
    assert not torch.equal(full, shuffle_labels(y, 1.0, 1))
    assert (shuffle_labels(y, 0.3, 0) != y).sum() <= 300


def test_random_labels_logs_epoch_curves_against_shuffled_labels(store: str, mnist_dir: Path,
                                                                  tmp_path: Path) -> None:
    run_id = experiments.run("random-labels", {**TINY, "epochs": 2}, preset="quick")
    client = MlflowClient(store)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["labels_changed"] > 0.8
    children = _children(client, run_id)
    assert children.keys() == {"mlp-16 seed0", "mlp-16 seed1"}
    for child in children.values():
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1, 2]
    train = [c.data.metrics["final_train_acc"] for c in children.values()]
    test = [c.data.metrics["final_test_acc"] for c in children.values()]
    assert parent.data.metrics["mean/mlp-16/final_test_acc"] == pytest.approx(np.mean(test))
    assert parent.data.metrics["mean/mlp-16/final_test_acc"] < 0.3  # nothing to generalise
    findings = findings_json(client, run_id, tmp_path)
    fits, chance = findings["fits_shuffled_labels"], findings["test_at_chance"]
    assert (fits["null"], fits["expect"]) == (0.9, "above")
    assert fits["value"] == pytest.approx(np.mean(train))
    assert (chance["null"], chance["expect"]) == (0.05, "below")
    assert chance["value"] == pytest.approx(np.mean([abs(a - 0.1) for a in test]))
    figures = _figures(client, run_id)
    assert figures.keys() == {"figures/loss.png", "figures/accuracy.png"}
    assert min(figures.values()) > 10_000


def test_random_labels_runs_on_cifar10(store: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The CIFAR-10 option: a tiny set of random images in CIFAR's own pickle format."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                 "labels": (np.arange(8) % 10).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("0123456789")}))
    monkeypatch.setenv("PHENOLAB_DATA_DIR", str(tmp_path / "cifar"))
    run_id = experiments.run("random-labels", {"dataset": "cifar10", "hidden": [16], "epochs": 2,
                                               "train_subset": None, "seeds": 1})
    client = MlflowClient(store)
    assert client.get_run(run_id).data.params["dataset"] == "cifar10"
    (child,) = _children(client, run_id).values()
    assert int(child.data.params["n_params"]) == mlp_params(3 * 32 * 32, [16], 10)
    assert [m.step for m in client.get_metric_history(child.info.run_id, "test_acc")] == [1, 2]


def test_param_count_defaults_span_two_orders_of_magnitude() -> None:
    config = ParamCountConfig()
    counts = [mlp_params(784, [w] * config.depth, 10) for w in config.widths]
    assert len(counts) >= 10 and max(counts) / min(counts) >= 100
    with pytest.raises(ValidationError, match="at most once"):
        ParamCountConfig(widths=[4, 16, 4])


def test_param_count_logs_n_params_and_finals_per_model(store: str, mnist_dir: Path,
                                                       tmp_path: Path) -> None:
    widths = [1, 4, 16, 64]
    run_id = experiments.run("param-count", {"train_subset": 300, "test_subset": 200, "epochs": 1,
                                             "widths": widths, "seeds": 2})
    client = MlflowClient(store)
    children = _children(client, run_id)
    counts = sorted(int(c.data.params["n_params"]) for c in children.values())
    assert counts == sorted(2 * [mlp_params(784, [w], 10) for w in widths])  # widths × seeds
    for child in children.values():
        metrics = child.data.metrics
        assert {"final_train_loss", "final_test_loss", "final_train_acc", "final_test_acc"} \
            <= metrics.keys()
        assert metrics["generalization_gap"] == pytest.approx(
            metrics["final_train_acc"] - metrics["final_test_acc"])
    history = {m.step: m.value for m in client.get_metric_history(run_id, "test_acc_by_params")}
    assert sorted(history) == counts[::2]
    for w in widths:  # the mean over the width's seeds, at step = its parameter count
        seeds = [children[f"width-{w} seed{s}"].data.metrics["final_test_acc"] for s in (0, 1)]
        assert history[mlp_params(784, [w], 10)] == pytest.approx(np.mean(seeds))
    findings = findings_json(client, run_id, tmp_path)
    n_params = [int(c.data.params["n_params"]) for c in children.values()]
    for key, y in (("train_acc_rises_with_params",
                    [c.data.metrics["final_train_acc"] for c in children.values()]),
                   ("gap_grows_with_params",
                    [c.data.metrics["generalization_gap"] for c in children.values()])):
        assert findings[key]["value"] == pytest.approx(spearmanr(n_params, y).statistic)
        low, high = findings[key]["interval"]
        assert -1 <= low <= high <= 1  # 8 models: enough to resample
    assert _figures(client, run_id).keys() == {"figures/loss_vs_params.png",
                                               "figures/accuracy_vs_params.png"}


def test_alpha_grid_hits_the_endpoints_exactly() -> None:
    grid = alpha_grid(InterpolationConfig())
    assert len(grid) == 31 and grid[0] == -1.0 and grid[-1] == 2.0
    assert 0.0 in grid and 1.0 in grid
    coarse = alpha_grid(InterpolationConfig(alpha_step=0.3))
    assert coarse[:2] == [-1.0, -0.7] and {-0.5, 1.5} <= set(coarse)  # ±delta: the finding's
    with pytest.raises(ValidationError, match="alpha_min"):
        InterpolationConfig(alpha_min=2.0, alpha_max=1.0)


def _child_weights(client: MlflowClient, child: object, tmp_path: Path) -> dict[str, torch.Tensor]:
    """A child's final weights (weights/<child>.safetensors), downloaded through MlflowClient."""
    local = Path(client.download_artifacts(child.info.run_id, "weights", str(tmp_path / child.info.run_id)))
    (weights,) = local.glob("*.safetensors")
    return load_file(weights)


def test_interpolation_endpoints_reproduce_the_saved_models(store: str, mnist_dir: Path,
                                                            tmp_path: Path) -> None:
    config = {**TINY, "seeds": 2, "eval_subset": 300, "alpha_step": 0.5,
              "approaches": [{"batch_size": 16}, {"batch_size": 128, "lr": 1e-2}]}
    run_id = experiments.run("interpolation", config)
    client = MlflowClient(store)
    children = _children(client, run_id)
    names = ("m1-bs16-lr0.001", "m2-bs128-lr0.01")
    assert set(children) == {f"{m} seed{s}" for m in names for s in (0, 1)}
    assert {c.data.params["batch_size"] for c in children.values()} == {"16", "128"}
    for child in children.values():  # the budget each model got: capped at 1 epoch
        metrics, batch = child.data.metrics, int(child.data.params["batch_size"])
        assert metrics["epochs_trained"] == metrics["steps_trained"] / -(-300 // batch) == 1.0
        assert metrics["reached_target"] == (child.data.tags["status"] == "reached") == 0.0
    pairs = [[_child_weights(client, children[f"{m} seed{s}"], tmp_path) for m in names] for s in (0, 1)]
    alphas = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
    line = measures.interpolate(*pairs[0], alphas)
    assert all(torch.equal(line[k][2], pairs[0][0][k]) and torch.equal(line[k][4], pairs[0][1][k])
               for k in pairs[0][0])
    test = load_dataset("mnist", "cpu", test_subset=200).test
    by_step = {m.step: m.value for m in client.get_metric_history(run_id, "interp_test_loss")}
    assert sorted(by_step) == [-100, -50, 0, 50, 100, 150, 200]  # step = 100·α
    model = mlp(784, [16], 10)
    own = np.zeros((2, 2))  # [seed, end]: each model's own test loss
    for s, pair in enumerate(pairs):
        for end, weights in enumerate(pair):
            model.load_state_dict(weights)
            with torch.no_grad():
                own[s, end] = F.cross_entropy(model(test.x), test.y).item()
    assert by_step[0] == pytest.approx(own[:, 0].mean(), rel=1e-5)  # the mean over seed pairs
    assert by_step[100] == pytest.approx(own[:, 1].mean(), rel=1e-5)
    assert _figures(client, run_id).keys() == {"figures/interpolation.png"}
    parent = client.get_run(run_id).data
    assert parent.tags["interp_step"] == "round(100*alpha)"
    assert parent.metrics["test_loss_at_m2"] == pytest.approx(by_step[100])
    table = _table(client, run_id, "interpolation", tmp_path)
    assert [float(r["alpha"]) for r in table] == alphas.tolist()
    assert float(table[2]["test_loss"]) == pytest.approx(by_step[0])
    assert float(table[2]["test_loss_std"]) == pytest.approx(own[:, 0].std(ddof=1), rel=1e-4)
    seeds = _table(client, run_id, "interpolation_seeds", tmp_path)
    assert [(int(r["seed"]), float(r["alpha"])) for r in seeds] == [(s, a) for s in (0, 1)
                                                                    for a in alphas.tolist()]
    found = findings_json(client, run_id, tmp_path)
    train = {(int(r["seed"]), float(r["alpha"])): float(r["train_loss"]) for r in seeds}
    steep = [(train[s, 1.5] - train[s, 1.0]) - (train[s, -0.5] - train[s, 0.0]) for s in (0, 1)]
    assert found["large_batch_side_steeper"]["value"] == pytest.approx(np.mean(steep))
    blow = [min(train[s, -1.0], train[s, 2.0]) - max(train[s, 0.0], train[s, 1.0]) for s in (0, 1)]
    assert found["blows_up_beyond_ends"]["value"] == pytest.approx(np.mean(blow))
    assert {f["verdict"] for f in found.values()} == {"inconclusive"}  # 2 seeds: no interval
    for name in names:
        assert parent.metrics[f"n/{name}/final_test_loss"] == 2
        assert parent.metrics[f"mean/{name}/epochs_trained"] == 1.0


def test_sensitivity_defaults_and_bounds() -> None:
    config = SensitivityConfig()
    assert len(config.batch_sizes) >= 5
    assert min(config.batch_sizes) <= 16 and max(config.batch_sizes) >= 4096
    with pytest.raises(ValidationError, match="batch_sizes"):
        build_config(SensitivityConfig, None, {"batch_sizes": [0, 64]})
    with pytest.raises(ValidationError, match="at most once"):
        build_config(SensitivityConfig, None, {"batch_sizes": [64, 16, 64]})


def test_sensitivity_per_batch_size_children_and_figures(store: str, mnist_dir: Path,
                                                         tmp_path: Path) -> None:
    run_id = experiments.run("sensitivity", {**TINY, "batch_sizes": [8, 32, 300], "seeds": 2,
                                             "measure_subset": 100, "jacobian": True})
    client = MlflowClient(store)
    children = _children(client, run_id)
    assert len(children) == 6
    for child in children.values():
        metrics = child.data.metrics
        assert child.data.params["batch_size"] in {"8", "32", "300"}
        assert metrics["sensitivity"] > 0 and metrics["sensitivity_train"] > 0
        assert metrics["jacobian_sensitivity"] > 0
    history = client.get_metric_history(run_id, "sensitivity_by_batch_size")
    assert sorted(m.step for m in history) == [8, 32, 300]
    assert _figures(client, run_id).keys() == {"figures/loss_sensitivity.png",
                                               "figures/accuracy_sensitivity.png"}
    table = _table(client, run_id, "sensitivity", tmp_path)
    assert sorted((int(r["batch_size"]), int(r["seed"])) for r in table) == \
        [(b, s) for b in (8, 32, 300) for s in (0, 1)]
    by_name = {r["variant"]: r for r in table}
    for name, child in children.items():
        assert float(by_name[name]["sensitivity"]) == pytest.approx(child.data.metrics["sensitivity"])
        metrics, batch = child.data.metrics, int(child.data.params["batch_size"])
        assert metrics["epochs_trained"] == metrics["steps_trained"] / -(-300 // batch)
        assert metrics["reached_target"] == float(child.data.tags["status"] == "reached")
    parent = client.get_run(run_id).data.metrics
    for batch in (8, 32, 300):
        seeds = [children[f"bs{batch} seed{s}"].data.metrics["sensitivity"] for s in (0, 1)]
        assert parent[f"mean/bs{batch}/sensitivity"] == pytest.approx(np.mean(seeds))
        assert parent[f"std/bs{batch}/sensitivity"] == pytest.approx(np.std(seeds, ddof=1))
        assert parent[f"n/bs{batch}/epochs_trained"] == 2
    found = findings_json(client, run_id, tmp_path)
    gap = found["sensitivity_gap"]
    models = [children[f"bs{b} seed{s}"].data.metrics for b in (8, 32, 300) for s in (0, 1)]
    assert sorted(gap["details"]["x"]) == sorted(m["sensitivity"] for m in models)
    assert sorted(gap["details"]["y"]) == pytest.approx(sorted(
        m["final_train_acc"] - m["final_test_acc"] for m in models))
    assert gap["value"] == pytest.approx(spearmanr(gap["details"]["x"], gap["details"]["y"]).statistic)
    assert parent["finding/sensitivity_gap/value"] == pytest.approx(gap["value"])
    assert found["batch_size_sensitivity"]["details"]["x"] == [8.0, 8.0, 32.0, 32.0, 300.0, 300.0]


SPECTRUM = {"trace_probes": 2, "density_probes": 1, "density_steps": 5}


@pytest.mark.parametrize("space", ["inputs", "weights"])
def test_sharpness_measures_per_batch_size(store: str, mnist_dir: Path, space: str,
                                           tmp_path: Path) -> None:
    run_id = experiments.run("sharpness", {**TINY, **SPECTRUM, "seeds": 1, "batch_sizes": [16, 300],
                                           "measure_subset": 100, "profile_space": space,
                                           "profile_steps": 2, "ascent_steps": 2})
    client = MlflowClient(store)
    for child in _children(client, run_id).values():
        metrics = child.data.metrics
        assert {"lambda_max", "lambda_min", "hessian_trace", "hessian_trace_stderr", "epsilon_sharpness",
                "profile_sharpness", "profile_sharpness_back"} <= metrics.keys()
        assert metrics["epsilon_sharpness"] > 0  # >= 0 by construction; ascent must find a rise
        assert metrics["lambda_min"] < 0 < metrics["lambda_max"]  # a trained ReLU net: indefinite
        assert metrics["lambda_max_residual"] <= 1e-5 * metrics["lambda_max"]  # eigen_tol's bound
        assert metrics["hessian_matvecs"] == metrics["lanczos_matvecs"] + 2 + 5  # + trace + density
        assert child.data.tags["lanczos_converged"] == "true"
        profile = client.get_metric_history(child.info.run_id, "profile_loss")
        assert sorted(m.step for m in profile) == [-250, -125, 0, 125, 250]  # step = 100·t
    assert client.get_run(run_id).data.tags["lanczos_not_converged"] == "none"
    for key in ("lambda_max", "lambda_min", "hessian_trace", "epsilon_sharpness"):
        history = client.get_metric_history(run_id, f"{key}_by_batch_size")
        assert sorted(m.step for m in history) == [16, 300]
    assert _figures(client, run_id).keys() == {"figures/profiles.png", "figures/hessian_density.png",
                                               "figures/sharpness_vs_batch_size.png"}
    table = _table(client, run_id, "sharpness", tmp_path)
    assert sorted(int(r["batch_size"]) for r in table) == [16, 300]


def _flat_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact Hessian [P, P] of the mean cross-entropy over (x, y) w.r.t. all of `model`'s
    parameters flattened in `named_parameters` order, float64 (`torch.func.hessian`)."""
    model = model.double()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [shape.numel() for shape in shapes]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: part.view(shape) for n, shape, part in zip(names, shapes, theta.split(sizes))}
        return F.cross_entropy(torch.func.functional_call(model, params, (x.double(),)), y)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.func.hessian(loss)(theta)


def test_sharpness_spectrum_equals_the_exact_hessian_of_the_saved_weights(
        store: str, mnist_dir: Path, tmp_path: Path) -> None:
    """Each child's final weights downloaded through MlflowClient, the net rebuilt with plain
    torch (architecture JSON + safetensors), its exact Hessian on the first `measure_subset`
    training examples diagonalized densely in float64: λ_max and λ_min to 1e-4 relative, the
    trace within 4 standard errors of Hutchinson's."""
    run_id = experiments.run("sharpness", {**TINY, **SPECTRUM, "trace_probes": 40, "hidden": [2],
                                           "seeds": 1, "batch_sizes": [16, 300], "measure_subset": 50,
                                           "profile_steps": 1, "ascent_steps": 1})
    client = MlflowClient(store)
    split = load_dataset("mnist", "cpu", train_subset=300, test_subset=200).train.head(50)
    for name, child in _children(client, run_id).items():
        local = Path(client.download_artifacts(child.info.run_id, "weights", str(tmp_path / name)))
        (weights,) = local.glob("*.safetensors")
        layers = json.loads(weights.with_suffix(".json").read_text())["architecture"]
        model = torch.nn.Sequential(*(getattr(torch.nn, d.pop("type"))(**d) for d in layers))
        model.load_state_dict(load_file(weights))
        hessian = _flat_hessian(model, split.x, split.y)
        exact = torch.linalg.eigvalsh(hessian)
        metrics = child.data.metrics
        assert metrics["lambda_max"] == pytest.approx(exact[-1].item(), rel=1e-4), name
        assert metrics["lambda_min"] == pytest.approx(exact[0].item(), rel=1e-4), name
        trace = torch.trace(hessian).item()
        assert abs(metrics["hessian_trace"] - trace) <= 4 * metrics["hessian_trace_stderr"], name
