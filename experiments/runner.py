"""Runs one experiment, or a suite of them, whoever asked: the CLI, a queue worker, or Python.
One code path."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from experiments import catalog
from experiments.core.config import ExperimentConfig, build_config
from experiments.core.context import Cancelled, Progress, RunContext
from experiments.suite import FAILED_TAG, Suite, SuiteConfig, runnable
from experiments.tracking import Tracker

log = logging.getLogger("phenolab.runner")
RunFunction = Callable[[Any, Tracker, RunContext], None]


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
    """Validate the config of the experiment or suite `name`, open (or resume) the job's MLflow
    run, run it, and end the run (see `run_in`). Returns the parent run id."""
    entry = runnable(name)
    if not isinstance(config, ExperimentConfig):
        config = build_config(entry.config_cls, preset, dict(config or {}))
    tracker = Tracker.open(name, config, run_id=run_id, uri=tracking_uri)
    run = run_suite if isinstance(entry, Suite) else entry.run_function()
    run_in(tracker, run, config, ctx or RunContext())
    return tracker.run_id


def run_in(tracker: Tracker, run: RunFunction, config: ExperimentConfig, ctx: RunContext) -> None:
    """`run(config, tracker, ctx)` in the open run of `tracker`, which then ends FINISHED, KILLED
    (cancelled) or FAILED (error tag + traceback artifact, re-raised)."""
    try:
        ctx.device = resolve_device(config.device)
        ctx.reuse = config.reuse
        tracker.start(ctx.device, config.seed)
        if config.seed is not None:  # None: a suite's, which leaves the seeds to its experiments
            torch.manual_seed(config.seed)
        run(config, tracker, ctx)
    except Cancelled as stop:
        tracker.fail(stop, status="KILLED")
        raise
    except BaseException as error:
        tracker.fail(error)
        raise
    tracker.finish()


@dataclass(frozen=True)
class SuiteProgress(Progress):
    """An experiment's progress inside a suite: which one (`experiment_index` of
    `experiment_count`), and `fraction` of the whole suite, each experiment weighing the same."""

    experiment: str = ""
    experiment_index: int = 0
    experiment_count: int = 1

    @property
    def fraction(self) -> float:
        return min(1.0, (self.experiment_index + super().fraction) / self.experiment_count)


def run_suite(config: SuiteConfig, tracker: Tracker, ctx: RunContext) -> None:
    """Each chosen experiment in turn as a nested run of the suite's run, exactly as it runs
    alone (its own config, seed and device). One that fails ends FAILED with its error and
    traceback and the next one runs; their names are tagged on the suite's run, which fails
    only when every experiment did. A cancel stops the suite where it is (KILLED)."""
    configs = config.configs()
    failed: list[str] = []
    for index, (name, member) in enumerate(configs.items()):
        def report(progress: Progress, name: str = name, index: int = index) -> None:
            ctx.on_progress(SuiteProgress(**{
                **asdict(progress), "variant": f"{index + 1}/{len(configs)} {name}: {progress.variant}",
                "experiment": name, "experiment_index": index, "experiment_count": len(configs)}))

        inner = RunContext(on_progress=report, cancelled=ctx.cancelled)
        inner.begin("starting")
        try:
            run_in(tracker.nested(name, member), catalog.get(name).run_function(), member, inner)
        except Cancelled:
            raise
        except Exception as error:  # recorded on the experiment's run; the suite goes on
            log.warning("%s failed: %s: %s; the suite goes on", name, type(error).__name__, error)
            failed.append(name)
            if torch.cuda.is_available():  # an out-of-memory one leaves its cache behind
                torch.cuda.empty_cache()
    if failed:
        tracker.tags({FAILED_TAG: ", ".join(failed)})
    if len(failed) == len(configs):
        raise RuntimeError(f"every experiment of the suite failed: {', '.join(failed)}")
