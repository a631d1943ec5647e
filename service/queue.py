"""The job queue: Huey, on a SQLite file under mlruns/ (embedded) or on Redis (shared server),
chosen by `PHENOLAB_QUEUE_URL` alone. No torch here: the API enqueues through this module.

A queued message is only `(run_id, attempt)`; the job itself (experiment, config, status) is
its MLflow run. Huey acks a message when a worker takes it, so a job whose worker dies is
recovered from MLflow (heartbeat tags + the sweep in `service.jobs`), not from the queue.
The queue's key/value store also keeps one "last seen" entry per worker slot for /healthz.

The backend also holds the claims (`JobQueue.claim`): one atomic, first-writer-wins record per
job attempt, which MLflow cannot give (it has no compare-and-set). Redis: `SET key NX` with a
30-day expiry; SQLite: an INSERT on a primary key, in a table of its own in the queue's file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from huey import Huey, RedisHuey, SqliteHuey
from huey.api import Task
from huey.storage import RedisStorage, SqliteStorage
from redis.exceptions import RedisError

from service.settings import Settings

WORKER_KEY = "phenolab.worker."
FORGET_WORKERS_AFTER = 3600.0
CLAIM_TTL_SECONDS = 30 * 86_400  # Redis forgets a claim after this; a job never runs that long


class QueueUnavailable(RuntimeError):
    """The queue's backend (Redis, the SQLite file) could not be reached."""


@contextmanager
def reachable() -> Iterator[None]:
    """Backend errors as QueueUnavailable: callers handle one outage, whichever the backend."""
    try:
        yield
    except (RedisError, sqlite3.Error) as error:
        raise QueueUnavailable(f"{type(error).__name__}: {error}") from error


@dataclass(frozen=True)
class Claim:
    """Who took one attempt of a job (a worker slot's id, or the API's cancel), and when."""

    owner: str
    at: float


class ClaimStore(Protocol):
    def add(self, key: str, value: str) -> bool: ...
    def get(self, key: str) -> str | None: ...
    def remove(self, key: str) -> None: ...


class RedisClaims:
    """Claims as plain Redis keys: `SET NX` is atomic, and they expire on their own."""

    def __init__(self, storage: RedisStorage) -> None:
        self.conn, self.prefix = storage.conn, f"phenolab.claim.{storage.name}."

    def add(self, key: str, value: str) -> bool:
        return bool(self.conn.set(self.prefix + key, value, nx=True, ex=CLAIM_TTL_SECONDS))

    def get(self, key: str) -> str | None:
        raw = self.conn.get(self.prefix + key)
        return raw.decode() if raw is not None else None

    def remove(self, key: str) -> None:
        self.conn.delete(self.prefix + key)


class SqliteClaims:
    """Claims in a table of the queue's SQLite file: an INSERT on the primary key is atomic
    across processes; not Huey's kv table, which /healthz scans for the workers."""

    def __init__(self, storage: SqliteStorage) -> None:
        self.storage = storage
        storage.sql("create table if not exists phenolab_claim (queue text not null, "
                    "key text not null, value text not null, primary key (queue, key))",
                    commit=True)

    def add(self, key: str, value: str) -> bool:
        try:
            self.storage.sql("insert into phenolab_claim (queue, key, value) values (?, ?, ?)",
                             (self.storage.name, key, value), commit=True)
        except sqlite3.IntegrityError:
            return False
        return True

    def get(self, key: str) -> str | None:
        rows = self.storage.sql("select value from phenolab_claim where queue = ? and key = ?",
                                (self.storage.name, key), results=True)
        return rows[0][0] if rows else None

    def remove(self, key: str) -> None:
        self.storage.sql("delete from phenolab_claim where queue = ? and key = ?",
                         (self.storage.name, key), commit=True)


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
        with reachable():
            self.claims: ClaimStore = (RedisClaims(self.huey.storage) if self.backend == "redis"
                                       else SqliteClaims(self.huey.storage))

    @property
    def backend(self) -> str:
        return "redis" if isinstance(self.huey, RedisHuey) else "sqlite"

    def enqueue(self, run_id: str, attempt: int = 1) -> None:
        with reachable():
            self.huey.enqueue(self.task.s(run_id, attempt))

    def take(self) -> Task | None:
        """The next message, removed from the queue (blocks ~1 s on Redis), or None."""
        with reachable():
            return self.huey.dequeue()

    def execute(self, task: Task) -> None:
        """Run a taken message through its handler (whose own errors Huey logs and swallows);
        QueueUnavailable when Huey's bookkeeping around it cannot reach the backend."""
        with reachable():
            self.huey.execute(task)

    def size(self) -> int:
        with reachable():
            return self.huey.pending_count()

    def pending_run_ids(self) -> set[str]:
        with reachable():
            return {task.args[0] for task in self.huey.pending() if task.args}

    def claim(self, run_id: str, attempt: int, owner: str) -> Claim:
        """Take attempt `attempt` of job `run_id` for `owner`: of everyone who asks, exactly
        one gets it and keeps it. Returns the holder (`owner` itself when it won)."""
        mine = Claim(owner, time.time())
        with reachable():
            if self.claims.add(f"{run_id}.{attempt}", json.dumps(asdict(mine))):
                return mine
        # none when it went between the two calls: a holder released it (and re-queued the job)
        return self.claimed(run_id, attempt) or self.claim(run_id, attempt, owner)

    def claimed(self, run_id: str, attempt: int) -> Claim | None:
        """Who holds the claim on that attempt, if anyone."""
        with reachable():
            held = self.claims.get(f"{run_id}.{attempt}")
        return Claim(**json.loads(held)) if held else None

    def release(self, run_id: str, attempt: int) -> None:
        """Give up a claim this process holds, so that the same attempt can run again (a slot
        that was told to stop hands its job back)."""
        with reachable():
            self.claims.remove(f"{run_id}.{attempt}")

    def seen(self, worker_id: str, info: dict[str, Any]) -> None:
        """Record that a worker slot is alive (shown by /healthz)."""
        value = json.dumps({**info, "id": worker_id, "seen": time.time()}).encode()
        with reachable():
            self.huey.storage.put_data(WORKER_KEY + worker_id, value)

    def workers(self, within: float) -> list[dict[str, Any]]:
        """Worker slots seen in the last `within` seconds; long-gone ones are forgotten."""
        now, alive = time.time(), []
        with reachable():
            items = self.huey.storage.result_items()
        for key, raw in items.items():
            key = key.decode() if isinstance(key, bytes) else key
            if not key.startswith(WORKER_KEY):
                continue
            info = json.loads(raw)
            if now - info["seen"] <= within:
                alive.append(info)
            elif now - info["seen"] > FORGET_WORKERS_AFTER:
                self.huey.storage.delete_data(key)
        return sorted(alive, key=lambda info: info["id"])
