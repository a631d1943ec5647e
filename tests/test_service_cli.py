"""`phenolab serve` and `phenolab submit` as a person uses them: serve starts the API, a worker
and the MLflow UI on the embedded stores; submit --wait follows a job and exits by its final
status; Ctrl-C on serve stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_lab import FAST_LIVENESS, LONG, TINY, embedded_env, free_port, until

SUBMIT_TINY = ["function-fit", "--preset", "quick", *(
    arg for key, value in TINY.items() if key != "preset"
    for arg in ("--set", f"{key}={value}".replace(" ", "")))]


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies excluded), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


class Served:
    def __init__(self, home: Path) -> None:
        self.api_port, self.ui_port = free_port(), free_port()
        self.env = {**os.environ, **FAST_LIVENESS, **embedded_env(home),
                    "PHENOLAB_API_PORT": str(self.api_port), "PHENOLAB_UI_PORT": str(self.ui_port)}
        self.env.pop("PHENOLAB_API_TOKEN", None)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.ui = f"http://127.0.0.1:{self.ui_port}"
        self.log = home / "serve.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"],
                                         env=self.env, cwd=home, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.api, timeout=30)

    def phenolab(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "service.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def until(self, check: Callable[[], Any], timeout: float, what: str) -> None:
        until(check, timeout, what, lambda: self.log.read_text(errors="replace")[-4000:],
              self.proc)

    def close(self) -> None:
        self.http.close()
        if group_members(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    lab = Served(tmp_path_factory.mktemp("serve"))
    try:
        lab.until(lambda: lab.http.get("/healthz").json()["workers"]["seen"] >= 1, 120,
                  "the API to see a worker slot")
        lab.until(lambda: httpx.get(f"{lab.ui}/health", timeout=5).status_code == 200, 60,
                  "the MLflow UI")
        yield lab
    finally:
        lab.close()


def test_serve_prints_the_three_urls(served: Served) -> None:
    text = served.log.read_text()
    assert f"API       {served.api}" in text and f"{served.api}/docs" in text
    assert f"MLflow UI {served.ui}" in text and "sqlite:///" in text


def test_submit_wait_exits_by_the_final_status(served: Served) -> None:
    done = served.phenolab("submit", *SUBMIT_TINY, "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("FINISHED") and f"{served.ui}/#/experiments/" in done.stdout

    failed = served.phenolab("submit", *SUBMIT_TINY, "--set", "device=cuda", "--wait")
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.strip().endswith("FAILED")
    assert "error: RuntimeError: device 'cuda' was requested" in failed.stderr

    invalid = served.phenolab("submit", "function-fit", "--set", "epochs=-1")
    assert invalid.returncode == 2
    assert "422: invalid config: epochs: Input should be greater than or equal" in invalid.stderr
    unknown = served.phenolab("submit", "nope")
    assert unknown.returncode == 2 and "404: unknown experiment 'nope'" in unknown.stderr

    sets = [arg for key, value in LONG.items() if key != "preset"
            for arg in ("--set", f"{key}={value}".replace(" ", ""))]
    with subprocess.Popen([sys.executable, "-m", "service.cli", "submit", "function-fit", *sets,
                           "--wait"], env=served.env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as waiting:
        def running() -> list:
            return served.http.get("/jobs", params={"status": "RUNNING"}).json()["jobs"]

        served.until(running, 60, "the long job to run")
        [job] = running()
        assert served.http.post(f"/jobs/{job['id']}/cancel").status_code == 202
        out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 3, err
    assert out.strip().endswith(f"job {job['id']} KILLED")

    # LONG's tiny fit plateaus and would converge in seconds: no convergence stop this time
    gave_up = served.phenolab("submit", "function-fit", *sets, "--set", "converge_patience=100000",
                              "--wait", "--timeout", "2")
    assert gave_up.returncode == 4, gave_up.stderr
    assert gave_up.stdout.strip().endswith("WAITING") and "is a worker running?" in gave_up.stderr
    long_id = gave_up.stdout.split()[1]
    assert served.http.post(f"/jobs/{long_id}/cancel").status_code == 202  # free the slot


def test_ctrl_c_stops_every_process_serve_started(served: Served) -> None:
    members = group_members(served.proc.pid)
    assert len(members) >= 5  # serve, API, worker supervisor + slot, MLflow UI (+ its server)
    os.kill(served.proc.pid, signal.SIGINT)
    assert served.proc.wait(60) == 0, served.log.read_text()[-4000:]
    until(lambda: not group_members(served.proc.pid), 20, "every child to exit", served.log)
    for url in (served.api, served.ui):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)
