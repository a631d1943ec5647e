"""Jobs on MLflow + the queue: submit, list, get, cancel, and the sweep that recovers jobs whose
worker was lost. No torch here (the API imports this).

A job is an MLflow parent run (tag `phenolab.kind=job`); its run id is the job id and its
status is the job status: SCHEDULED → RUNNING → FINISHED / FAILED / KILLED. Tags carry the
rest: the validated config, the attempt number, the worker, its heartbeat, the progress,
a cancel request and the error.

Who moves a SCHEDULED job on, a worker slot (→ RUNNING) or a cancel (→ KILLED), is decided by
a claim, since MLflow has no compare-and-set: each attempt of a job has one claim in the
queue's backend (`JobQueue.claim`: Redis `SET NX`, or an INSERT on a SQLite primary key, keyed
by run id + attempt), which either must win before it writes the status. A slot claims a
message's attempt before it reads the job, then writes RUNNING; a cancel of a SCHEDULED job
first tags the request (`phenolab.cancel`), then claims: if it wins the job ends KILLED
("cancelled before it started") and no slot ever runs that attempt; if a slot won, the answer
is RUNNING and the slot stops the job at its next progress report (it may finish first). A
re-queued job runs a new attempt, with a new claim; a slot told to stop releases its claim
when it hands the same attempt back. The sweep reads the claims too: it never re-enqueues a
claimed attempt, ends KILLED a cancel whose API died after winning, and re-queues an attempt
whose slot claimed it but was lost before it wrote RUNNING.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from datetime import UTC, datetime
from functools import cache
from typing import Any

from mlflow.entities import Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.search_utils import SearchUtils
from pydantic import ValidationError

from experiments import catalog
from experiments.core.config import ExperimentConfig, build_config, field_errors, one_line
from experiments.suite import SUITES, Suite, UnknownRunnable, runnable
from experiments.tracking import ERROR_TAG, EXPERIMENT_TAG, create_parent_run, git_revision
from service.queue import Claim, JobQueue, QueueUnavailable
from service.settings import Settings, settings

log = logging.getLogger("phenolab.jobs")

EXPERIMENT = EXPERIMENT_TAG
KIND = "phenolab.kind"
CONFIG = "phenolab.config"
ATTEMPT = "phenolab.attempt"
WORKER = "phenolab.worker"
HEARTBEAT = "phenolab.heartbeat"
PROGRESS = "phenolab.progress"
STARTED = "phenolab.started"
CANCEL = "phenolab.cancel"
ERROR = ERROR_TAG
REQUEUED = "phenolab.requeued"
REQUEST = "phenolab.request"  # what makes two jobs identical: see `request_key`

CANCELLER = "cancel"  # the claim owner of a cancel; worker slots own theirs by their id
NOT_STARTED = "cancelled before it started"

ACTIVE = ("SCHEDULED", "RUNNING")
MAX_TAG_CHARS = 8000
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class JobError(Exception):
    """A request the job layer refuses; `status` is the HTTP status it maps to. `errors` name
    each offending field with its reason; `field` alone says the message is that field's."""

    status = 400

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or ([{"field": field, "reason": message}] if field else [])
        self.detail = message if field or not errors else f"{message}: {one_line(errors)}"


class NotFound(JobError):
    status = 404


class Conflict(JobError):
    status = 409


class InvalidConfig(JobError):
    status = 422


class Unavailable(JobError):
    status = 503


def finite(value: Any) -> Any:
    """JSON has no NaN/inf (a diverged run logs them): those become strings, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def experiment(name: str) -> catalog.Entry:
    """The catalog entry; NotFound (404) listing the known names."""
    try:
        return catalog.get(name)
    except catalog.UnknownExperiment as error:
        raise NotFound(str(error), field="name") from None


def suite(name: str) -> Suite:
    """The suite's entry; NotFound (404) listing the known suites."""
    if name not in SUITES:
        raise NotFound(f"unknown suite {name!r}; known: {', '.join(SUITES)}", field="name")
    return SUITES[name]


