"""The one MLflow layer: a parent run per job, a child run per variant, batched metrics,
figures, weight snapshots and environment tags. Everything goes through `MlflowClient` so the
same code works on the embedded SQLite store and on a tracking server."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import sqlite3
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from sqlalchemy import event
from sqlalchemy.engine import Engine

from experiments.core.config import ExperimentConfig, flatten
from experiments.stores import home, tracking_uri

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
FLUSH_SECONDS = 2.0
EXPERIMENT_TAG = "phenolab.experiment"  # on every run: the catalog name of its experiment
VARIANT_TAG = "phenolab.variant"  # on a child: the variant it trained
ERROR_TAG = "phenolab.error"  # on a failed or cancelled parent: the error message


def artifact_root(uri: str) -> str | None:
    """Artifacts of the embedded store go under mlruns/artifacts; a server decides its own."""
    if uri.startswith("sqlite:"):
        return (home() / "artifacts").as_uri()
    return None


@event.listens_for(Engine, "connect")
def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """The embedded SQLite store runs in WAL mode with synchronous=NORMAL: several processes
    share the file (API, worker slots, MLflow UI), WAL lets readers go on while one writes, and
    a commit costs no fsync — a job submission is three MLflow commits, ~2x faster this way.
    A killed process loses nothing; only an OS crash can lose the last commits. (WAL needs a
    local disk, not NFS.)"""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def client(uri: str | None = None) -> MlflowClient:
    return MlflowClient(tracking_uri=uri or tracking_uri())


def experiment_id(mlflow: MlflowClient, name: str) -> str:
    """The MLflow experiment named after the phenolab experiment, created on first use."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = artifact_root(mlflow.tracking_uri)
    location = f"{root}/{name}" if root else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def create_parent_run(mlflow: MlflowClient, name: str, config: ExperimentConfig,
                      tags: Mapping[str, str] | None = None, in_experiment: str | None = None) -> str:
    """Create the parent run of one experiment (MLflow's status RUNNING), its config as params,
    in the MLflow experiment named after it (or `in_experiment`, a suite's). Whoever runs
    experiments as jobs adds its own tags (and status) through `tags`."""
    run = mlflow.create_run(
        in_experiment or experiment_id(mlflow, name),
        run_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={EXPERIMENT_TAG: name, **(tags or {})},
    )
    log_params(mlflow, run.info.run_id, flatten(config))
    return run.info.run_id


def log_params(mlflow: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(key, _param_value(value)) for key, value in params.items()]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        mlflow.log_batch(run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])


def _param_value(value: Any) -> str:
    return "None" if value is None else str(value)


def git_revision() -> str:
    if revision := os.environ.get("PHENOLAB_GIT_REVISION"):
        return revision
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


