"""Worker slots through an outage of the Redis queue: no slot exits, each logs the outage once,
the busy one's job runs on, and a job submitted once the queue is back starts at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_lab import LONG, TINY, Lab, OwnRedis, embedded_env, own_redis_server

OUTAGE_SECONDS = 6  # 30 polls and 12 heartbeats of FAST_LIVENESS


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    yield from own_redis_server(tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="module")
def two_slots(redis_server: OwnRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """API and a worker of two CPU slots on the embedded store, the queue on our own Redis."""
    home = tmp_path_factory.mktemp("outage")
    lab = Lab(home, {**embedded_env(home), "PHENOLAB_QUEUE_URL": redis_server.url,
                     "PHENOLAB_JOBS_PER_GPU": "2"})
    lab.start_api()
    lab.start_worker()
    lab.until(lambda: lab.http.get("/healthz").json()["workers"]["seen"] == 2, 90,
              "both slots to report in")
    yield lab
    lab.close()


def slot_pids(lab: Lab) -> set[int]:
    """The worker supervisor's live child processes: its slots."""
    path = Path(f"/proc/{lab.worker.pid}/task/{lab.worker.pid}/children")
    return {int(pid) for pid in path.read_text().split()}


def test_slots_wait_out_a_redis_outage(two_slots: Lab, redis_server: OwnRedis) -> None:
    lab = two_slots
    busy = lab.submit(config=LONG)
    lab.wait(busy, "RUNNING")
    pids = slot_pids(lab)
    assert len(pids) == 2

    redis_server.proc.kill()  # the queue dies, as a crash would
    redis_server.proc.wait(10)
    lab.until(lambda: lab.http.get("/healthz").status_code == 503, 10, "/healthz to see it")
    time.sleep(OUTAGE_SECONDS)
    assert slot_pids(lab) == pids, "a slot exited while the queue was down"
    redis_server.start()  # the same port, the same files

    response = lab.http.post("/experiments/function-fit", json={**TINY, "reuse": False})
    assert response.status_code == 202 and response.json()["queued"], response.text
    lab.wait(response.json()["id"], "RUNNING", "FINISHED", timeout=2)  # the idle slot took it
    assert slot_pids(lab) == pids
    job = lab.job(busy)
    assert job["status"] == "RUNNING" and job["attempt"] == 1  # ran on through the outage
    # the busy slot notices the queue is back at its next heartbeat or poll, not at once
    lab.until(lambda: all(f"pid{pid}: the queue is back" in lab.output("worker") for pid in pids), 20,
              "both slots to see the queue back")
    text = lab.output("worker")
    assert "Traceback" not in text
    for pid in pids:  # one line when the queue went, one when it was back
        assert text.count(f"pid{pid}: the queue is unreachable") == 1, text[-3000:]
        assert text.count(f"pid{pid}: the queue is back") == 1, text[-3000:]
    lab.http.post(f"/jobs/{busy}/cancel")
    lab.wait(busy, "KILLED", timeout=30)
