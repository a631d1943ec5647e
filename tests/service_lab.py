"""Real lab processes for the service tests: the API under uvicorn and `phenolab worker`, each a
subprocess on a free port, configured through the environment like a deployment."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# Tiny function-fit jobs: one small model, a few epochs — the cost is process and MLflow
# overhead, not training. LONG never ends by itself (converge_tol=0; 100,000 epochs of a 4,353-parameter
# net on 4,096 points: tens of minutes even on a fast CPU), it is cancelled or killed.
TINY = {"preset": "quick", "epochs": 20, "n_points": 32, "models": [[8]], "eval_every": 5, "seeds": 1,
        "lrs": [1e-3]}  # one model: one child run
LONG = {**TINY, "epochs": 100_000, "converge_tol": 0.0, "n_points": 4096, "models": [[64, 64]]}
TOKEN = "s3cret-token"
FAST_LIVENESS = {"PHENOLAB_HEARTBEAT_SECONDS": "0.5", "PHENOLAB_STALE_SECONDS": "4",
                 "PHENOLAB_SWEEP_SECONDS": "1", "PHENOLAB_POLL_SECONDS": "0.2",
                 "PHENOLAB_GPUS": "none"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_env(home: Path) -> dict[str, str]:
    """What the `store` fixture sets, for a lab shared by a whole test module."""
    (home / "mlruns").mkdir(parents=True, exist_ok=True)
    return {"PHENOLAB_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"}


class Lab:
    def __init__(self, logs: Path, env: dict[str, str], token: str | None = None) -> None:
        self.logs = logs
        self.port = free_port()
        self.env = {**os.environ, **FAST_LIVENESS, **env, "PHENOLAB_API_PORT": str(self.port)}
        if token:
            self.env["PHENOLAB_API_TOKEN"] = token
        self.url = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.api: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.starts = 0

    def _spawn(self, command: str) -> subprocess.Popen:
        self.starts += 1
        log = open(self.logs / f"{command}-{self.starts}.log", "wb")  # noqa: SIM115
        return subprocess.Popen([sys.executable, "-m", "service.cli", command], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self) -> None:
        self.api = self._spawn("api")
        self.until(lambda: self._healthy(), 60, "the API to answer /healthz")

    def _healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def start_worker(self) -> None:
        self.worker = self._spawn("worker")
        self.until(lambda: self.http.get("/healthz").json()["workers"]["seen"] >= 1, 90,
                   "a worker slot to report in")

    @staticmethod
    def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
        """Signal the process group (the worker's slots too) and reap it."""
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        self.stop(self.worker)
        self.stop(self.api)
        self.http.close()

    def submit(self, name: str = "function-fit", config: dict[str, Any] | None = None) -> str:
        body = {**(TINY if config is None else config), "reuse": False}  # each submit is a new job
        response = self.http.post(f"/experiments/{name}", json=body)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def cancel_queued(self) -> None:
        """Cancel every job still queued, so that no worker ever runs the ones a test left."""
        for _ in range(20):  # pages of up to 1,000: bounded, should a cancel fail
            queued = self.http.get("/jobs", params={"status": "SCHEDULED", "limit": 1000})
            if not queued.json()["jobs"]:
                return
            for job in queued.json()["jobs"]:
                self.http.post(f"/jobs/{job['id']}/cancel")

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def reached() -> bool:
            found.update(self.job(job_id))
            return found["status"] in statuses

        self.until(reached, timeout, f"job {job_id} to be {'/'.join(statuses)}")
        return found

    def until(self, check: Callable[[], Any], timeout: float, what: str) -> None:
        until(check, timeout, what, self.tails)

    def output(self, command: str) -> str:
        """All that the `command` processes (api, worker and its slots) wrote so far."""
        return "\n".join(log.read_text(errors="replace")
                         for log in sorted(self.logs.glob(f"{command}-*.log")))

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                         for log in sorted(self.logs.glob("*.log")))


def until(check: Callable[[], Any], timeout: float, what: str, tails: Callable[[], str],
          proc: subprocess.Popen | None = None) -> None:
    """Poll `check` until it holds (a refused connection counts as not yet); give up at the
    timeout, or early when `proc` has exited, with the processes' log tails in the failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    exited = f" (exit code {proc.returncode})" if proc is not None and proc.poll() is not None \
        else ""
    raise AssertionError(f"gave up after {timeout} s{exited} waiting for {what}\n{tails()}")


def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """An embedded lab (SQLite store + SQLite queue in a tmp dir) with its API running."""
    home = tmp_path_factory.mktemp("lab")
    lab = Lab(home, embedded_env(home), token=TOKEN)
    lab.start_api()
    yield lab
    lab.close()


def has_torch(pid: int) -> bool:
    """Whether a live process has torch's shared libraries mapped (i.e. imported torch)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/" in maps


class OwnRedis:
    """A Redis server configured like the compose file's (password, append-only file) on a free
    port, restartable: what `redis` in docker-compose.yml is, without its image."""

    def __init__(self, binary: str, data: Path) -> None:
        self.binary, self.data, self.port = binary, data, free_port()
        self.url = f"redis://:s3cret@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass",
             "s3cret", "--appendonly", "yes", "--save", "", "--dir", str(self.data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client, deadline = redis.Redis.from_url(self.url), time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: Redis writes the append-only file out and exits
            self.proc.wait(30)


def own_redis_server(data: Path) -> Iterator[OwnRedis]:
    """A started OwnRedis keeping its files in `data`, stopped afterwards; skips the test on a
    machine without redis-server."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on this machine")
    server = OwnRedis(binary, data)
    server.start()
    yield server
    server.stop()
