"""Claims: of a worker slot and a cancel racing for a SCHEDULED job exactly one wins, and the
cancel's answer says which — raced against a real worker; the claim is atomic on both queue
backends; the sweep reads claims (no duplicate message for a taken job, a cancel or a start
that was lost half-way is settled); a re-queued job forgets its last progress, and a job that
ends FAILED keeps its last attempt's children."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from mlflow.entities import RunTag
from service_lab import LONG, TINY, Lab, OwnRedis

from experiments.tracking import client
from service import jobs
from service.queue import JobQueue
from service.settings import Settings

RACES = 50


def test_cancel_right_after_submit_answers_what_the_job_then_does(working: Lab) -> None:
    """Cancel 0–270 ms after submitting to an idle worker: an answer of KILLED means the job
    never ran; an answer of RUNNING means a slot took it (LONG never finishes by itself, so
    it is stopped: right away when the slot saw the request as it claimed, else at a progress
    report)."""
    rng = random.Random(7)
    seen: dict[bool, int] = {False: 0, True: 0}
    for _ in range(RACES):
        job_id = working.submit(config=LONG)
        time.sleep(rng.uniform(0.0, 0.27))
        reply = working.http.post(f"/jobs/{job_id}/cancel")
        assert reply.status_code == 202, reply.text
        answer = reply.json()
        job = working.wait(job_id, "FINISHED", "FAILED", "KILLED", timeout=60)
        seen[answer["started"]] += 1
        if answer["started"]:
            assert answer["status"] == "RUNNING" and job["status"] == "KILLED", job
            assert job["error"] != jobs.NOT_STARTED and job["worker"], job
        else:
            assert answer["status"] == "KILLED" and answer["ends_as"] == ["KILLED"]
            assert job["status"] == "KILLED" and job["error"] == jobs.NOT_STARTED, job
            assert job["worker"] is None and job["started"] is None and job["children"] == [], job
        assert job["status"] in answer["ends_as"]
    assert all(seen.values()), f"the race was not exercised: answers {seen}"


def queues(url: str, n: int) -> list[JobQueue]:
    """`n` queue clients, each with its own connection, as n processes would have."""
    return [JobQueue(Settings(queue_url=url)) for _ in range(n)]


def race_claims(clients: list[JobQueue]) -> set[str]:
    """All clients claim the same attempt at once; the holders each was told."""
    start, holders = threading.Barrier(len(clients)), []

    def claim(queue: JobQueue, owner: str) -> None:
        start.wait()
        holders.append(queue.claim("f" * 32, 1, owner).owner)

    threads = [threading.Thread(target=claim, args=(queue, f"slot{n}"))
               for n, queue in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(holders) == len(clients)
    return set(holders)


def test_a_claim_has_one_winner_on_sqlite(tmp_path: Path) -> None:
    clients = queues(f"sqlite:///{tmp_path / 'queue.db'}", 8)
    [winner] = race_claims(clients)
    assert clients[0].claimed("f" * 32, 1).owner == winner
    assert clients[0].claimed("f" * 32, 2) is None  # another attempt, another claim


def test_a_claim_has_one_winner_on_redis(own_redis: OwnRedis) -> None:
    clients = queues(own_redis.url, 8)
    assert len(race_claims(clients)) == 1
    clients[3].release("f" * 32, 1)
    assert clients[1].claim("f" * 32, 1, "cancel").owner == "cancel"


@pytest.fixture
def embedded(store: str, tmp_path: Path) -> tuple:
    """An MLflow client, a queue and settings on this test's own SQLite store and queue."""
    s = Settings(queue_url=f"sqlite:///{tmp_path / 'queue.db'}", stale_seconds=30, max_attempts=2)
    return client(), JobQueue(s), s


def aged(mlflow, job_id: str, seconds: float = 60) -> None:
    """Make a job look `seconds` old to the sweep."""
    mlflow.set_tag(job_id, jobs.HEARTBEAT, str(time.time() - seconds))


def test_sweep_leaves_a_taken_job_alone_and_requeues_one_whose_slot_was_lost(embedded: tuple) -> None:
    mlflow, queue, s = embedded
    job_id = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]
    aged(mlflow, job_id)
    assert queue.take().args == (job_id, 1)  # a slot took the message…
    queue.claim(job_id, 1, "host/slot0/pid1")  # …and claimed it, but has not written RUNNING
    assert jobs.sweep(mlflow, queue, s)["enqueued"] == 0 and queue.size() == 0

    later = s.model_copy(update={"stale_seconds": 0.01})  # the claim is old: that slot is gone
    assert jobs.sweep(mlflow, queue, later)["requeued"] == 1
    run = mlflow.get_run(job_id)
    assert run.info.status == "SCHEDULED" and run.data.tags[jobs.ATTEMPT] == "2"
    assert "worker host/slot0/pid1 lost before the job started" in run.data.tags[jobs.REQUEUED]
    assert queue.pending_run_ids() == {job_id}


def test_sweep_finishes_a_cancel_whose_api_died(embedded: tuple) -> None:
    mlflow, queue, s = embedded
    won = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]  # claimed, KILLED never written
    queue.claim(won, 1, jobs.CANCELLER)
    asked = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]  # tagged, never claimed
    mlflow.set_tag(asked, jobs.CANCEL, str(time.time()))
    for job_id in (won, asked):
        aged(mlflow, job_id)
    assert jobs.sweep(mlflow, queue, s)["killed"] == 2
    for job_id in (won, asked):
        run = mlflow.get_run(job_id)
        assert run.info.status == "KILLED" and run.data.tags[jobs.ERROR] == jobs.NOT_STARTED


def test_requeue_forgets_progress_and_a_failed_job_keeps_its_last_children(embedded: tuple) -> None:
    mlflow, queue, s = embedded
    job_id = jobs.submit(mlflow, queue, "function-fit", TINY)["id"]
    experiment_id = mlflow.get_run(job_id).info.experiment_id

    def attempt_died(attempt: int) -> str:
        assert queue.take().args == (job_id, attempt)
        queue.claim(job_id, attempt, f"host/slot0/pid{attempt}")
        jobs.start(mlflow, job_id, f"host/slot0/pid{attempt}")
        mlflow.log_batch(job_id, tags=[RunTag(jobs.PROGRESS, '{"done": 3}'),
                                       RunTag(jobs.HEARTBEAT, str(time.time() - 60))])
        return mlflow.create_run(experiment_id, tags={"mlflow.parentRunId": job_id}).info.run_id

    first = attempt_died(1)
    assert jobs.sweep(mlflow, queue, s)["requeued"] == 1
    run = mlflow.get_run(job_id)
    assert jobs.PROGRESS not in run.data.tags and jobs.ERROR not in run.data.tags
    assert mlflow.get_run(first).info.lifecycle_stage == "deleted"  # it runs again from scratch

    last = attempt_died(2)
    assert jobs.sweep(mlflow, queue, s)["failed"] == 1
    assert mlflow.get_run(job_id).info.status == "FAILED"
    child = mlflow.get_run(last)  # how far the last attempt got
    assert child.info.lifecycle_stage == "active" and child.info.status == "FAILED"
    assert [c["id"] for c in jobs.detail(mlflow, mlflow.get_run(job_id))["children"]] == [last]
