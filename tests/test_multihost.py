"""Workers on separate hosts: a lab host (Redis, an SQLite-backed `mlflow server`, the API) and
two worker hosts, each a network namespace that reaches the lab host only over its own veth
link (`tests/netns.py`). A batch of jobs runs on both; one worker host then fails mid-job —
its processes SIGKILLed (case A), or its link cut past the stale window and restored (case B,
a partition). Every job must end FINISHED exactly once (or FAILED with a reason after its
attempts), no job may run on two hosts at once, none may be lost. How long recovery took is
printed (run with -s) and recorded as the test's user properties. Skipped with the reason
where namespaces cannot be made (not root, no iproute2) or there is no redis-server."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from netns import HUB, Hosts
from service_lab import FAST_LIVENESS, TINY, until

ROOT = Path(__file__).resolve().parents[1]
REDIS_PORT, MLFLOW_PORT, API_PORT = 6379, 5000, 8000  # inside the lab host: no clash possible
WORKERS = ("w1", "w2")
VICTIM, SURVIVOR = WORKERS
# FAST_LIVENESS with a little more room: two cores run the lab host and both worker hosts
LIVENESS = {**FAST_LIVENESS, "PHENOLAB_STALE_SECONDS": "6"}
STALE = float(LIVENESS["PHENOLAB_STALE_SECONDS"])
# The store's client retries for minutes by default; a host whose link is back should be heard
# from in seconds.
MLFLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
JOB = {**TINY, "epochs": 6000, "eval_every": 500, "reuse": False}  # ~5-10 s: long enough to cut
BATCH = 4
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
STARTED = re.compile(STAMP + r" phenolab\.worker job (\w{32}) \([^,]+, attempt (\d+)\) started")
ENDED = re.compile(STAMP + r" phenolab\.worker job (\w{32}) ended (\w+)")
ABANDONED = re.compile(STAMP + r" phenolab\.worker worker \S+ abandons job (\w{32}) attempt (\d+)")


def plain_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without proxies (all traffic stays on the namespaces'
    addresses), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return {**env, **extra}


@dataclass
class LabHost:
    hosts: Hosts
    logs: Path
    env: dict[str, str]
    http: httpx.Client
    mlflow_url: str
    workers: dict[str, Any] = field(default_factory=dict)

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                         for log in sorted(self.logs.glob("*.log")))

    def until(self, check: Callable[[], Any], timeout: float, what: str) -> None:
        until(check, timeout, what, self.tails)

    def start_workers(self, case: str) -> None:
        """`phenolab worker` (one CPU slot) on each worker host, pointed at the lab host's
        address only; waits until both hosts' slots report in."""
        for host in WORKERS:
            home = self.logs / f"home-{host}-{case}"
            home.mkdir()
            env = {**self.env, "PHENOLAB_HOME": str(home), **MLFLOW_RETRIES}
            self.hosts.popen(host, [sys.executable, "-m", "service.cli", "worker"],
                             self.log(host, case), env, cwd=ROOT)
        self.until(lambda: set(WORKERS) <= {self.host_of(s["id"]) for s in self.slots()}, 90,
                   "a slot of each worker host to report in")

    def log(self, host: str, case: str) -> Path:
        return self.logs / f"worker-{host}-{case}.log"

    def slots(self) -> list[dict[str, Any]]:
        return self.http.get("/healthz").json().get("workers", {}).get("slots", [])

    def host_of(self, worker: str | None) -> str | None:
        """The test host a worker id names (its hostname is the namespace's name)."""
        if not worker:
            return None
        return worker.split("/")[0].removeprefix(f"{self.hosts.prefix}-")

    def submit(self) -> str:
        response = self.http.post("/experiments/function-fit", json=JOB)
        assert response.status_code == 202 and response.json()["queued"], response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def running_on(self, job_ids: list[str], host: str) -> str | None:
        """A job of `job_ids` that `host` runs and has reported progress on (mid-job)."""
        for job_id in job_ids:
            job = self.job(job_id)
            if job["status"] == "RUNNING" and self.host_of(job["worker"]) == host \
                    and job["progress"]:
                return job_id
        return None

    def mid_job(self, job_ids: list[str], host: str) -> str:
        """Wait for a job of `job_ids` to be mid-job on `host`; its id."""
        found: list[str] = []

        def check() -> bool:
            if job_id := self.running_on(job_ids, host):
                found.append(job_id)
            return bool(found)

        self.until(check, 60, f"a job RUNNING on {host}, mid-job")
        return found[0]

    def stop_workers(self) -> None:
        for host in WORKERS:
            self.hosts.restore(host)
            self.hosts.kill(host)


