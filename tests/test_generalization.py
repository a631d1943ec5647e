"""HW1-3 experiments end to end on real MNIST (tiny sizes): what each logs to MLflow, read back,
and the properties their science rests on (shuffled labels, interpolation endpoints,
per-batch-size measures)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file

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


def test_random_labels_logs_epoch_curves_against_shuffled_labels(store: str, mnist_dir: Path) -> None:
    run_id = experiments.run("random-labels", {**TINY, "epochs": 2}, preset="quick")
    client = MlflowClient(store)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["labels_changed"] > 0.8
    (child,) = _children(client, run_id).values()
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1, 2]
    assert parent.data.metrics["final_test_acc"] < 0.3  # nothing to generalise
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
                                               "train_subset": None})
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


def test_param_count_logs_n_params_and_finals_per_model(store: str, mnist_dir: Path) -> None:
    widths = [1, 4, 16, 64]
    run_id = experiments.run("param-count", {"train_subset": 300, "test_subset": 200, "epochs": 1,
                                             "widths": widths})
    client = MlflowClient(store)
    children = _children(client, run_id)
    counts = sorted(int(c.data.params["n_params"]) for c in children.values())
    assert counts == [mlp_params(784, [w], 10) for w in widths]
    for child in children.values():
        assert {"final_train_loss", "final_test_loss", "final_train_acc", "final_test_acc"} \
            <= child.data.metrics.keys()
    history = client.get_metric_history(run_id, "test_acc_by_params")
    assert sorted(m.step for m in history) == counts
    assert _figures(client, run_id).keys() == {"figures/loss_vs_params.png",
                                               "figures/accuracy_vs_params.png"}


def test_alpha_grid_hits_the_endpoints_exactly() -> None:
    grid = alpha_grid(InterpolationConfig())
    assert len(grid) == 31 and grid[0] == -1.0 and grid[-1] == 2.0
    assert 0.0 in grid and 1.0 in grid
    assert alpha_grid(InterpolationConfig(alpha_step=0.3))[:2] == [-1.0, -0.7]
    with pytest.raises(ValidationError, match="alpha_min"):
        InterpolationConfig(alpha_min=2.0, alpha_max=1.0)


def test_interpolation_endpoints_reproduce_the_saved_models(store: str, mnist_dir: Path,
                                                            tmp_path: Path) -> None:
    config = {**TINY, "eval_subset": 300, "alpha_step": 0.5,
              "approaches": [{"batch_size": 16}, {"batch_size": 128, "lr": 1e-2}]}
    run_id = experiments.run("interpolation", config)
    client = MlflowClient(store)
    children = _children(client, run_id)
    assert {c.data.params["batch_size"] for c in children.values()} == {"16", "128"}
    saved = [load_file(client.download_artifacts(run_id, f"snapshots/{m}.safetensors", str(tmp_path)))
             for m in ("m1", "m2")]
    alphas = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
    line = measures.interpolate(*saved, alphas)
    assert all(torch.equal(line[k][2], saved[0][k]) and torch.equal(line[k][4], saved[1][k])
               for k in saved[0])
    test = load_dataset("mnist", "cpu", test_subset=200).test
    history = client.get_metric_history(run_id, "interp_test_loss")
    by_step = {m.step: m.value for m in history}
    assert sorted(by_step) == [-100, -50, 0, 50, 100, 150, 200]  # step = 100·α
    model = mlp(784, [16], 10)
    for step, weights in ((0, saved[0]), (100, saved[1])):
        model.load_state_dict(weights)
        with torch.no_grad():
            own = F.cross_entropy(model(test.x), test.y).item()
        assert by_step[step] == pytest.approx(own, rel=1e-5)
    assert _figures(client, run_id).keys() == {"figures/interpolation.png"}
    assert client.get_run(run_id).data.tags["interp_step"] == "round(100*alpha)"
    table = _table(client, run_id, "interpolation", tmp_path)
    assert [float(r["alpha"]) for r in table] == alphas.tolist()
    assert float(table[2]["test_loss"]) == pytest.approx(by_step[0])


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


@pytest.mark.parametrize("space", ["inputs", "weights"])
def test_sharpness_measures_per_batch_size(store: str, mnist_dir: Path, space: str,
                                           tmp_path: Path) -> None:
    run_id = experiments.run("sharpness", {**TINY, "batch_sizes": [16, 300], "measure_subset": 100,
                                           "profile_space": space, "profile_steps": 2,
                                           "power_iters": 3, "ascent_steps": 2})
    client = MlflowClient(store)
    for child in _children(client, run_id).values():
        metrics = child.data.metrics
        assert {"top_eigenvalue", "epsilon_sharpness", "profile_sharpness",
                "profile_sharpness_back"} <= metrics.keys()
        assert metrics["epsilon_sharpness"] > 0  # >= 0 by construction; ascent must find a rise
        profile = client.get_metric_history(child.info.run_id, "profile_loss")
        assert sorted(m.step for m in profile) == [-250, -125, 0, 125, 250]  # step = 100·t
    history = client.get_metric_history(run_id, "top_eigenvalue_by_batch_size")
    assert sorted(m.step for m in history) == [16, 300]
    assert _figures(client, run_id).keys() == {"figures/profiles.png",
                                               "figures/sharpness_vs_batch_size.png"}
    table = _table(client, run_id, "sharpness", tmp_path)
    assert sorted(int(r["batch_size"]) for r in table) == [16, 300]
    assert all(float(r["top_eigenvalue"]) > 0 for r in table)
