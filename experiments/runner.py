"""Runs one experiment, whoever asked: the CLI, a queue worker, or Python. One code path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from experiments import catalog
from experiments.core.config import ExperimentConfig, build_config
from experiments.core.context import Cancelled, RunContext
from experiments.tracking import Tracker


def resolve_device(name: str) -> str:
    """`auto` → cuda when available; asking for cuda without one is an error, not a fallback."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is visible")
    return name


def run_experiment(name: str, config: ExperimentConfig | Mapping[str, Any] | None = None, *,
                   preset: str | None = None, run_id: str | None = None,
                   ctx: RunContext | None = None, tracking_uri: str | None = None) -> str:
    """Validate the config, open (or resume) the job's MLflow run, run the experiment, and end
    the run FINISHED, KILLED (cancelled) or FAILED (error tag + traceback artifact, re-raised).
    Returns the parent run id."""
    entry = catalog.get(name)
    if not isinstance(config, ExperimentConfig):
        config = build_config(entry.config_cls, preset, dict(config or {}))
    ctx = ctx or RunContext()
    tracker = Tracker.open(name, config, run_id=run_id, uri=tracking_uri)
    try:
        ctx.device = resolve_device(config.device)
        tracker.start(ctx.device, config.seed)
        torch.manual_seed(config.seed)
        entry.run_function()(config, tracker, ctx)
    except Cancelled as stop:
        tracker.fail(stop, status="KILLED")
        raise
    except BaseException as error:
        tracker.fail(error)
        raise
    tracker.finish()
    return tracker.run_id