@pytest.fixture(scope="module")
def lab_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHost]:
    """The hosts, and on the lab host Redis, `mlflow server` (SQLite backend, served
    artifacts) and the API, each listening on the lab host's address alone."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("no redis-server binary on this machine")
    logs = tmp_path_factory.mktemp("multihost")
    with Hosts.create(WORKERS) as hosts:
        addr = hosts.addresses[HUB]
        mlflow_url = f"http://{addr}:{MLFLOW_PORT}"
        env = plain_env({**LIVENESS, "MLFLOW_TRACKING_URI": mlflow_url,
                         "PHENOLAB_QUEUE_URL": f"redis://:s3cret@{addr}:{REDIS_PORT}/0",
                         "PHENOLAB_UI_URL": mlflow_url, "PHENOLAB_JOBS_PER_GPU": "1"})
        hosts.popen(HUB, [redis_server, "--bind", addr, "--port", str(REDIS_PORT),
                          "--requirepass", "s3cret", "--save", "", "--appendonly", "no",
                          "--dir", str(logs)], logs / "redis.log", env)
        hosts.popen(HUB, [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                          f"sqlite:///{logs / 'mlflow.db'}", "--serve-artifacts",
                          "--artifacts-destination", str(logs / "artifacts"), "--host", addr,
                          "--port", str(MLFLOW_PORT), "--workers", "1",
                          "--allowed-hosts", f"{addr}:{MLFLOW_PORT}"],
                    logs / "mlflow-server.log", {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                    cwd=logs)
        http = httpx.Client(base_url=f"http://{addr}:{API_PORT}", timeout=30, trust_env=False)
        lab = LabHost(hosts, logs, env, http, mlflow_url)
        lab.until(lambda: httpx.get(f"{mlflow_url}/health", timeout=2, trust_env=False)
                  .status_code == 200, 120, "mlflow server to answer /health")
        hosts.popen(HUB, [sys.executable, "-m", "service.cli", "api"], logs / "api.log",
                    {**env, "PHENOLAB_HOME": str(logs / "home-api"), "PHENOLAB_API_HOST": addr,
                     "PHENOLAB_API_PORT": str(API_PORT)}, cwd=ROOT)
        lab.until(lambda: http.get("/healthz").status_code == 200, 60,
                  "the API to answer /healthz with the queue and the store up")
        yield lab
        http.close()


@dataclass
class Recovery:
    """When the failed host's job was seen again: re-queued, RUNNING on the other host, done."""

    fault: float
    requeued: float | None = None
    running_elsewhere: float | None = None
    finished: float | None = None

    def seconds(self) -> dict[str, float | None]:
        return {name: None if at is None else round(at - self.fault, 1)
                for name, at in (("requeued", self.requeued),
                                 ("running_on_other_host", self.running_elsewhere),
                                 ("finished", self.finished))}