def validate(name: str, body: dict[str, Any], limits: Settings | None = None) -> ExperimentConfig:
    """The config of the experiment (or suite) from a request body: defaults, then `preset`,
    then the fields; refused when the job it describes is over the `limits` (`bounded`)."""
    try:
        entry = runnable(name)
    except UnknownRunnable as error:
        raise NotFound(str(error), field="name") from None
    values = dict(body)
    preset = values.pop("preset", None)
    if preset is None and "preset" in body:  # absent means none; null is no preset's name
        raise InvalidConfig("invalid config", [{"field": "preset", "reason": "a preset's name, "
                                                                            "not null"}])
    try:
        config = build_config(entry.config_cls, preset, values)
    except ValidationError as error:
        raise InvalidConfig("invalid config", field_errors(error, entry.config_cls)) from None
    except ValueError as error:  # the preset, checked before the fields
        raise InvalidConfig("invalid config", [{"field": "preset", "reason": str(error)}]) from None
    if len(config.model_dump_json()) > MAX_TAG_CHARS:
        raise InvalidConfig("invalid config",
                            [{"field": "config", "reason": "too large to record"}])
    return bounded(config, body, limits or settings())


def bounded(config: ExperimentConfig, body: dict[str, Any], limits: Settings) -> ExperimentConfig:
    """The config, unless its job's estimated memory or work (`config.cost()`) is over the
    limits: per-field bounds do not bound a job (8 models of 16 × 8192 units are each within
    theirs). The refusal names the fields the size grows with, those the request set first."""
    cost = config.cost()
    over = [f"over the limit of {limit:,g} {unit} ({variable})"
            for value, limit, unit, variable in (
                (cost.memory_bytes / 2**30, limits.max_job_memory_gb, "GiB of memory",
                 "PHENOLAB_MAX_JOB_MEMORY_GB"),
                (cost.flops / 1e12, limits.max_job_tflops, "TFLOPs", "PHENOLAB_MAX_JOB_TFLOPS"))
            if value > limit]
    if not over:
        return config
    named = [field for field in cost.fields if given(body, field)] or list(cost.fields)
    raise InvalidConfig(f"job too large: it would take {cost.describe()}, {' and '.join(over)}",
                        [{"field": field, "reason": "the job's size grows with it"}
                         for field in named])


def given(body: dict[str, Any], path: str) -> bool:
    """Whether the request set this field (`overrides.sensitivity.epochs` at its depth)."""
    for part in path.split("."):
        if not isinstance(body, dict) or part not in body:
            return False
        body = body[part]
    return True


def set_status(mlflow: MlflowClient, run_id: str, status: str) -> None:
    """`MlflowClient.update_run(run_id, status)` without the whole-run read it does first (tags,
    params, metrics, inputs): one write. A fifth of the cost of submitting a job on SQLite."""
    mlflow._tracking_client.store.update_run_info(
        run_id, RunStatus.from_string(status), end_time=None, run_name=None)


def create(mlflow: MlflowClient, name: str, config: ExperimentConfig, status: str = "SCHEDULED") -> str:
    """The job's record: the experiment's parent run, tagged as a job with its config and
    attempt 1, in `status` (SCHEDULED for the queue; RUNNING for a foreground `phenolab run`)."""
    run_id = create_parent_run(mlflow, name, config, tags={
        KIND: "job", CONFIG: config.model_dump_json(), ATTEMPT: "1",
        REQUEST: request_key(name, config)})
    if status != "RUNNING":  # what MLflow creates a run in
        set_status(mlflow, run_id, status)
    return run_id


def start(mlflow: MlflowClient, run_id: str, worker: str) -> None:
    """A worker slot took the job: who runs it, since when, and status RUNNING."""
    now = str(time.time())
    mlflow.log_batch(run_id, tags=[RunTag(WORKER, worker), RunTag(STARTED, now), RunTag(HEARTBEAT, now)])
    set_status(mlflow, run_id, "RUNNING")


def fail(mlflow: MlflowClient, run_id: str, reason: str) -> None:
    """End a job FAILED with `reason`, e.g. one this worker cannot even start."""
    mlflow.set_tag(run_id, ERROR, reason[:5000])
    mlflow.set_terminated(run_id, "FAILED")


def submit(mlflow: MlflowClient, queue: JobQueue, name: str, body: dict[str, Any],
           limits: Settings | None = None) -> dict[str, Any]:
    """Validate, create the SCHEDULED run (the job record), enqueue its id. With the queue
    down the job is still accepted: its record is kept, and the sweep enqueues it once the
    queue is back (`queued: false` says so; a client retrying would submit it twice).
    A request identical to a FINISHED job (`reusable`) is answered with that job,
    `reused: true`, and records nothing, unless its config says `"reuse": false` (which
    also retrains every model rather than load a finished one of the same training key)."""
    config = validate(name, body, limits)
    if config.reuse and (done := reusable(mlflow, name, config)) is not None:
        return {"id": done.info.run_id, "experiment": name, "status": done.info.status,
                "queued": False, "reused": True}
    run_id = create(mlflow, name, config)
    job = {"id": run_id, "experiment": name, "status": "SCHEDULED", "queued": True, "reused": False}
    try:
        queue.enqueue(run_id, 1)
    except QueueUnavailable as error:
        log.warning("job %s recorded but not queued (%s); the sweep will enqueue it", run_id, error)
        job.update(queued=False, note="the queue is unreachable: the job is recorded and is "
                                      "enqueued when the queue is back")
    return job


