"""The API's request and reply bodies as pydantic models: what the OpenAPI document declares and
what the routes' replies are checked against. No torch, no MLflow here.

Every error reply, whatever raised it (a route, request validation, the body limit, Starlette's
own 404/405), is an `ErrorReply`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["SCHEDULED", "RUNNING", "FINISHED", "FAILED", "KILLED"]
Number = float | str  # a metric; NaN and infinities are strings ("nan", "inf"), as JSON has none


class FieldError(BaseModel):
    field: str = Field(description="the offending field, path or header, e.g. `models.0.1`")
    reason: str


class ErrorReply(BaseModel):
    """Every 4xx/5xx reply: one line, and the reason per field."""

    detail: str = Field(description="one line: the message and each field's reason")
    errors: list[FieldError]


class Links(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self", description="the job (GET)")
    cancel: str = Field(description="POST here to cancel it")
    mlflow: str | None = Field(None, description="the run in the MLflow UI")


class Progress(BaseModel):
    variant: str
    variant_index: int
    variant_count: int
    done: int
    total: int
    info: dict[str, Number]
    fraction: float = Field(description="of the whole job, in [0, 1]")
    experiment: str | None = Field(None, description="a suite's job: the experiment running")
    experiment_index: int | None = Field(None, description="a suite's job: its index, from 0")
    experiment_count: int | None = Field(None, description="a suite's job: how many it runs")


class JobSummary(BaseModel):
    id: str
    experiment: str | None
    status: Status
    submitted: str | None = Field(description="ISO 8601, UTC")
    ended: str | None
    progress: Progress | None
    error: str | None
    links: Links


class ChildRun(BaseModel):
    id: str
    name: str | None
    status: Status
    metrics: dict[str, Number]


class JobDetail(JobSummary):
    config: dict[str, Any] | None = Field(description="the validated config it runs")
    attempt: int
    worker: str | None = Field(description="the worker slot that took it")
    started: str | None
    heartbeat: str | None
    cancel_requested: str | None
    requeued: str | None = Field(description="why it was re-queued, if it was")
    metrics: dict[str, Number]
    children: list[ChildRun]
    experiment_id: str


class JobPage(BaseModel):
    jobs: list[JobSummary]
    next_page_token: str | None = Field(description="pass it as `page_token` for the next page")


class Submitted(BaseModel):
    id: str = Field(description="the job id: its MLflow run id")
    experiment: str
    status: Literal["SCHEDULED", "FINISHED"] = Field(description="FINISHED: a job reused")
    queued: bool = Field(description="false: the queue was down; the job is kept and enqueued "
                                     "by the sweep when it is back (or: a job reused)")
    reused: bool = Field(description="an identical job had FINISHED: this is that job")
    note: str | None = None
    links: Links


class Cancelled(BaseModel):
    id: str
    status: Literal["KILLED", "RUNNING"] = Field(
        description="KILLED: cancelled before any worker took it; RUNNING: a worker had")
    started: bool = Field(description="whether a worker had taken the job")
    ends_as: list[Status] = Field(description="the final states the job can still reach")
    note: str
    links: Links


class Experiment(BaseModel):
    """One catalog entry (`phenolab list --json` shows the same); the catalog may add keys."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    title: str
    description: str
    defaults: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    schema_: dict[str, Any] = Field(alias="schema", description="the config's JSON Schema")


class Part(BaseModel):
    label: str
    title: str
    experiments: list[str]


class Suite(Experiment):
    """Experiments run together as one job, in the parts of their homework."""

    parts: list[Part]


class Health(BaseModel):
    """200 when the queue and the store answer, else 503 with the same body."""

    status: Literal["ok", "unavailable"]
    api: Literal["ok"]
    queue: dict[str, Any] = Field(description="ok, backend, pending; or ok: false and the error")
    store: dict[str, Any] = Field(description="ok; or ok: false and the error")
    workers: dict[str, Any] | None = Field(None, description="slots seen recently")
