"""The job queue: Huey, on a SQLite file under mlruns/ (embedded) or on Redis (shared server),
chosen by `PHENOLAB_QUEUE_URL` alone. No torch here: the API enqueues through this module.

A queued message is only `(run_id, attempt)`; the job itself (experiment, config, status) is
its MLflow run. Huey acks a message when a worker takes it, so a job whose worker dies is
recovered from MLflow (heartbeat tags + the sweep in `service.jobs`), not from the queue.
The queue's key/value store also keeps one "last seen" entry per worker slot for /healthz.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.api import Task
from redis.exceptions import RedisError

from service.settings import Settings

WORKER_KEY = "phenolab.worker."
FORGET_WORKERS_AFTER = 3600.0


class QueueUnavailable(RuntimeError):
    """The queue's backend (Redis, the SQLite file) could not be reached."""


def make_huey(url: str, name: str) -> Huey:
    """`redis://…` → RedisHuey; `sqlite:///path` → SqliteHuey on that file (created)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(name, url=url, results=False)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=str(path), results=False, timeout=30)
    raise ValueError(f"PHENOLAB_QUEUE_URL {url!r}: expected redis://… or sqlite:///…")


Handler = Callable[[str, int], None]  # (run_id, attempt) → runs that attempt of the job
TASK_NAME = "phenolab.run_job"


def _enqueue_only(run_id: str, attempt: int) -> None:
    raise RuntimeError(f"this process only enqueues jobs; it cannot run {run_id} (attempt {attempt})")


class JobQueue:
    """The queue of job messages. `handler` runs a taken message: a worker slot passes its own;
    the API, which only enqueues, passes none."""

    def __init__(self, settings: Settings, handler: Handler | None = None) -> None:
        self.url = settings.queue
        self.huey = make_huey(self.url, settings.queue_name)
        run = handler or _enqueue_only

        def run_job(run_id: str, attempt: int) -> None:  # one task, whoever's handler: Huey
            run(run_id, attempt)  # names a task by the module and name of its function

        self.task = self.huey.task(name=TASK_NAME)(run_job)

    @property
    def backend(self) -> str:
        return "redis" if isinstance(self.huey, RedisHuey) else "sqlite"

    def enqueue(self, run_id: str, attempt: int = 1) -> None:
        try:
            self.huey.enqueue(self.task.s(run_id, attempt))
        except (RedisError, sqlite3.Error) as error:
            raise QueueUnavailable(f"{type(error).__name__}: {error}") from error

    def take(self) -> Task | None:
        """The next message, removed from the queue (blocks ~1 s on Redis), or None."""
        return self.huey.dequeue()

    def execute(self, task: Task) -> None:
        self.huey.execute(task)

    def size(self) -> int:
        return self.huey.pending_count()

    def pending_run_ids(self) -> set[str]:
        return {task.args[0] for task in self.huey.pending() if task.args}

    def seen(self, worker_id: str, info: dict[str, Any]) -> None:
        """Record that a worker slot is alive (shown by /healthz)."""
        value = json.dumps({**info, "id": worker_id, "seen": time.time()}).encode()
        self.huey.storage.put_data(WORKER_KEY + worker_id, value)

    def workers(self, within: float) -> list[dict[str, Any]]:
        """Worker slots seen in the last `within` seconds; long-gone ones are forgotten."""
        now, alive = time.time(), []
        for key, raw in self.huey.storage.result_items().items():
            key = key.decode() if isinstance(key, bytes) else key
            if not key.startswith(WORKER_KEY):
                continue
            info = json.loads(raw)
            if now - info["seen"] <= within:
                alive.append(info)
            elif now - info["seen"] > FORGET_WORKERS_AFTER:
                self.huey.storage.delete_data(key)
        return sorted(alive, key=lambda info: info["id"])