class Run:
    """One MLflow run (the parent, or a variant's child) with buffered metric logging."""

    def __init__(self, mlflow: MlflowClient, run_id: str) -> None:
        self.mlflow = mlflow
        self.run_id = run_id
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self.ended = False

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue metrics at `step`; written in batches (one call per ~2 s or 1000 values)."""
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(key, float(value), now, int(step))
                            for key, value in metrics.items())
        if (len(self._buffer) >= MAX_METRICS_PER_BATCH
                or time.monotonic() - self._last_flush > FLUSH_SECONDS):
            self.flush()

    def log_series(self, key: str, values: Iterable[float], steps: Iterable[int]) -> None:
        """A whole per-step series at once (e.g. the gradient norm of every iteration)."""
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(key, float(v), now, int(s)) for v, s in zip(values, steps))
        self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = (self._buffer[:MAX_METRICS_PER_BATCH],
                                   self._buffer[MAX_METRICS_PER_BATCH:])
            self.mlflow.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def summary(self, metrics: Mapping[str, float]) -> None:
        """Final metrics of this run (step 0), what the compare view plots across runs."""
        self.log(metrics, step=0)
        self.flush()

    def params(self, params: Mapping[str, Any]) -> None:
        log_params(self.mlflow, self.run_id, params)

    def tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def figure(self, fig: Any, name: str) -> None:
        """A matplotlib figure as figures/<name>.png; the figure is closed afterwards."""
        import matplotlib.pyplot as plt

        self.mlflow.log_figure(self.run_id, fig, f"figures/{name}.png")
        plt.close(fig)

    def table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows as `tables/<name>.csv` (columns from the first row): a per-item record that
        would otherwise take one child run per item."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
        self.artifacts({f"{name}.csv": out.getvalue()}, "tables")

    def artifacts(self, files: Mapping[str, bytes | str], artifact_path: str | None = None) -> None:
        """Write named files into a temp dir and upload them in one call."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
            self.mlflow.log_artifacts(self.run_id, tmp, artifact_path)

    def snapshots(self, state_dicts: Mapping[str, Mapping[str, Any]],
                  artifact_path: str = "snapshots") -> None:
        """Weights as safetensors files (`<name>.safetensors`), loadable without this project."""
        from safetensors.torch import save

        self.artifacts({f"{name}.safetensors": save({k: v.detach().contiguous().cpu()
                                                      for k, v in sd.items()})
                        for name, sd in state_dicts.items()}, artifact_path)

    def weights(self, name: str, state_dict: Mapping[str, Any], architecture: Any,
                result: Mapping[str, Any]) -> None:
        """A model's weights as `weights/<name>.safetensors` with its architecture beside them
        (`weights/<name>.json`, see `models.architecture`) and how its training went
        (`weights/<name>.result.json`: status, stop step, history), in one upload."""
        from safetensors.torch import save

        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self.artifacts({f"{stem}.safetensors": save(tensors),
                        f"{stem}.json": json.dumps({"architecture": architecture}, indent=1),
                        f"{stem}.result.json": json.dumps(result)}, "weights")

    def end(self, status: str = "FINISHED") -> None:
        if self.ended:
            return
        self.flush()
        self.mlflow.set_terminated(self.run_id, status)
        self.ended = True


class Tracker(Run):
    """The parent run of a job, which creates the children of its variants."""

    def __init__(self, mlflow: MlflowClient, run_id: str, experiment: str) -> None:
        super().__init__(mlflow, run_id)
        self.experiment = experiment
        self.experiment_id = mlflow.get_run(run_id).info.experiment_id
        self.children: list[Run] = []

    @classmethod
    def open(cls, name: str, config: ExperimentConfig, run_id: str | None = None,
             uri: str | None = None) -> Tracker:
        """Resume the run `run_id` (a job's, created by the service), or create one."""
        mlflow = client(uri)
        if run_id is None:
            run_id = create_parent_run(mlflow, name, config)
        return cls(mlflow, run_id, name)

    def start(self, device: str, seed: int) -> None:
        """The environment the run trains in, as tags."""
        import torch

        self.tags({"torch_version": torch.__version__, "device": device, "seed": seed,
                   "git_revision": git_revision(), "python_version": platform.python_version(),
                   "host": platform.node()})

    def nested(self, name: str, config: ExperimentConfig) -> Tracker:
        """The parent run of experiment `name` run inside this one (a suite's): a child of this
        run in its MLflow experiment, so the variants of `name` nest one level further down."""
        run_id = create_parent_run(self.mlflow, name, config, {MLFLOW_PARENT_RUN_ID: self.run_id},
                                   in_experiment=self.experiment_id)
        return Tracker(self.mlflow, run_id, name)

    def child(self, name: str, params: Mapping[str, Any]) -> Run:
        """A child run for one variant, carrying the variant's own settings as params."""
        run = self.mlflow.create_run(
            self.experiment_id, run_name=name,
            tags={MLFLOW_PARENT_RUN_ID: self.run_id, MLFLOW_RUN_NAME: name,
                  EXPERIMENT_TAG: self.experiment, VARIANT_TAG: name})
        child = Run(self.mlflow, run.info.run_id)
        child.params(params)
        self.children.append(child)
        return child

    def fail(self, error: BaseException, status: str = "FAILED") -> None:
        """End the job with the error message in a tag and the traceback as an artifact."""
        message = f"{type(error).__name__}: {error}"
        for child in self.children:
            child.end(status)
        self.tags({ERROR_TAG: message[:5000]})
        text = "".join(traceback.format_exception(error))
        self.artifacts({"traceback.txt": text}, "errors")
        self.end(status)

    def finish(self, status: str = "FINISHED") -> None:
        for child in self.children:
            child.end(status)
        self.end(status)