def request_key(name: str, config: ExperimentConfig) -> str:
    """The experiment (or suite) and its validated config, hashed: two requests that differ
    only in how they said it (a preset, or its values spelled out) have the same key."""
    return hashlib.sha256(f"{name}\n{config.model_dump_json()}".encode()).hexdigest()


@cache
def code_version() -> str | None:
    """The git revision of the code this process runs (read once: the code it imported does
    not change under it); None when unknown, or not a plain revision name."""
    revision = git_revision()
    return revision if re.fullmatch(r"[\w.+-]{1,100}", revision) and revision != "unknown" else None


def reusable(mlflow: MlflowClient, name: str, config: ExperimentConfig) -> Run | None:
    """The newest FINISHED job of the same request (`request_key`) that ran this process's code
    version (its `git_revision` tag, written where it ran); None when there is none, or when
    the code version is unknown (then nothing says two runs ran the same code)."""
    revision, found = code_version(), mlflow.get_experiment_by_name(name)
    if revision is None or found is None:
        return None
    runs = mlflow.search_runs(
        [found.experiment_id], f"tags.`{KIND}` = 'job' and tags.`{REQUEST}` = "
        f"'{request_key(name, config)}' and tags.git_revision = '{revision}' and "
        "attributes.status = 'FINISHED'", max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def load(mlflow: MlflowClient, run_id: str) -> Run:
    """The job's run; NotFound for anything that is not a phenolab job."""
    if not RUN_ID.match(run_id):
        raise NotFound(f"no job {run_id!r}", field="job_id")
    try:
        run = mlflow.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise NotFound(f"no job {run_id!r}", field="job_id") from None
        raise
    if run.data.tags.get(KIND) != "job" or run.info.lifecycle_stage != "active":
        raise NotFound(f"no job {run_id!r}", field="job_id")
    return run


def _time(millis: int | float | None) -> str | None:
    return None if not millis else datetime.fromtimestamp(millis / 1000, UTC).isoformat()


def _tag_time(run: Run, key: str) -> str | None:
    value = run.data.tags.get(key)
    return _time(float(value) * 1000) if value else None


def progress(run: Run) -> dict[str, Any] | None:
    raw = run.data.tags.get(PROGRESS)
    return json.loads(raw) if raw else None


def attempt_of(run: Run) -> int:
    return int(run.data.tags.get(ATTEMPT, 1))


def summary(run: Run) -> dict[str, Any]:
    """What a job list shows for one job."""
    tags = run.data.tags
    return {
        "id": run.info.run_id,
        "experiment": tags.get(EXPERIMENT),
        "status": run.info.status,
        "submitted": _time(run.info.start_time),
        "ended": _time(run.info.end_time) if run.info.status not in ACTIVE else None,
        "progress": progress(run),
        "error": tags.get(ERROR),
    }


def children(mlflow: MlflowClient, run: Run) -> list[Run]:
    return mlflow.search_runs(
        [run.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run.info.run_id}'",
        max_results=1000, order_by=["attributes.start_time ASC"])


def detail(mlflow: MlflowClient, run: Run) -> dict[str, Any]:
    """Everything `GET /jobs/{id}` shows: status, progress, times, error, metrics, children."""
    tags = run.data.tags
    return {
        **summary(run),
        "config": json.loads(tags[CONFIG]) if CONFIG in tags else None,
        "attempt": attempt_of(run),
        "worker": tags.get(WORKER),
        "started": _tag_time(run, STARTED),
        "heartbeat": _tag_time(run, HEARTBEAT),
        "cancel_requested": _tag_time(run, CANCEL),
        "requeued": tags.get(REQUEUED),
        "metrics": run.data.metrics,
        "children": [{"id": child.info.run_id, "name": child.info.run_name,
                      "status": child.info.status, "metrics": child.data.metrics}
                     for child in children(mlflow, run)],
        "experiment_id": run.info.experiment_id,
    }


def search(mlflow: MlflowClient, status: str | None = None, experiment: str | None = None,
           limit: int = 50, page_token: str | None = None,
           oldest_first: bool = False) -> tuple[list[Run], str | None]:
    """Jobs, newest first (or oldest first), optionally of one status and/or one experiment;
    paginated."""
    if experiment is not None:
        if experiment not in catalog.entries() and experiment not in SUITES:
            raise NotFound(str(UnknownRunnable(experiment)), field="experiment")
        found = mlflow.get_experiment_by_name(experiment)
        ids = [found.experiment_id] if found else []
    else:
        ids = [e.experiment_id for e in mlflow.search_experiments(max_results=1000)]
    check_page_token(page_token)
    if not ids:
        return [], None
    query = f"tags.`{KIND}` = 'job'"
    if status is not None:
        query += f" and attributes.status = '{status}'"
    page = mlflow.search_runs(ids, query, max_results=limit, page_token=page_token,
                              order_by=[f"attributes.start_time {'ASC' if oldest_first else 'DESC'}"])
    return list(page), page.token


def check_page_token(token: str | None) -> None:
    """A 400 naming `page_token` for a token MLflow's parser refuses or decodes to an offset no
    store can use (else a hand-made token fails deep in the store, as a 5xx)."""
    if not token:
        return
    try:
        offset = SearchUtils.parse_start_offset_from_page_token(token)
    except Exception as error:
        reason = error.message if isinstance(error, MlflowException) else str(error)
        raise JobError(f"bad page_token: {reason}", field="page_token") from None
    if not 0 <= offset < 2**62:
        raise JobError(f"bad page_token: offset {offset} out of range", field="page_token")


def kill(mlflow: MlflowClient, run_id: str, reason: str, worker: str | None = None) -> None:
    """End a job KILLED that no slot runs: the caller holds its claim (`worker`, the slot's
    id, when a slot claimed it and found the cancel request)."""
    tags = [RunTag(ERROR, reason)] + ([RunTag(WORKER, worker)] if worker else [])
    mlflow.log_batch(run_id, tags=tags)
    mlflow.set_terminated(run_id, "KILLED")


def cancel(mlflow: MlflowClient, queue: JobQueue, run_id: str) -> dict[str, Any]:
    """Cancel a job, and say honestly what happens to it: a SCHEDULED job whose claim the
    cancel wins ends KILLED now and never starts; one a slot took (or is taking) is flagged,
    and stops at its next progress report, ending KILLED — or FINISHED / FAILED if it ends
    first. 503 when the queue cannot be asked (the request is recorded all the same)."""
    run = load(mlflow, run_id)
    if run.info.status not in ACTIVE:
        raise Conflict(f"job {run_id} already ended {run.info.status}", field="job_id")
    mlflow.set_tag(run_id, CANCEL, str(time.time()))
    if run.info.status == "SCHEDULED":
        try:
            holder = queue.claim(run_id, attempt_of(run), CANCELLER)
        except QueueUnavailable as error:
            raise Unavailable(f"the queue is unreachable ({error}): the cancel is recorded and "
                              "takes effect, but whether the job had started is unknown",
                              field="job_id") from None
        if holder.owner == CANCELLER:
            kill(mlflow, run_id, NOT_STARTED)
            return {"status": "KILLED", "started": False, "ends_as": ["KILLED"],
                    "note": "cancelled before it started: it never runs"}
    return {"status": "RUNNING", "started": True, "ends_as": ["KILLED", "FINISHED", "FAILED"],
            "note": "a worker had taken it: it stops at its next progress report and ends "
                    "KILLED, unless it finishes (or fails) first"}


def end_children(mlflow: MlflowClient, run: Run, discard: bool = True) -> None:
    """End the child runs of an attempt that will not finish FAILED; discarded (soft delete)
    when the job runs again, kept when this attempt was its last (how far it got). A suite's
    children are experiments' runs: their own children go the same way."""
    for child in children(mlflow, run):
        end_children(mlflow, child, discard)
        if child.info.status in ACTIVE:
            mlflow.set_terminated(child.info.run_id, "FAILED")
        if discard:
            mlflow.delete_run(child.info.run_id)


def requeue(mlflow: MlflowClient, queue: JobQueue, run: Run, reason: str, max_attempts: int,
            count: bool = True) -> str:
    """Put a job whose attempt was lost back in the queue, or end it FAILED with `reason` when
    it has had `max_attempts` runs. `count=False` re-runs the same attempt (graceful worker
    shutdown: the caller holds its claim, released here). Returns the new status."""
    run_id = run.info.run_id
    attempt = attempt_of(run)
    last = count and attempt >= max_attempts
    end_children(mlflow, run, discard=not last)
    if last:
        mlflow.set_tag(run_id, ERROR, f"{reason}; gave up after {attempt} attempt(s)")
        mlflow.set_terminated(run_id, "FAILED")
        log.warning("job %s FAILED: %s", run_id, reason)
        return "FAILED"
    attempt += count
    for stale in (ERROR, PROGRESS):  # of the attempt that was lost
        if stale in run.data.tags:
            mlflow.delete_tag(run_id, stale)
    mlflow.log_batch(run_id, tags=[RunTag(ATTEMPT, str(attempt)), RunTag(HEARTBEAT, str(time.time())),
                                   RunTag(REQUEUED, f"{reason} (attempt {attempt})")])
    set_status(mlflow, run_id, "SCHEDULED")
    if not count:
        queue.release(run_id, attempt)
    queue.enqueue(run_id, attempt)
    log.warning("job %s re-queued (attempt %d): %s", run_id, attempt, reason)
    return "SCHEDULED"


def last_sign_of_life(run: Run) -> float:
    """The job's last heartbeat (seconds), or when it was created if it never had one."""
    beat = run.data.tags.get(HEARTBEAT)
    return float(beat) if beat else run.info.start_time / 1000


def sweep(mlflow: MlflowClient, queue: JobQueue, settings: Settings) -> dict[str, int]:
    """Recover lost jobs: RUNNING with a stale heartbeat and no report from its slot to the
    queue either → re-queued once, then FAILED with the reason; SCHEDULED for long (`settle`)
    → enqueued again when it is unclaimed and missing from the queue (lost between create and
    enqueue). Run by the API, one process, so two sweeps never race. Oldest first: lost jobs
    are old ones, and more than 1,000 may be queued behind them."""
    now = time.time()
    counts = {"requeued": 0, "failed": 0, "enqueued": 0, "killed": 0}
    running, _ = search(mlflow, status="RUNNING", limit=1000, oldest_first=True)
    reporting = slots_reporting(queue, settings.stale_seconds) if running else {}
    for run in running:
        idle = now - last_sign_of_life(run)
        if idle > settings.stale_seconds and reporting.get(run.info.run_id) != run.data.tags.get(WORKER):
            reason = (f"worker {run.data.tags.get(WORKER, '?')} lost: no heartbeat for "
                      f"{idle:.0f} s")
            status = requeue(mlflow, queue, run, reason, settings.max_attempts)
            counts["requeued" if status == "SCHEDULED" else "failed"] += 1
    scheduled, _ = search(mlflow, status="SCHEDULED", limit=1000, oldest_first=True)
    old = [run for run in scheduled if now - last_sign_of_life(run) > settings.stale_seconds]
    if old:
        queued = queue.pending_run_ids()
        for run in old:
            if outcome := settle(mlflow, queue, run, queued, settings):
                counts[outcome] += 1
    return counts


def slots_reporting(queue: JobQueue, within: float) -> dict[str, str]:
    """job id → the slot that reported running it to the queue in the last `within` seconds:
    a slot alive whose heartbeats to the store fail (or lag) must not see its job re-queued
    and run a second time elsewhere. Empty when the queue cannot be asked."""
    try:
        return {info["job"]: info["id"] for info in queue.workers(within) if info.get("job")}
    except QueueUnavailable:
        return {}


def settle(mlflow: MlflowClient, queue: JobQueue, run: Run, queued: set[str],
           settings: Settings) -> str | None:
    """What a long-SCHEDULED job needs, by its claim: none and no message → enqueued (or
    KILLED when a cancel was asked for); the cancel's → KILLED (its API died before writing
    it); a slot's, held past the stale time → that slot was lost before it wrote RUNNING, so
    re-queued. Returns the `sweep` count it adds to, if any."""
    run_id, attempt = run.info.run_id, attempt_of(run)
    holder: Claim | None = queue.claimed(run_id, attempt)
    if holder is None and CANCEL in run.data.tags:
        holder = queue.claim(run_id, attempt, CANCELLER)
    if holder is None:
        if run_id in queued:
            return None
        queue.enqueue(run_id, attempt)
        return "enqueued"
    if holder.owner == CANCELLER:
        kill(mlflow, run_id, NOT_STARTED)
        return "killed"
    if time.time() - holder.at > settings.stale_seconds:
        status = requeue(mlflow, queue, run, f"worker {holder.owner} lost before the job started",
                         settings.max_attempts)
        return "requeued" if status == "SCHEDULED" else "failed"
    return None
