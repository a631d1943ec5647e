"""Load on the submit path: `phenolab serve` (API + worker + MLflow UI) on a fresh embedded lab
(SQLite store, SQLite queue) in a temp PHENOLAB_HOME on free loopback ports; 1,000
`POST /experiments/function-fit` from a local httpx client with some concurrency; prints
submissions/s and latency percentiles, then cancels what is still queued and stops the lab.

    .venv/bin/python bench/bench_submit.py [--jobs 1000] [--concurrency 16] [--api-only]

Every submission creates the job's MLflow run (create + params + SCHEDULED) and a queue
message, so the figure is bounded by the store's write rate (see DESIGN.md: ~40 runs/s on
SQLite from one client). The jobs are tiny function-fits, so the worker's runs compete with
the API for the store while the load runs, as in a real lab.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TINY = {"preset": "quick", "epochs": 20, "n_points": 32, "models": [[8]], "eval_every": 5}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_lab(home: Path, api_only: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (home / "mlruns").mkdir(parents=True)
    env = {**os.environ, "PHENOLAB_HOME": str(home),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlruns' / 'mlflow.db'}",
           "PHENOLAB_API_PORT": str(port), "PHENOLAB_UI_PORT": str(free_port()),
           "PHENOLAB_GPUS": os.environ.get("PHENOLAB_GPUS", "all")}
    env.pop("PHENOLAB_API_TOKEN", None)
    command = "api" if api_only else "serve"
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", command], env=env, cwd=home,
                            stdout=open(home / "lab.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen, need_worker: bool, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            health = httpx.get(f"{url}/healthz", timeout=5).json()
            if health.get("status") == "ok" and (not need_worker or health["workers"]["seen"]):
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the lab did not come up (exit code {proc.poll()})")


async def load(url: str, jobs: int, concurrency: int) -> tuple[list[float], dict[int, int], float]:
    """`jobs` submissions from `concurrency` clients; per-request seconds and status counts."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    todo = iter(range(jobs))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(http: httpx.AsyncClient) -> None:
        for index in todo:
            start = time.perf_counter()
            response = await http.post("/experiments/function-fit", json={**TINY, "seed": index})
            latencies.append(time.perf_counter() - start)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cancel_queued(url: str, limit_seconds: float = 300) -> int:
    """Cancel every SCHEDULED job (bounded): the lab is thrown away, but a clean stop is cheap."""
    cancelled, deadline = 0, time.monotonic() + limit_seconds
    with httpx.Client(base_url=url, timeout=60) as http:
        while time.monotonic() < deadline:
            page = http.get("/jobs", params={"status": "SCHEDULED", "limit": 1000}).json()["jobs"]
            if not page:
                break
            for job in page:
                cancelled += http.post(f"/jobs/{job['id']}/cancel").status_code == 202
    return cancelled


def stop(proc: subprocess.Popen) -> float:
    start = time.perf_counter()
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: serve stops its children
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--api-only", action="store_true", help="`phenolab api` alone, no worker/UI")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="phenolab-bench-") as tmp:
        home = Path(tmp)
        proc, url = start_lab(home, args.api_only)
        try:
            started = time.perf_counter()
            wait_ready(url, proc, need_worker=not args.api_only)
            print(f"lab ({'api' if args.api_only else 'serve'}) ready in "
                  f"{time.perf_counter() - started:.1f} s at {url}")
            latencies, statuses, elapsed = asyncio.run(load(url, args.jobs, args.concurrency))
            ok = statuses.get(202, 0)
            print(f"{args.jobs} submissions, concurrency {args.concurrency}: {elapsed:.1f} s, "
                  f"{ok / elapsed:.1f} submissions/s; statuses {dict(sorted(statuses.items()))}")
            print("latency ms: " + ", ".join(
                f"p{q} {1000 * percentile(latencies, q):.0f}" for q in (50, 90, 99))
                + f", max {1000 * max(latencies):.0f}")
            with httpx.Client(base_url=url, timeout=60) as http:
                health = http.get("/healthz").json()
                print(f"queue pending after the load: {health['queue']['pending']}")
            print(f"cancelled {cancel_queued(url)} queued jobs")
        finally:
            print(f"lab stopped in {stop(proc):.1f} s (exit code {proc.returncode})")
        if proc.returncode not in (0, -signal.SIGINT):
            print((home / "lab.log").read_text(errors="replace")[-3000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
