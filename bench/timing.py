"""One experiment run timed in a throw-away MLflow store: shared by the bench scripts."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any
from unittest import mock

from mlflow.tracking import MlflowClient

import experiments


def timed(name: str, config: dict[str, Any],
          figures: str | None = None) -> tuple[float, float, dict[str, float]]:
    """Run one experiment in a fresh store: (wall s, CPU s of this process, parent metrics);
    its figures are copied to `figures`/<name>/ when given. The environment is restored after."""
    with tempfile.TemporaryDirectory() as home:
        os.makedirs(f"{home}/mlruns")
        uri = f"sqlite:///{home}/mlruns/mlflow.db"
        with mock.patch.dict(os.environ, {"PHENOLAB_HOME": home, "MLFLOW_TRACKING_URI": uri}):
            wall, cpu = time.perf_counter(), time.process_time()
            run_id = experiments.run(name, config)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        client = MlflowClient(uri)
        if figures:
            os.makedirs(f"{figures}/{name}", exist_ok=True)
            client.download_artifacts(run_id, "figures", f"{figures}/{name}")
        return wall, cpu, client.get_run(run_id).data.metrics
