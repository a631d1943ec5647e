"""The REST API (FastAPI): submit experiments, follow and cancel jobs, read the catalog.

Never imports torch: configs are validated with the torch-free config classes, jobs are MLflow
runs plus queue messages (`service.jobs`). The OpenAPI page is at /docs. One process per
deployment: it also runs the sweep that recovers jobs whose worker was lost.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mlflow.exceptions import MlflowException
from starlette.exceptions import HTTPException

from experiments import catalog
from experiments.tracking import client
from service import jobs
from service.queue import JobQueue
from service.settings import Settings, settings

log = logging.getLogger("phenolab.api")
Status = Literal["SCHEDULED", "RUNNING", "FINISHED", "FAILED", "KILLED"]


class Lab:
    """What the routes share: settings, the MLflow client, the queue."""

    def __init__(self, s: Settings) -> None:
        self.settings = s
        self.mlflow = client(s.tracking_uri)
        self.queue = JobQueue(s)
        self._experiment_ids: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        if name not in self._experiment_ids:
            self._experiment_ids[name] = self.mlflow.get_experiment_by_name(name).experiment_id
        return self._experiment_ids[name]

    def sweep_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.sweep_seconds):
            try:
                counts = jobs.sweep(self.mlflow, self.queue, self.settings)
                if any(counts.values()):
                    log.warning("sweep: %s", counts)
            except Exception as error:  # the store may be down for a while; try again later
                log.warning("sweep failed: %s", error)


def lab(request: Request) -> Lab:
    return request.app.state.lab


def reply(error: jobs.JobError, status: int) -> JSONResponse:
    """Every error reply: `detail` (one line) and `errors` ([{field, reason}])."""
    return JSONResponse({"detail": error.detail, "errors": error.errors}, status_code=status)


def error_body(status: int, message: str, errors: list[dict[str, str]] | None = None,
               field: str | None = None) -> JSONResponse:
    return reply(jobs.JobError(message, errors, field), status)


class Unauthorized(jobs.JobError):
    status = 401


bearer = HTTPBearer(auto_error=False, description="PHENOLAB_API_TOKEN, when the server sets one")


def require_token(request: Request,
                  credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    token = lab(request).settings.api_token
    if not token:
        return
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(),
                                                      token.encode()):
        raise Unauthorized("wrong bearer token" if credentials else
                           "this server needs 'Authorization: Bearer <PHENOLAB_API_TOKEN>'",
                           field="Authorization")


routes = APIRouter(dependencies=[Depends(require_token)])


def links(request: Request, lab_: Lab, run_id: str, experiment_id: str | None) -> dict[str, str]:
    """The job's URLs: under PHENOLAB_API_URL when set (behind a proxy), else as requested."""
    base = (lab_.settings.api_url or str(request.base_url)).rstrip("/")
    found = {"self": f"{base}/jobs/{run_id}", "cancel": f"{base}/jobs/{run_id}/cancel"}
    if experiment_id is not None:
        found["mlflow"] = lab_.settings.run_link(experiment_id, run_id)
    return found


@routes.get("/experiments", summary="The catalog: every experiment with its config schema")
def list_experiments() -> list[dict[str, Any]]:
    return [entry.describe() for entry in catalog.entries().values()]


@routes.get("/experiments/{name}", summary="One experiment: description, schema, presets")
def get_experiment(name: str) -> dict[str, Any]:
    return jobs.experiment(name).describe()


SUBMIT_BODY = {"required": False, "content": {"application/json": {
    "schema": {"type": "object", "additionalProperties": True},
    "example": {"preset": "quick", "epochs": 50}}}}


@routes.post("/experiments/{name}", status_code=202, summary="Submit a job",
             openapi_extra={"requestBody": SUBMIT_BODY},
             description="The body is the experiment's config (see `GET /experiments/{name}` for "
                         "its JSON Schema); every field is optional and defaults apply. "
                         "`preset` picks a named preset first. Returns the job id (the MLflow "
                         "run id); the job runs when a worker is free.")
async def submit(name: str, request: Request) -> dict[str, Any]:
    lab_ = lab(request)
    jobs.experiment(name)  # an unknown name is a 404 whatever the body
    raw = await request.body()
    try:
        config = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as error:
        raise jobs.InvalidConfig("invalid request", [
            {"field": "body", "reason": f"not JSON: {error}"}]) from None
    if not isinstance(config, dict):
        raise jobs.InvalidConfig("invalid request", [
            {"field": "body", "reason": f"expected a JSON object, got {type(config).__name__}"}])
    def record() -> tuple[dict[str, Any], str]:  # store calls, off the event loop
        return jobs.submit(lab_.mlflow, lab_.queue, name, config), lab_.experiment_id(name)

    job, experiment_id = await asyncio.to_thread(record)
    return {**job, "links": links(request, lab_, job["id"], experiment_id)}


