"""Workers. `phenolab worker` is a supervisor that never imports torch (so CUDA is never
initialised in a process that starts others): it spawns one child process per slot —
each GPU of `PHENOLAB_GPUS` × `PHENOLAB_JOBS_PER_GPU`, or CPU slots when there is no GPU — with
`CUDA_VISIBLE_DEVICES` pinned to that slot's GPU, restarts a child that dies (re-queuing the
job it held at once), and stops them all on SIGTERM/SIGINT.

A child (`python -m service.worker --slot N`) takes jobs from the queue one at a time and runs
them through `experiments.runner`, the same code path as `phenolab run`. It claims each
message's attempt before it starts the job (see `service.jobs`: a cancel or another slot may
win). While a job runs, a thread writes its heartbeat and progress into the run's tags and
looks for a cancel request; the experiment stops at its next progress report
(`RunContext.cancelled`). A job that raises ends FAILED (the runner records the message and
traceback) and the child takes the next one. A child told to stop puts its job back in the
queue, to run again from the start. A queue that cannot be reached (Redis restarting) is waited
out: the child logs one line when it goes and one when it is back, and retries every
`PHENOLAB_POLL_SECONDS`.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from experiments.tracking import client
from service import jobs
from service.queue import JobQueue, QueueUnavailable
from service.settings import Settings, settings

log = logging.getLogger("phenolab.worker")
T = TypeVar("T")
STOP_GRACE_SECONDS = 30.0
RESPAWN_DELAY_SECONDS = 1.0
RESPAWN_MAX_SECONDS = 60.0
HEALTHY_SECONDS = 60.0  # a slot that lived this long died of its job, not of its start


def respawn_delay(previous: float | None, lived: float, took_job: bool = False) -> float:
    """Seconds to wait before restarting a slot that died after `lived` seconds, `previous`
    being the wait before its last restart: a slot that keeps dying soon after its start (a
    broken driver, a bad environment) backs off, doubling up to a minute, instead of spinning
    once a second; one that ran for a while, or had taken a job (so it started fine, and died
    of the job or was killed), restarts after the base delay."""
    if previous is None or lived >= HEALTHY_SECONDS or took_job:
        return RESPAWN_DELAY_SECONDS
    return min(2 * previous, RESPAWN_MAX_SECONDS)


def visible_gpus() -> list[str]:
    """GPU indices this machine shows: `CUDA_VISIBLE_DEVICES` when set, else nvidia-smi's."""
    if (env := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return [gpu.strip() for gpu in env.split(",") if gpu.strip() not in ("", "-1")]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def plan_slots(s: Settings) -> list[str | None]:
    """One entry per slot: the GPU it is pinned to, or None for a CPU slot."""
    spec = s.gpus.strip().lower()
    if spec in ("none", "cpu", ""):
        gpus: list[str] = []
    elif spec == "all":
        gpus = visible_gpus()
    else:
        gpus = [gpu.strip() for gpu in spec.split(",") if gpu.strip()]
    return [gpu for gpu in gpus for _ in range(s.jobs_per_gpu)] or [None] * s.jobs_per_gpu


def worker_id(slot: int, pid: int) -> str:
    return f"{socket.gethostname()}/slot{slot}/pid{pid}"


def open_store(mlflow: MlflowClient, who: str) -> None:
    """Open the tracking store ahead of need (seconds on SQLite: the engine, the schema check),
    so that a ready slot starts a job at once and a supervisor re-queues a dead slot's job
    before the sweep takes it for lost; a store that is down now is retried when needed."""
    try:
        mlflow.search_experiments(max_results=1)
    except Exception as error:
        log.warning("%s: the tracking store is not reachable yet: %s", who, error)


# ---------------------------------------------------------------- the child: one slot


@dataclass
class Slot:
    """The identity, queue and stop flag of the process consuming the queue; the queue runs
    each message it takes as `run_job(this slot, …)`. `report_fd` is the pipe on which it
    tells its supervisor, once, that it took a job."""

    id: str
    settings: Settings
    stop: threading.Event = field(default_factory=threading.Event)
    gpu: str | None = None
    report_fd: int | None = None
    queue: JobQueue = field(init=False)
    queue_down: bool = field(default=False, init=False)
    mlflow: MlflowClient = field(init=False)

    def __post_init__(self) -> None:
        self.queue = JobQueue(self.settings, handler=functools.partial(run_job, self))
        self.mlflow = client(self.settings.tracking_uri)

    def reach(self, call: Callable[[], T]) -> T | None:
        """`call` on the queue; None when the queue is unreachable, which is logged once per
        outage (not a traceback per poll): the caller waits and tries again."""
        try:
            result = call()
        except QueueUnavailable as error:
            if not self.queue_down:
                log.warning("worker %s: the queue is unreachable (%s); retrying every %g s",
                            self.id, error, self.settings.poll_seconds)
            self.queue_down = True
            return None
        if self.queue_down:
            log.warning("worker %s: the queue is back", self.id)
        self.queue_down = False
        return result

    def report(self, job: str | None) -> bool:
        """Tell /healthz (and the sweep) this slot is alive and which job it runs; whether the
        queue took it."""
        self.reach(functools.partial(self.queue.seen, self.id, {"gpu": self.gpu, "job": job}))
        return not self.queue_down

    def took_job(self) -> None:
        """Tell the supervisor, once, that this slot started fine and took a job: its death
        from now on is no start-up crash."""
        if self.report_fd is not None:
            os.write(self.report_fd, b"j")
            os.close(self.report_fd)
            self.report_fd = None


ABANDONED_EXIT = 75  # a slot that gave up a job another slot may now run: its supervisor restarts it


class Heartbeat(threading.Thread):
    """Writes heartbeat + progress tags every PHENOLAB_HEARTBEAT_SECONDS and reads the cancel
    request, on its own MLflow client, while the experiment trains.

    It is also the slot's fence against running a job twice. Each beat reads the job first: if
    its attempt or worker is no longer this one (the sweep re-queued it while this slot was cut
    off, and another slot took it), the slot exits at once, before it writes anything more to
    a run that is no longer its own. And a slot whose signs of life (heartbeat to the store,
    report to the queue) have all failed for `stale - heartbeat` seconds exits too: the sweep
    re-queues a job after `stale` seconds without either, so the slot is gone before another
    can take it, and cannot write into that job when its link comes back."""

    def __init__(self, run_id: str, slot: Slot, attempt: int = 1) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.run_id, self.slot, self.attempt = run_id, slot, attempt
        self.mlflow = client(slot.settings.tracking_uri)
        self.latest: Any = None
        self.cancel_requested = threading.Event()
        self.done = threading.Event()
        self.alive = time.time()  # the last sign of life that reached the store or the queue
        self.fence_seconds = slot.settings.stale_seconds - slot.settings.heartbeat_seconds

    def on_progress(self, progress: Any) -> None:
        self.latest = progress

    def cancelled(self) -> bool:
        return self.cancel_requested.is_set() or self.slot.stop.is_set()

    def run(self) -> None:
        threading.Thread(target=self.watch, name=f"fence-{self.run_id}", daemon=True).start()
        while not self.done.wait(self.slot.settings.heartbeat_seconds):
            self.beat()

    def watch(self) -> None:
        """The fence, on a thread of its own: a beat (or the job's own logging) may hang in
        the store's retries for minutes while the link is down, and be let through when it
        comes back."""
        while not self.done.wait(self.slot.settings.heartbeat_seconds / 2):
            if (idle := time.time() - self.alive) > self.fence_seconds:
                self.abandon(f"no sign of life reached the store or the queue for {idle:.1f} s, "
                             "so the sweep may re-queue the job")

    def beat(self) -> None:
        now = time.time()
        tags = [RunTag(jobs.HEARTBEAT, str(now))]
        if (p := self.latest) is not None:
            tags.append(RunTag(jobs.PROGRESS, json.dumps({
                **asdict(p), "info": jobs.finite(p.info), "fraction": round(p.fraction, 4)})))
        if self.slot.report(self.run_id):  # first: the cheap sign of life, the sweep reads it too
            self.alive = now
        try:
            current = self.mlflow.get_run(self.run_id).data.tags
            if (current.get(jobs.ATTEMPT, "1"), current.get(jobs.WORKER)) != (str(self.attempt),
                                                                              self.slot.id):
                self.abandon(f"superseded by attempt {current.get(jobs.ATTEMPT)} on worker "
                             f"{current.get(jobs.WORKER)}")
            if jobs.CANCEL in current:
                self.cancel_requested.set()
            self.mlflow.log_batch(self.run_id, tags=tags)
            self.alive = now
        except Exception as error:  # a store hiccup must not kill the job; the next beat retries
            log.warning("heartbeat of %s failed: %s", self.run_id, error)

    def abandon(self, why: str) -> None:
        """Exit the slot's process now, writing nothing more: its job may be another slot's."""
        log.error("worker %s abandons job %s attempt %d: %s", self.slot.id, self.run_id,
                  self.attempt, why)
        logging.shutdown()
        os._exit(ABANDONED_EXIT)

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.beat()


def run_job(slot: Slot, run_id: str, attempt: int) -> None:
    """Run one queued job in this slot's process, unless a cancel or another slot claimed
    that attempt first, or it was superseded by a later attempt."""
    from experiments.core.config import build_config
    from experiments.core.context import Cancelled, RunContext
    from experiments.runner import run_experiment
    from experiments.suite import runnable
    from service import report

    # first, before reading the job: the sooner the claim, the shorter the time the sweep
    # sees neither the message nor a claim
    holder = slot.reach(functools.partial(slot.queue.claim, run_id, attempt, slot.id))
    if holder is None or holder.owner != slot.id:
        log.info("job %s attempt %d: message skipped (claimed by %s)", run_id, attempt,
                 holder.owner if holder else "? (the queue is unreachable; the sweep re-enqueues it)")
        return
    mlflow = slot.mlflow
    try:
        run = jobs.load(mlflow, run_id)
    except jobs.NotFound:
        log.warning("job %s is gone; skipped", run_id)
        return
    tags = run.data.tags
    if run.info.status != "SCHEDULED" or jobs.attempt_of(run) != attempt:
        log.info("job %s is %s (attempt %s); message for attempt %d skipped",
                 run_id, run.info.status, tags.get(jobs.ATTEMPT), attempt)
        return
    if jobs.CANCEL in tags:  # asked while this slot claimed it: the cancel was told RUNNING
        jobs.kill(mlflow, run_id, "cancelled as it started", worker=slot.id)
        return
    name = tags[jobs.EXPERIMENT]
    try:
        config = build_config(runnable(name).config_cls, None, json.loads(tags[jobs.CONFIG]))
    except Exception as error:  # e.g. this worker's code lacks the experiment
        jobs.fail(mlflow, run_id, f"{type(error).__name__}: {error}")
        return
    jobs.start(mlflow, run_id, slot.id)
    log.info("job %s (%s, attempt %d) started", run_id, name, attempt)
    beat = Heartbeat(run_id, slot, attempt)
    ctx = RunContext(on_progress=beat.on_progress, cancelled=beat.cancelled)
    beat.start()
    interrupted = False
    try:
        run_experiment(name, config, run_id=run_id, ctx=ctx, tracking_uri=slot.settings.tracking_uri)
    except Cancelled:
        interrupted = not beat.cancel_requested.is_set()
    except Exception as error:  # recorded by the runner: FAILED, message tag, traceback artifact
        log.warning("job %s failed: %s: %s", run_id, type(error).__name__, error)
    finally:
        beat.stop()
        free_device_memory()
    if interrupted:
        jobs.requeue(mlflow, slot.queue, mlflow.get_run(run_id),
                     f"worker {slot.id} stopped", slot.settings.max_attempts, count=False)
    else:  # the report of however it ended, as its artifact report.html
        report.log(mlflow, run_id, slot.settings)
    log.info("job %s ended %s", run_id, mlflow.get_run(run_id).info.status)


def free_device_memory() -> None:
    """After a job (an OOM one above all), give its cached GPU memory back."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def serve_slot(slot_index: int, report_fd: int | None = None) -> None:
    """The child's loop: take a job, run it, repeat, until SIGTERM/SIGINT; through outages of
    the queue, which it waits out."""
    s = settings()
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
    slot = Slot(worker_id(slot_index, os.getpid()), s, gpu=gpu, report_fd=report_fd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: slot.stop.set())
    import experiments.runner  # noqa: F401  (torch and the experiments, before the first job)

    open_store(slot.mlflow, f"worker {slot.id}")
    log.info("worker %s ready (%s), queue %s", slot.id, f"GPU {gpu}" if gpu else "CPU",
             slot.queue.backend)
    last_seen = 0.0
    while not slot.stop.is_set():
        if time.monotonic() - last_seen > s.heartbeat_seconds:
            slot.report(None)
            last_seen = time.monotonic()
        task = slot.reach(slot.queue.take)
        if task is None:
            slot.stop.wait(s.poll_seconds)
            continue
        slot.took_job()
        slot.reach(functools.partial(slot.queue.execute, task))
        last_seen = 0.0
    log.info("worker %s stopped", slot.id)


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    """Spawns and watches the slot processes of one machine."""

    def __init__(self, s: Settings) -> None:
        self.settings = s
        self.slots = plan_slots(s)
        self.procs: dict[int, subprocess.Popen] = {}
        self.reports: dict[int, int] = {}  # read ends of the slots' "took a job" pipes
        self.started: dict[int, float] = {}
        self.delays: dict[int, float] = {}
        self.due: dict[int, float] = {}  # slots waiting out their respawn delay
        self.stopping = threading.Event()
        self.mlflow = client(s.tracking_uri)

    def spawn(self, index: int) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": self.slots[index] or ""}
        if self.slots[index] is None and "OMP_NUM_THREADS" not in env:
            # CPU slots share the cores rather than each starting a thread per core
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.slots.count(None)))
        read, write = os.pipe()
        os.set_blocking(read, False)
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "service.worker", "--slot", str(index), "--report-fd",
             str(write)], env=env, pass_fds=(write,))
        os.close(write)
        self.reports[index] = read
        self.started[index] = time.monotonic()

    def took_job(self, index: int) -> bool:
        """Whether the slot's process, now dead, had told us it took a job."""
        read = self.reports.pop(index)
        try:
            return bool(os.read(read, 1))
        except BlockingIOError:
            return False
        finally:
            os.close(read)

    def recover(self, index: int, proc: subprocess.Popen) -> None:
        """A child died: its RUNNING job is re-queued now rather than after the stale time
        (if this fails, the API's sweep re-queues it after the stale time)."""
        dead = worker_id(index, proc.pid)
        try:
            queue = JobQueue(self.settings)
            running, _ = jobs.search(self.mlflow, status="RUNNING", limit=1000)
            for run in running:
                if run.data.tags.get(jobs.WORKER) == dead:
                    jobs.requeue(self.mlflow, queue, run,
                                 f"worker {dead} died (exit {proc.returncode})",
                                 self.settings.max_attempts)
        except Exception as error:
            log.warning("could not re-queue the job of slot %d: %s", index, error)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        devices = ", ".join(f"GPU {gpu}" if gpu else "CPU" for gpu in self.slots)
        print(f"phenolab worker: {len(self.slots)} slot(s) [{devices}]", flush=True)
        for index in range(len(self.slots)):
            self.spawn(index)
        threading.Thread(target=open_store, args=(self.mlflow, "worker supervisor"),
                         daemon=True).start()
        while not self.stopping.wait(0.5):
            for index, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                del self.procs[index]
                lived = time.monotonic() - self.started[index]
                worked = self.took_job(index)
                delay = self.delays[index] = respawn_delay(self.delays.get(index), lived, worked)
                log.warning("worker slot %d (pid %d) exited with %s after %.0f s%s; restarting "
                            "in %.0f s", index, proc.pid, proc.returncode, lived,
                            ", having taken a job" if worked else "", delay)
                # off this loop: a store that is down retries for minutes, and meanwhile the
                # other slots and a stop request must still be handled
                threading.Thread(target=self.recover, args=(index, proc), daemon=True).start()
                self.due[index] = time.monotonic() + delay
            for index, due in list(self.due.items()):
                if time.monotonic() >= due:
                    del self.due[index]
                    self.spawn(index)
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        """SIGTERM every child (each re-queues its job), then SIGKILL the ones that hang."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__)
    p.add_argument("--slot", type=int, required=True, help="slot index (set by the supervisor)")
    p.add_argument("--report-fd", type=int, help="pipe to the supervisor (set by it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a slot is stuck
    serve_slot(args.slot, args.report_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
