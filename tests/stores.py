"""A fresh embedded store for a whole test module (the `store` fixture is one test's)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from service_lab import embedded_env


@contextmanager
def module_store(home: Path) -> Iterator[str]:
    """PHENOLAB_HOME and MLFLOW_TRACKING_URI set to a fresh SQLite store under `home` while the
    block runs; yields the URI."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in embedded_env(home).items():
            env.setenv(key, value)
        yield embedded_env(home)["MLFLOW_TRACKING_URI"]