@routes.get("/jobs", summary="Jobs, newest first")
def list_jobs(request: Request, status: Status | None = None, experiment: str | None = None,
              limit: int = Query(50, ge=1, le=1000),
              page_token: str | None = Query(None, max_length=2000)) -> dict[str, Any]:
    lab_ = lab(request)
    runs, token = jobs.search(lab_.mlflow, status, experiment, limit, page_token)
    return jobs.finite({"jobs": [{**jobs.summary(run),
                             "links": links(request, lab_, run.info.run_id, run.info.experiment_id)}
                            for run in runs],
                   "next_page_token": token})


@routes.get("/jobs/{job_id}", summary="One job: status, progress, metrics, child runs")
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    lab_ = lab(request)
    run = jobs.load(lab_.mlflow, job_id)
    return jobs.finite({**jobs.detail(lab_.mlflow, run),
                   "links": links(request, lab_, job_id, run.info.experiment_id)})


@routes.post("/jobs/{job_id}/cancel", status_code=202, summary="Cancel a queued or running job",
             description="The answer says which happened: `started: false` — the job was "
                         "cancelled before any worker took it, it is KILLED now and never runs; "
                         "`started: true` — a worker had taken it, it stops at its next progress "
                         "report and ends KILLED (or FINISHED / FAILED if it ends first). "
                         "`ends_as` lists the final states it can still reach. 409 if it already "
                         "ended; 503 if the queue could not be asked (the cancel is recorded and "
                         "takes effect).")
def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    lab_ = lab(request)
    outcome = jobs.cancel(lab_.mlflow, lab_.queue, job_id)
    return {"id": job_id, **outcome, "links": links(request, lab_, job_id, None)}


def healthz(request: Request) -> JSONResponse:
    """API up; queue and tracking store reachable; worker slots seen recently. 503 when the
    queue or the store is unreachable (no workers is reported, not an error)."""
    lab_ = lab(request)
    body: dict[str, Any] = {"api": "ok"}
    ok = True
    try:
        body["queue"] = {"ok": True, "backend": lab_.queue.backend, "pending": lab_.queue.size()}
        workers = lab_.queue.workers(within=3 * lab_.settings.heartbeat_seconds + 5)
        body["workers"] = {"seen": len(workers), "slots": workers}
    except Exception as error:
        ok, body["queue"] = False, {"ok": False, "error": str(error)}
    try:
        lab_.mlflow.search_experiments(max_results=1)
        body["store"] = {"ok": True}
    except Exception as error:
        ok, body["store"] = False, {"ok": False, "error": str(error)}
    body["status"] = "ok" if ok else "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, declared or streamed."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await error_body(400, "bad Content-Length",
                                        field="Content-Length")(scope, receive, send)
            if int(declared) > self.limit:
                return await self.too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self.too_large(scope, receive, send)
        body: bytes | None = b"".join(chunks)

        async def replay() -> dict:
            """The buffered body once, then the server's own messages (a disconnect)."""
            nonlocal body
            if body is None:
                return await receive()
            message, body = {"type": "http.request", "body": body, "more_body": False}, None
            return message

        return await self.app(scope, replay, send)

    async def too_large(self, scope: dict, receive: Callable, send: Callable) -> None:
        await error_body(413, f"request body over {self.limit} bytes",
                         field="body")(scope, receive, send)


def create_app(s: Settings | None = None) -> FastAPI:
    s = s or settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lab = Lab(s)
        stop = threading.Event()
        sweeper = threading.Thread(target=app.state.lab.sweep_forever, args=(stop,),
                                   name="sweep", daemon=True)
        sweeper.start()
        yield
        stop.set()
        await asyncio.to_thread(sweeper.join, 5)

    app = FastAPI(title="Phenolab", lifespan=lifespan,
                  description="Submit deep-learning phenomena experiments; follow them as jobs "
                              "(MLflow runs). Bearer token required when PHENOLAB_API_TOKEN is set.")
    app.include_router(routes)
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Health of API, queue, store")
    app.add_middleware(BodyLimit, limit=s.max_body_bytes)

    @app.exception_handler(jobs.JobError)
    async def job_error(request: Request, error: jobs.JobError) -> JSONResponse:
        response = reply(error, error.status)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(part) for part in e["loc"][1:]) or str(e["loc"][0]),
                   "reason": e["msg"]} for e in error.errors()]
        return error_body(422, "invalid request", errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        """Starlette's own 4xx (no such route, method not allowed) in the same shape."""
        field = "method" if error.status_code == 405 else "path"
        response = error_body(error.status_code, str(error.detail), field=field)
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(MlflowException)
    async def store_error(request: Request, error: MlflowException) -> JSONResponse:
        log.warning("tracking store error: %s", error)
        return error_body(503, f"tracking store error: {error.message}")

    return app


app = create_app()
