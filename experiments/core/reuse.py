"""Trained models reused by what determines their weights.

A model's training key is a SHA-256 over everything its final weights and logged history
depend on: the architecture and the initial weights (hence init scheme and seed), the training
data and every evaluated split (their contents, not their names: dataset, subsets, shuffled
labels …), the training spec (optimizer, rate, batch size, budget, loss, evaluation schedule),
what each hook does to that model (per-model rate, divergence threshold, convergence rule,
target loss, per-step records), the seed of its data order, the device type, and the code
version (git revision). A hook that cannot describe itself (an experiment's own callback that
watches or stops training) makes its models untrainable-by-key: they always train.

Every child that trains records its key (tag `phenolab.model_key`) and its training result
(`weights/<name>.result.json`: status, stop step, per-evaluation history, per-step series); a
later child with the same key, found FINISHED in any experiment of the store, loads those
weights and that result instead of training, and says so (tag `phenolab.reused_from`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from mlflow.entities import Run as MlflowRun
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from torch import nn

from experiments.core.data import Split
from experiments.core.models import architecture
from experiments.core.train import Hook, ModelResult, TrainSpec
from experiments.tracking import git_revision

KEY_TAG = "phenolab.model_key"
SOURCE_TAG = "phenolab.reused_from"


def fingerprint(split: Split) -> str:
    """SHA-256 of a split's inputs and targets (shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for t in (split.x, split.y):
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def data_fingerprints(data: Split, evals: Mapping[str, Split]) -> dict[str, str]:
    return {"__train__": fingerprint(data), **{name: fingerprint(s) for name, s in evals.items()}}


def training_key(model: nn.Module, seed: int, spec: TrainSpec, hook_keys: Sequence[Any],
                 data: Mapping[str, str]) -> str | None:
    """The key of training `model` (at its initial weights) under `spec` with hooks that
    described themselves as `hook_keys` (None: one could not, so no key)."""
    if any(k is None for k in hook_keys):
        return None
    weights = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    device = next(model.parameters()).device.type
    described = {"architecture": architecture(model), "init": weights.hexdigest(), "seed": seed,
                 "spec": asdict(spec), "hooks": list(hook_keys), "data": dict(data),
                 "device": device, "code": git_revision()}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def hook_keys(hooks: Sequence[Hook], row: int) -> list[Any]:
    return [hook.key(row) for hook in hooks]


def find(mlflow: MlflowClient, key: str) -> MlflowRun | None:
    """A FINISHED child trained under `key`, in any experiment of the store."""
    ids = [e.experiment_id for e in mlflow.search_experiments(max_results=1000)]
    found = mlflow.search_runs(ids, f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                               max_results=1) if ids else []
    return found[0] if found else None


def load(mlflow: MlflowClient, source: MlflowRun, model: nn.Module) -> ModelResult:
    """Load the source child's final weights into `model`; its training result."""
    with TemporaryDirectory() as tmp:
        folder = Path(mlflow.download_artifacts(source.info.run_id, "weights", tmp))
        (weights,) = folder.glob("*.safetensors")
        model.load_state_dict(load_file(weights))
        result = weights.with_name(weights.name.replace(".safetensors", ".result.json"))
        return ModelResult(**json.loads(result.read_text()))
