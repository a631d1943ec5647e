"""Shared fixtures: a real MLflow store in a temp dir, and real MNIST when it is available."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PHENOLAB_TEST_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store (and mlruns/ home) for this test; returns its URI."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("PHENOLAB_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def mnist_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real MNIST (torchvision layout); the test is skipped when it is not on this machine."""
    raw = SHARED_DATA / "MNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {raw} (set PHENOLAB_TEST_DATA_DIR)")
    monkeypatch.setenv("PHENOLAB_DATA_DIR", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """The service tests' embedded lab: its API runs as a real process for the whole session
    (tests/service_lab.py); importing mlflow and migrating a store cost seconds per process."""
    from service_lab import running_lab

    yield from running_lab(tmp_path_factory)


@pytest.fixture(scope="module")
def working(lab):
    """The session's lab with a worker (one CPU slot) running, for one test module."""
    lab.start_worker()
    yield lab
    lab.stop(lab.worker)


@pytest.fixture
def own_redis(tmp_path: Path):
    """A Redis server of this test's own on a free port (tests/service_lab.py's OwnRedis)."""
    from service_lab import own_redis_server

    yield from own_redis_server(tmp_path)
