"""The shared lab server's configuration on real servers: the MLflow tracking server (`mlflow
server`, PostgreSQL backend, served artifacts) and the queue on Redis, with the API and a worker
as real processes pointed at them by settings alone — what docker-compose.yml runs, without
containers. Uses the machine's PostgreSQL (127.0.0.1:5432, trust auth: a fresh database for the
session, dropped after) and Redis (127.0.0.1:6379: an empty db index, flushed after); skipped
with the reason when either is absent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_lab import LONG, TINY, Lab, OwnRedis, free_port, until

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="module")
def postgres_uri() -> Iterator[str]:
    """A fresh PostgreSQL database for this module's MLflow server; dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(**PG, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL at {PG['host']}:{PG['port']} (trust auth): {error}")
    name = f"phenolab_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """An empty Redis db index of this module's own (the highest free one); flushed afterwards."""
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3).ping()
    except redis.RedisError as error:
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT}: {error}")
    for db in range(15, 0, -1):
        conn = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        # Claim the index atomically, so two test sessions never share one.
        if conn.dbsize() == 0 and conn.set("phenolab.test.claim", os.getpid(), nx=True):
            break
    else:
        pytest.skip("no empty Redis db index among 1..15")
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        conn.flushdb()
        conn.close()


@pytest.fixture(scope="module")
def mlflow_server(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on the PostgreSQL database with served artifacts, as the compose file
    runs it; its URL."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(home / "mlflow-server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_uri,
         "--serve-artifacts", "--artifacts-destination", str(home / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"],
        cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # as in compose
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 120,
              "mlflow server to answer /health",
              lambda: (home / "mlflow-server.log").read_text()[-3000:], proc)
        yield url
    finally:
        Lab.stop(proc)
        log.close()


@pytest.fixture(scope="module")
def lab(mlflow_server: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Lab]:
    """API and worker processes on the MLflow server and the Redis queue, settings only."""
    home = tmp_path_factory.mktemp("scaleout")
    lab = Lab(home, {"PHENOLAB_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server,
                     "PHENOLAB_QUEUE_URL": redis_url,
                     "PHENOLAB_UI_URL": mlflow_server})
    lab.start_api()
    lab.start_worker()
    yield lab
    lab.close()


def test_job_runs_on_redis_and_lands_in_the_mlflow_server(lab: Lab, mlflow_server: str,
                                                          postgres_uri: str) -> None:
    health = lab.http.get("/healthz").json()
    assert health["queue"]["backend"] == "redis" and health["store"]["ok"]
    job_id = lab.submit(config=TINY)
    job = lab.wait(job_id, "FINISHED", timeout=120)
    assert job["links"]["mlflow"].startswith(f"{mlflow_server}/#/experiments/")

    # Read back from the server, as the UI and another machine would.
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=mlflow_server)
    run = mlflow.get_run(job_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "20" and run.data.params["n_points"] == "32"
    [child] = job["children"]
    assert child["status"] == "FINISHED"
    losses = mlflow.get_metric_history(child["id"], "running_loss")
    steps = sorted(m.step for m in losses)
    assert steps == list(range(5, 21, 5)) and all(m.value >= 0 for m in losses), steps
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served, not a local path
    figures = {f.path for f in mlflow.list_artifacts(job_id, "figures")}
    assert {"figures/loss.png", "figures/predictions.png"} <= figures
    png = Path(mlflow.download_artifacts(job_id, "figures/loss.png", dst_path=str(lab.logs)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000

    # …and the run really is in the PostgreSQL database behind the server.
    import psycopg

    with psycopg.connect(postgres_uri) as db:
        row = db.execute("SELECT status FROM runs WHERE run_uuid = %s", (job_id,)).fetchone()
    assert row == ("FINISHED",)


def test_worker_restarted_with_jobs_queued_loses_none(lab: Lab, redis_url: str) -> None:
    """SIGTERM the worker while it runs one job with two more queued: the running job goes back
    to the Redis queue, the queued ones stay there; the restarted worker runs all three."""
    import redis

    running = lab.submit(config=LONG)  # runs until cancelled: surely RUNNING at the restart
    lab.wait(running, "RUNNING", timeout=120)
    first_worker = lab.job(running)["worker"]
    queued = [lab.submit(config=TINY) for _ in range(2)]
    assert {lab.job(job_id)["status"] for job_id in queued} == {"SCHEDULED"}

    lab.stop(lab.worker, signal.SIGTERM)
    assert lab.http.get("/healthz").json()["queue"]["pending"] == 3
    assert redis.Redis.from_url(redis_url).llen("huey.redis.phenolab") == 3  # on Redis itself
    handed_back = lab.job(running)
    assert handed_back["status"] == "SCHEDULED" and handed_back["attempt"] == 1
    assert handed_back["requeued"].startswith(f"worker {first_worker} stopped")

    lab.start_worker()
    for job_id in queued:
        assert lab.wait(job_id, "FINISHED", timeout=180)["children"][0]["status"] == "FINISHED"
    rerun = lab.wait(running, "RUNNING", timeout=120)
    assert rerun["worker"] != first_worker  # taken again, by the new worker process
    assert lab.http.post(f"/jobs/{running}/cancel").status_code == 202
    lab.wait(running, "KILLED", timeout=60)
    # The queue drains; a duplicate message the API's sweep may have added while the job sat in
    # the queue is skipped, so no job runs twice.
    lab.until(lambda: lab.http.get("/healthz").json()["queue"]["pending"] == 0, 60,
              "the Redis queue to drain")
    assert lab.job(running)["status"] == "KILLED"
    assert all(len(lab.job(job_id)["children"]) == 1 for job_id in queued)


def test_queued_jobs_survive_a_redis_restart_with_append_only(own_redis: OwnRedis) -> None:
    """The compose file's Redis (password in the URL, append-only persistence): messages queued
    before a restart of the server are still there, in order, after it."""
    from service.queue import JobQueue
    from service.settings import Settings

    queue = JobQueue(Settings(queue_url=own_redis.url, queue_name="phenolab"))
    for n in range(3):
        queue.enqueue(f"{n:032x}", attempt=1)
    own_redis.stop()
    own_redis.start()
    queue = JobQueue(Settings(queue_url=own_redis.url, queue_name="phenolab"))
    assert queue.backend == "redis" and queue.size() == 3
    assert [queue.take().args for _ in range(3)] == [(f"{n:032x}", 1) for n in range(3)]
    assert queue.take() is None