def follow(lab: LabHost, job_id: str, fault: float, until_status: str, timeout: float
           ) -> Recovery:
    """Poll the failed host's job from `fault` on until it is `until_status` on the other host
    (or FINISHED), noting when each step of its recovery was first seen."""
    seen = Recovery(fault)

    def step() -> bool:
        job, now = lab.job(job_id), time.time()
        if seen.requeued is None and job["attempt"] > 1:
            seen.requeued = now
        other = lab.host_of(job["worker"]) == SURVIVOR
        if seen.running_elsewhere is None and other and job["status"] in ("RUNNING", "FINISHED"):
            seen.running_elsewhere = now
        if job["status"] == "FINISHED":
            seen.finished = now
            return True
        assert job["status"] in ("SCHEDULED", "RUNNING"), job
        return job["status"] == until_status and other

    lab.until(step, timeout, f"job {job_id} to be {until_status} on {SURVIVOR}")
    return seen


def when(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def runs_per_host(lab: LabHost, case: str, killed_at: float | None = None
                  ) -> dict[str, list[tuple[str, int, float, float, str]]]:
    """From each worker host's log: (job, attempt, start, end, how it ended) of every attempt
    it started. An attempt with no end ran until its host was killed (`killed_at`)."""
    out: dict[str, list[tuple[str, int, float, float, str]]] = {}
    for host in WORKERS:
        text = lab.log(host, case).read_text(errors="replace")
        started = [(m[2], int(m[3]), when(m[1])) for m in STARTED.finditer(text)]
        ends = [(m[2], when(m[1]), m[3]) for m in ENDED.finditer(text)]
        ends += [(m[2], when(m[1]), "ABANDONED") for m in ABANDONED.finditer(text)]
        runs = []
        for job_id, attempt, start in started:
            after = sorted((at, how) for j, at, how in ends if j == job_id and at >= start)
            end, how = after[0] if after else (killed_at or time.time(), "KILLED -9")
            runs.append((job_id, attempt, start, end, how))
        out[host] = runs
    return out


def check_batch(lab: LabHost, case: str, job_ids: list[str], killed_at: float | None = None
                ) -> dict[str, list[tuple[str, int, float, float, str]]]:
    """Every job ends FINISHED exactly once (or FAILED with a reason after its attempts), never
    on two hosts at once, none lost; the queue drains."""
    for job_id in job_ids:
        lab.until(lambda job_id=job_id: lab.job(job_id)["status"] in ("FINISHED", "FAILED",
                                                                       "KILLED"),
                  90, f"job {job_id} to end")
    for job_id in job_ids:  # each slot logs how its job ended just after it wrote it
        if (status := lab.job(job_id)["status"]) != "FINISHED":
            continue
        lab.until(lambda job_id=job_id, status=status: any(
            (m[2], m[3]) == (job_id, status) for host in WORKERS
            for m in ENDED.finditer(lab.log(host, case).read_text(errors="replace"))),
            30, f"a worker log to say job {job_id} ended {status}")
    runs = runs_per_host(lab, case, killed_at)
    for job_id in job_ids:
        job = lab.job(job_id)
        if job["status"] == "FAILED":
            assert "gave up after" in (job["error"] or ""), job
            continue
        assert job["status"] == "FINISHED", job
        assert [c["status"] for c in job["children"]] == ["FINISHED"], job["children"]
        finished = [(host, r) for host, rs in runs.items() for r in rs
                    if r[0] == job_id and r[4] == "FINISHED"]
        assert len(finished) == 1, (job_id, finished)
        [(host, (_, attempt, *_))] = finished
        assert lab.host_of(job["worker"]) == host and job["attempt"] == attempt, (job, finished)
        spans = [(host, r[2], r[3]) for host, rs in runs.items() for r in rs if r[0] == job_id]
        for n, (host_a, start_a, end_a) in enumerate(spans):
            for host_b, start_b, end_b in spans[n + 1:]:
                overlap = host_a != host_b and start_a < end_b and start_b < end_a
                assert not overlap, f"job {job_id} ran on {host_a} and {host_b} at once: {spans}"
    lab.until(lambda: lab.http.get("/healthz").json()["queue"]["pending"] == 0, 30,
              "the queue to drain")
    return runs


def report(request: pytest.FixtureRequest, case: str, recovery: Recovery, **extra: Any) -> None:
    seconds = {**recovery.seconds(), **extra}
    for name, value in seconds.items():
        request.node.user_properties.append((f"recovery_{name}_s", value))
    print(f"\nmultihost {case}: recovery after the fault (s): {seconds}")


@pytest.fixture
def cluster(lab_host: LabHost) -> Iterator[LabHost]:
    """The lab host, whose worker hosts' processes are gone (links up) after the test."""
    yield lab_host
    lab_host.stop_workers()


def batch_with_victim(lab: LabHost, case: str) -> tuple[list[str], str]:
    """Workers on both hosts, a batch submitted; the batch and a job mid-way on VICTIM."""
    lab.start_workers(case)
    job_ids = [lab.submit() for _ in range(BATCH)]
    return job_ids, lab.mid_job(job_ids, VICTIM)


@pytest.mark.timeout(120, func_only=True)
def test_a_worker_host_killed_mid_job(cluster: LabHost, request: pytest.FixtureRequest) -> None:
    """Case A: SIGKILL every process of worker host 1 (supervisor and slot) while it runs a
    job: the sweep re-queues it after the stale window, host 2 runs it to FINISHED."""
    lab = cluster
    job_ids, victim = batch_with_victim(lab, "A")
    fault = time.time()
    assert lab.hosts.kill(VICTIM)
    recovery = follow(lab, victim, fault, "FINISHED", 80)
    runs = check_batch(lab, "A", job_ids, killed_at=fault)
    job = lab.job(victim)
    assert job["attempt"] == 2 and lab.host_of(job["worker"]) == SURVIVOR, job
    assert "no heartbeat for" in job["requeued"], job
    assert [r[4] for r in runs[VICTIM] if r[0] == victim] == ["KILLED -9"], runs
    assert recovery.requeued is not None and recovery.requeued - fault >= STALE - 1
    report(request, "A (host killed)", recovery)


@pytest.mark.timeout(120, func_only=True)
def test_a_worker_host_partitioned_mid_job(cluster: LabHost, request: pytest.FixtureRequest
                                           ) -> None:
    """Case B: cut worker host 1's link while it runs a job, keep it cut until host 2 has
    taken the re-queued job, restore it: host 1's slot gave the job up before the sweep
    re-queued it (it could not be heard), writes nothing into it once the link is back, and
    host 1 then rejoins and takes jobs again."""
    lab = cluster
    job_ids, victim = batch_with_victim(lab, "B")
    fault = time.time()
    lab.hosts.cut(VICTIM)
    recovery = follow(lab, victim, fault, "RUNNING", 60)
    restored = time.time()
    lab.hosts.restore(VICTIM)
    text = lab.log(VICTIM, "B").read_text(errors="replace")
    [abandoned] = [m for m in ABANDONED.finditer(text) if m[2] == victim]
    recovery.finished = follow(lab, victim, fault, "FINISHED", 60).finished
    done = lab.job(victim)
    runs = check_batch(lab, "B", job_ids)
    job = lab.job(victim)
    assert job["status"] == "FINISHED" and job["attempt"] == 2, job
    assert lab.host_of(job["worker"]) == SURVIVOR, job  # not overwritten after the heal
    assert done["worker"] == job["worker"]
    assert when(abandoned[1]) < recovery.requeued, (abandoned[0], recovery)
    assert [r[4] for r in runs[VICTIM] if r[0] == victim] == ["ABANDONED"], runs
    lab.until(lambda: any(lab.host_of(s["id"]) == VICTIM for s in lab.slots()), 60,
              f"{VICTIM} to report in again after its link is back")
    rejoined = time.time()
    report(request, "B (partition)", recovery, link_restored=round(restored - fault, 1),
           rejoined=round(rejoined - fault, 1))
