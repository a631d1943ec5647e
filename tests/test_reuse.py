"""Trained models reused by their training key: an unchanged config loads the finished models
(same numbers, a tag naming the source child), a changed field trains again, and reuse can be
turned off."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

import experiments
from experiments.core import reuse

TINY = {"epochs": 2, "train_subset": 300, "test_subset": 100, "hidden": [16], "measure_subset": 50,
        "batch_sizes": [32, 300], "seeds": 2, "target_loss": 0.5}


def _children(client: MlflowClient, run_id: str) -> dict[str, object]:
    parent = client.get_run(run_id)
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return {c.info.run_name: c for c in found}


def test_an_unchanged_training_is_loaded_and_a_changed_one_trains(store: str, mnist_dir: Path) -> None:
    client = MlflowClient(store)
    first = _children(client, experiments.run("sensitivity", TINY))
    again = _children(client, experiments.run("sensitivity", TINY))
    assert set(again) == set(first) == {"bs32 seed0", "bs32 seed1", "bs300 seed0", "bs300 seed1"}
    for name, child in again.items():
        source = first[name]
        assert child.data.tags[reuse.SOURCE_TAG] == source.info.run_id
        assert child.data.tags[reuse.KEY_TAG] == source.data.tags[reuse.KEY_TAG]
        for metric in ("final_test_loss", "final_train_acc", "steps_trained", "sensitivity"):
            assert child.data.metrics[metric] == source.data.metrics[metric], (name, metric)
        history = [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "test_loss")]
        assert history == [(m.step, m.value)
                           for m in client.get_metric_history(source.info.run_id, "test_loss")]
    # the sharpness experiment trains the same batch-size study: its models are loaded too
    sharp = _children(client, experiments.run("sharpness", TINY, preset="quick"))
    assert all(reuse.SOURCE_TAG in c.data.tags for c in sharp.values())
    changed = _children(client, experiments.run("sensitivity", {**TINY, "lr": 2e-3}))
    assert not any(reuse.SOURCE_TAG in c.data.tags for c in changed.values())
    assert changed["bs32 seed0"].data.metrics["final_test_loss"] != first["bs32 seed0"].data.metrics[
        "final_test_loss"]
    off = _children(client, experiments.run("sensitivity", {**TINY, "reuse": False}))
    assert not any(reuse.SOURCE_TAG in c.data.tags for c in off.values())
