"""A job runs on one slot at a time, even when a slot is cut off and comes back: the sweep leaves
alone a job whose slot still reports to the queue; a slot whose job was re-queued and taken by
another exits at its next beat without writing to it; a slot heard by neither the store nor
the queue exits before the sweep could re-queue its job. (tests/test_multihost.py does the same
with real hosts and a real partition.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from service_lab import TINY, free_port

from experiments.tracking import client
from service import jobs
from service.queue import JobQueue
from service.settings import Settings
from service.worker import ABANDONED_EXIT

ROOT = Path(__file__).resolve().parents[1]
A, B = "hostA/slot0/pid1", "hostB/slot0/pid2"
BEAT = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from service.settings import Settings
from service.worker import Heartbeat, Slot
run_id, worker, queue_url, attempt, how = sys.argv[1:]
slot = Slot(worker, Settings(queue_url=queue_url, heartbeat_seconds=0.2, stale_seconds=1))
beat = Heartbeat(run_id, slot, int(attempt))
if how == "beat":
    beat.beat()
else:
    beat.start()
    time.sleep(20)
print("the slot kept the job")
"""


def slot_process(run_id: str, worker: str, queue_url: str, attempt: int, how: str,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A slot's heartbeat of `run_id` as `worker`, in a process of its own (it exits)."""
    return subprocess.run([sys.executable, "-c", BEAT, run_id, worker, queue_url, str(attempt), how],
                          cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


def running_on(mlflow, queue: JobQueue, job_id: str, attempt: int, worker: str) -> None:
    """What a slot does with a message: take, claim, start."""
    assert queue.take().args == (job_id, attempt)
    assert queue.claim(job_id, attempt, worker).owner == worker
    jobs.start(mlflow, job_id, worker)


def test_sweep_leaves_a_job_whose_slot_reports_in(store: str, tmp_path: Path) -> None:
    s = Settings(queue_url=f"sqlite:///{tmp_path / 'queue.db'}", stale_seconds=30)
    mlflow, queue = client(), JobQueue(s)
    job_id = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]
    running_on(mlflow, queue, job_id, 1, A)
    mlflow.set_tag(job_id, jobs.HEARTBEAT, str(time.time() - 60))  # its store writes fail…
    queue.seen(A, {"gpu": None, "job": job_id})  # …but it is alive, and says so to the queue
    assert jobs.sweep(mlflow, queue, s)["requeued"] == 0
    assert mlflow.get_run(job_id).info.status == "RUNNING"

    queue.seen(A, {"gpu": None, "job": None})  # it reports, but no longer with this job
    queue.seen(B, {"gpu": None, "job": job_id})  # another slot's word is not its slot's
    assert jobs.sweep(mlflow, queue, s)["requeued"] == 1
    assert mlflow.get_run(job_id).data.tags[jobs.ATTEMPT] == "2"


def test_a_slot_whose_job_was_taken_over_exits_without_writing(store: str, tmp_path: Path
                                                                ) -> None:
    queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    s = Settings(queue_url=queue_url, stale_seconds=30)
    mlflow, queue = client(), JobQueue(s)
    job_id = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]
    running_on(mlflow, queue, job_id, 1, A)
    mlflow.set_tag(job_id, jobs.HEARTBEAT, str(time.time() - 60))  # A was cut off…
    assert jobs.sweep(mlflow, queue, s)["requeued"] == 1
    running_on(mlflow, queue, job_id, 2, B)  # …and B took the job over
    before = mlflow.get_run(job_id).data.tags

    done = slot_process(job_id, A, queue_url, 1, "beat")  # A's link is back: its next beat
    assert done.returncode == ABANDONED_EXIT, done.stdout + done.stderr
    assert f"abandons job {job_id} attempt 1: superseded by attempt 2 on worker {B}" in done.stderr
    after = mlflow.get_run(job_id).data.tags
    assert {k: after[k] for k in (jobs.WORKER, jobs.ATTEMPT, jobs.HEARTBEAT)} == \
        {k: before[k] for k in (jobs.WORKER, jobs.ATTEMPT, jobs.HEARTBEAT)}

    mine = slot_process(job_id, B, queue_url, 2, "beat")  # B's own beat goes through
    assert mine.returncode == 0 and "the slot kept the job" in mine.stdout, mine.stderr
    assert float(mlflow.get_run(job_id).data.tags[jobs.HEARTBEAT]) > float(before[jobs.HEARTBEAT])


def test_a_slot_heard_by_no_one_exits_before_the_stale_time() -> None:
    """Store and queue both unreachable (nothing listens on their ports): the slot gives its
    job up within stale − heartbeat seconds (+ a check's interval), as the sweep would."""
    port = free_port()
    started = time.monotonic()
    done = slot_process("f" * 32, A, f"redis://127.0.0.1:{port}/0", 1, "fence",
                        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
                             "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    took = time.monotonic() - started
    assert done.returncode == ABANDONED_EXIT, done.stdout + done.stderr
    assert "no sign of life reached the store or the queue" in done.stderr
    assert took < 15, took  # the process's start included; the 20 s sleep was cut short

