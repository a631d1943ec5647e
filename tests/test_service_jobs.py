"""Jobs end to end on real processes (uvicorn API, `phenolab worker`, MLflow on SQLite): a job
runs and lands in MLflow; cancel queued and running jobs; a worker killed with -9 and an API
restart lose no job. The sweep's give-up path is checked in-process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.entities import RunTag
from service_lab import LONG, TINY, Lab, has_torch

from experiments.tracking import client
from service import jobs
from service.queue import JobQueue
from service.settings import Settings
from service.worker import plan_slots, respawn_delay


def test_submitted_job_runs_in_a_worker_and_lands_in_mlflow(working: Lab) -> None:
    job_id = working.submit()
    job = working.wait(job_id, "FINISHED", "FAILED", timeout=120)
    assert job["status"] == "FINISHED", job["error"]
    assert "/slot0/pid" in job["worker"]
    assert job["started"] and job["heartbeat"] and job["ended"] and job["attempt"] == 1
    assert job["progress"]["total"] == TINY["epochs"] and job["progress"]["variant"] == "1-8-1 lr0.001"
    [child] = job["children"]
    assert child["status"] == "FINISHED" and child["metrics"]["final_running_loss"] > 0

    mlflow = client(working.env["MLFLOW_TRACKING_URI"])
    parent = mlflow.get_run(job_id)
    assert parent.info.status == "FINISHED" and parent.data.params["epochs"] == "20"
    figures = {f.path: f.file_size for f in mlflow.list_artifacts(job_id, "figures")}
    assert set(figures) == {"figures/loss.png", "figures/predictions.png"}
    assert all(size > 1000 for size in figures.values())
    history = mlflow.get_metric_history(child["id"], "running_loss")
    assert [m.step for m in history] == list(range(5, 21, 5))

    health = working.http.get("/healthz").json()
    assert health["workers"]["seen"] >= 1 and health["status"] == "ok"
    assert not has_torch(working.api.pid), "the API process imported torch"
    # the supervisor starts the slots, so it must never initialise CUDA: no torch in it at all
    assert not has_torch(working.worker.pid), "the worker supervisor imported torch"
    slot = int(job["worker"].rsplit("/pid", 1)[1])
    assert has_torch(slot)
    environ = Path(f"/proc/{slot}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=" in environ  # a CPU slot (PHENOLAB_GPUS=none) sees no GPU
    assert any(var.startswith(b"OMP_NUM_THREADS=") for var in environ)


def test_a_job_that_raises_is_failed_and_the_worker_takes_the_next(working: Lab) -> None:
    # the worker's slot sees no GPU (PHENOLAB_GPUS=none), so asking for cuda raises in the job
    broken = working.submit(config={**TINY, "device": "cuda"})
    after = working.submit()
    job = working.wait(broken, "FINISHED", "FAILED", timeout=60)
    assert job["status"] == "FAILED"
    assert job["error"] == "RuntimeError: device 'cuda' was requested but no CUDA device is visible"
    mlflow = client(working.env["MLFLOW_TRACKING_URI"])
    [trace] = mlflow.list_artifacts(broken, "errors")
    text = Path(mlflow.download_artifacts(broken, trace.path)).read_text()
    assert "Traceback" in text and "resolve_device" in text
    assert working.wait(after, "FINISHED", "FAILED", timeout=120)["status"] == "FINISHED"


def test_a_slot_killed_mid_job_is_replaced_and_the_job_runs_again(working: Lab) -> None:
    # 6,000 epochs: a few seconds of training even on a quiet machine (1,500 once finished
    # before the kill landed), long enough to be killed in the middle
    job_id = working.submit(config={**TINY, "epochs": 6000, "converge_tol": 0.0, "eval_every": 50})
    working.until(lambda: (working.job(job_id).get("progress") or {}).get("done", 0) > 0, 60,
                  "the job to report progress")
    first = working.job(job_id)
    assert first["status"] == "RUNNING" and first["progress"]["done"] < 6000
    slot_pid = int(first["worker"].rsplit("/pid", 1)[1])
    os.kill(slot_pid, signal.SIGKILL)  # the slot dies, its supervisor lives on
    job = working.wait(job_id, "FINISHED", "FAILED", timeout=120)
    assert job["status"] == "FINISHED", job["error"]
    assert job["attempt"] == 2 and f"pid{slot_pid} died (exit -9)" in job["requeued"]
    assert job["worker"] != first["worker"] and len(job["children"]) == 1
    assert job["progress"]["done"] == 6000
    # it had taken a job, so its death was no start-up crash: restarted after the base delay
    [died] = [line for line in working.output("worker").splitlines()
              if f"(pid {slot_pid}) exited" in line]
    assert died.endswith("having taken a job; restarting in 1 s"), died


def test_cancel_queued_and_running_jobs(working: Lab) -> None:
    running = working.submit(config=LONG)
    working.wait(running, "RUNNING")
    queued = working.submit()
    assert working.http.post(f"/jobs/{queued}/cancel").json()["status"] == "KILLED"
    assert working.http.post(f"/jobs/{running}/cancel").json()["status"] == "RUNNING"
    job = working.wait(running, "KILLED", "FINISHED", "FAILED", timeout=30)
    assert job["status"] == "KILLED" and job["cancel_requested"]
    assert "cancelled" in job["error"]
    working.until(lambda: working.http.get("/healthz").json()["queue"]["pending"] == 0, 20,
                  "the worker to drop the cancelled job's message")
    time.sleep(1)
    never = working.job(queued)
    assert never["status"] == "KILLED" and never["worker"] is None and never["children"] == []


def test_killed_worker_and_restarted_api_lose_no_job(working: Lab) -> None:
    lost = working.submit(config=LONG)
    working.wait(lost, "RUNNING")
    working.until(lambda: working.job(lost)["children"], 30, "the first variant's child run")
    queued = working.submit()
    working.stop(working.worker, signal.SIGKILL)  # the worker and its slot, as if the host died
    working.stop(working.api)
    working.start_api()  # a new API, with `queued` still in the queue and `lost` stale

    requeued = working.wait(lost, "SCHEDULED", timeout=30)
    assert requeued["attempt"] == 2 and "lost: no heartbeat" in requeued["requeued"]
    assert requeued["children"] == []  # the lost attempt's child runs are discarded
    working.start_worker()
    assert working.wait(queued, "FINISHED", "FAILED", timeout=120)["status"] == "FINISHED"
    again = working.wait(lost, "RUNNING", timeout=60)
    assert again["attempt"] == 2
    working.http.post(f"/jobs/{lost}/cancel")
    assert working.wait(lost, "KILLED", "FAILED", timeout=30)["status"] == "KILLED"


def test_a_job_submitted_while_the_queue_is_down_is_kept_and_enqueued_by_the_sweep(
        store: str, tmp_path: Path) -> None:
    mlflow = client()
    down = JobQueue(Settings(queue_url="redis://127.0.0.1:1/0"))  # nothing listens on port 1
    job = jobs.submit(mlflow, down, "function-fit", TINY)
    assert job["status"] == "SCHEDULED" and job["queued"] is False and "queue" in job["note"]
    assert mlflow.get_run(job["id"]).info.status == "SCHEDULED"  # the record is kept
    s = Settings(queue_url=f"sqlite:///{tmp_path / 'queue.db'}", stale_seconds=30)
    back = JobQueue(s)
    assert jobs.sweep(mlflow, back, s)["enqueued"] == 0  # not stale yet
    mlflow.set_tag(job["id"], jobs.HEARTBEAT, str(time.time() - 60))
    assert jobs.sweep(mlflow, back, s)["enqueued"] == 1
    assert back.pending_run_ids() == {job["id"]}


def test_sweep_requeues_a_stale_job_once_then_fails_it(store: str, tmp_path: Path) -> None:
    s = Settings(queue_url=f"sqlite:///{tmp_path / 'queue.db'}", stale_seconds=30, max_attempts=2)
    mlflow, queue = client(), JobQueue(s)
    job_id = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]

    def taken_and_dead(attempt: int) -> None:
        task = queue.take()
        assert task.args == (job_id, attempt) and queue.take() is None
        mlflow.log_batch(job_id, tags=[RunTag(jobs.HEARTBEAT, str(time.time() - 60)),
                                       RunTag(jobs.WORKER, "host/slot0/pid1")])
        mlflow.update_run(job_id, "RUNNING")

    taken_and_dead(1)
    orphan = mlflow.create_run(mlflow.get_run(job_id).info.experiment_id,
                               tags={"mlflow.parentRunId": job_id}).info.run_id
    assert jobs.sweep(mlflow, queue, s) == {"requeued": 1, "failed": 0, "enqueued": 0, "killed": 0}
    run = mlflow.get_run(job_id)
    assert run.info.status == "SCHEDULED" and run.data.tags[jobs.ATTEMPT] == "2"
    assert "worker host/slot0/pid1 lost: no heartbeat for 60 s" in run.data.tags[jobs.REQUEUED]
    assert mlflow.get_run(orphan).info.lifecycle_stage == "deleted"
    assert queue.pending_run_ids() == {job_id}

    taken_and_dead(2)
    assert jobs.sweep(mlflow, queue, s) == {"requeued": 0, "failed": 1, "enqueued": 0, "killed": 0}
    run = mlflow.get_run(job_id)
    assert run.info.status == "FAILED" and queue.size() == 0
    assert run.data.tags[jobs.ERROR].endswith("gave up after 2 attempt(s)")

    fresh = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]
    queue.take()  # lost between the API and the queue: SCHEDULED but no message
    assert jobs.sweep(mlflow, queue, s)["enqueued"] == 0  # not old yet
    old = s.model_copy(update={"stale_seconds": 0.01})
    assert jobs.sweep(mlflow, queue, old)["enqueued"] == 1
    assert queue.pending_run_ids() == {fresh}


def test_worker_skips_messages_of_superseded_attempts(store: str, tmp_path: Path) -> None:
    from service import worker

    s = Settings(queue_url=f"sqlite:///{tmp_path / 'queue.db'}")
    slot = worker.Slot("host/slot0/pid1", s)
    mlflow = client()
    job_id = jobs.submit(mlflow, slot.queue, "function-fit", TINY)["id"]
    mlflow.set_tag(job_id, jobs.ATTEMPT, "2")
    worker.run_job(slot, job_id, 1)
    run = mlflow.get_run(job_id)
    assert run.info.status == "SCHEDULED" and jobs.WORKER not in run.data.tags


def test_slots_come_from_gpus_and_jobs_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan_slots(Settings(gpus="0,2", jobs_per_gpu=2)) == ["0", "0", "2", "2"]
    assert plan_slots(Settings(gpus="none", jobs_per_gpu=3)) == [None, None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert plan_slots(Settings(gpus="all")) == ["1", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible: one CPU slot per job
    assert plan_slots(Settings(gpus="all", jobs_per_gpu=2)) == [None, None]


def test_a_slot_dying_at_start_backs_off_to_a_minute() -> None:
    delays = [respawn_delay(None, lived=0.5)]
    for _ in range(8):
        delays.append(respawn_delay(delays[-1], lived=0.5))
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert respawn_delay(60, lived=3600) == 1  # it ran for an hour: its job killed it
    assert respawn_delay(32, lived=5, took_job=True) == 1  # it started fine, a job killed it


def test_a_stale_time_within_two_heartbeats_is_refused() -> None:
    """Else every running job would be declared lost between two of its heartbeats."""
    with pytest.raises(ValueError, match="PHENOLAB_STALE_SECONDS .10.0. must exceed twice"):
        Settings(heartbeat_seconds=5, stale_seconds=10)
    assert Settings(heartbeat_seconds=5, stale_seconds=10.5).stale_seconds == 10.5
