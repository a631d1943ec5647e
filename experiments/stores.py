"""Where the embedded stores live. Apart from `tracking.py` so that what needs only the paths
(settings, the `phenolab submit`/`list` client) does not import MLflow (~2.5 s a process)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Where the embedded stores live: $PHENOLAB_HOME/mlruns, default ./mlruns."""
    return Path(os.environ.get("PHENOLAB_HOME", ".")).resolve() / "mlruns"


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the embedded SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"
