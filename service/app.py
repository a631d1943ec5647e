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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mlflow.exceptions import MlflowException
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from experiments import catalog
from experiments.suite import SUITES
from experiments.tracking import client
from service import jobs, report, schemas
from service.queue import JobQueue
from service.settings import Settings, settings

log = logging.getLogger("phenolab.api")
ERROR_MEANINGS = {
    400: "a parameter that cannot be used (`page_token`, `Content-Length`)",
    401: "no bearer token, or the wrong one",
    404: "no such experiment or job",
    409: "the job already ended (a cancel), or has not ended yet (a report)",
    413: "the request body is over PHENOLAB_MAX_BODY_BYTES",
    422: "invalid request: each bad field with its reason (a job over the size limits names "
         "the fields its size grows with)",
    503: "the tracking store or the queue is unreachable",
}


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


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these error statuses: each an ErrorReply."""
    return {status: {"model": schemas.ErrorReply, "description": ERROR_MEANINGS[status]}
            for status in statuses}


routes = APIRouter()  # everything but /healthz and the docs: behind the token, when one is set


def links(request: Request, lab_: Lab, run_id: str, experiment_id: str | None) -> dict[str, str]:
    """The job's URLs: under PHENOLAB_API_URL when set (behind a proxy), else as requested."""
    base = (lab_.settings.api_url or str(request.base_url)).rstrip("/")
    found = {"self": f"{base}/jobs/{run_id}", "cancel": f"{base}/jobs/{run_id}/cancel"}
    if experiment_id is not None:
        found["mlflow"] = lab_.settings.run_link(experiment_id, run_id)
    return found


@routes.get("/experiments", summary="The catalog: every experiment with its config schema",
            response_model=list[schemas.Experiment])
def list_experiments() -> list[dict[str, Any]]:
    return [entry.describe() for entry in catalog.entries().values()]


def config_body(entry: catalog.Entry) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI request body of a submit of `entry`: its config's JSON Schema (every field
    optional, nothing else allowed) plus `preset`; and the schemas it refers to, for
    `components` (named `<experiment>.<Model>`, so that two experiments never clash)."""
    schema = entry.config_cls.model_json_schema(
        ref_template=f"#/components/schemas/{entry.name}.{{model}}")
    refs = {f"{entry.name}.{name}": sub for name, sub in schema.pop("$defs", {}).items()}
    schema["properties"]["preset"] = {
        "type": "string", "enum": list(entry.presets),
        "description": "a named preset, applied before the other fields"}
    body = {"required": False, "content": {"application/json": {
        "schema": schema, "example": {"preset": "quick"} if "quick" in entry.presets else {}}}}
    return body, refs


async def submit(name: str, request: Request, response: Response) -> dict[str, Any]:
    """Validate the body as the experiment's (or suite's) config and record + enqueue the job:
    202; or 200 with the FINISHED job it is identical to (`reused: true`)."""
    lab_ = lab(request)
    raw = await request.body()
    try:
        config = json.loads(raw) if raw else {}  # no body: the defaults; blanks are no JSON
    except (ValueError, RecursionError) as error:
        raise jobs.InvalidConfig("invalid request", [
            {"field": "body", "reason": f"not JSON: {error}"}]) from None
    if not isinstance(config, dict):
        raise jobs.InvalidConfig("invalid request", [
            {"field": "body", "reason": f"expected a JSON object, got {type(config).__name__}"}])

    def record() -> tuple[dict[str, Any], str]:  # store calls, off the event loop
        return (jobs.submit(lab_.mlflow, lab_.queue, name, config, lab_.settings),
                lab_.experiment_id(name))

    job, experiment_id = await asyncio.to_thread(record)
    if job["reused"]:
        response.status_code = 200
    return {**job, "links": links(request, lab_, job["id"], experiment_id)}


def submitter(name: str) -> Callable[[Request, Response], Awaitable[dict[str, Any]]]:
    async def submit_experiment(request: Request, response: Response) -> dict[str, Any]:
        return await submit(name, request, response)

    return submit_experiment


def describer(lookup: Callable[[str], Any], name: str) -> Callable[[], dict[str, Any]]:
    def describe() -> dict[str, Any]:
        return lookup(name).describe()

    return describe


def unknown(lookup: Callable[[str], Any]) -> Callable[[str], None]:
    def refuse(name: str) -> None:
        lookup(name)  # no such name: 404, listing the known ones

    return refuse


REUSED = {200: {"model": schemas.Submitted, "description": (
    "an identical job (same experiment, config once validated, code version) already FINISHED: "
    "that job, `reused: true`; `\"reuse\": false` in the body runs it again")}}


SUBMITS = {
    "experiments": "The body is the config; every field is optional and defaults apply; "
                   "`preset` picks a named preset first. Returns the job id (the MLflow run id); "
                   "the job runs when a worker is free.",
    "suites": "The body is the suite's config; every field is optional. One job: each "
              "experiment runs as a nested run of the job's MLflow run (its variants under it); "
              "one that fails is recorded FAILED and the next one runs. `experiments` picks a "
              "subset, `preset` applies to each, `overrides` sets fields per experiment; 422 "
              "names each bad field (`experiments.2`, `overrides.sensitivity.epochs`).",
}


def add_routes(router: APIRouter, kind: str, entries: Iterable[Any], model: type[BaseModel],
               lookup: Callable[[str], Any]) -> dict[str, Any]:
    """Each experiment's (or suite's) own GET and submit routes under `/{kind}/`, the submit
    declaring that config as its body (a body that fits one is no body of another), then the
    routes of any other name (404, listing the known ones; not in the document, which lists
    each one's own path); returns the schemas the bodies refer to."""
    refs: dict[str, Any] = {}
    for entry in entries:
        body, entry_refs = config_body(entry)
        refs.update(entry_refs)
        path = f"/{kind}/{entry.name}"
        router.add_api_route(path, describer(lookup, entry.name), methods=["GET"],
                             response_model=model, operation_id=f"get-{entry.name}",
                             summary=f"{entry.name}: description, config schema, presets")
        router.add_api_route(
            path, submitter(entry.name), methods=["POST"], status_code=202,
            response_model=schemas.Submitted, responses={**REUSED, **errors(400, 413, 422, 503)},
            summary=f"Submit a {entry.name} job", operation_id=f"submit-{entry.name}",
            openapi_extra={"requestBody": body}, description=f"{entry.title}. {SUBMITS[kind]}")
    router.add_api_route(f"/{kind}/{{name}}", unknown(lookup), methods=["GET", "POST"],
                         include_in_schema=False)
    return refs


CONFIG_SCHEMAS = {
    **add_routes(routes, "experiments", catalog.entries().values(), schemas.Experiment,
                 jobs.experiment),
    **add_routes(routes, "suites", SUITES.values(), schemas.Suite, jobs.suite)}


@routes.get("/suites", summary="The suites: experiments run together as one job",
            response_model=list[schemas.Suite])
def list_suites() -> list[dict[str, Any]]:
    return [entry.describe() for entry in SUITES.values()]


JOB_ID = Path(json_schema_extra={"pattern": jobs.RUN_ID.pattern},
              description="the job id (an MLflow run id); any other string is a 404")


@routes.get("/jobs", summary="Jobs, newest first", response_model=schemas.JobPage,
            responses=errors(400, 404, 422, 503))
def list_jobs(request: Request, status: schemas.Status | None = None,
              experiment: str | None = None, limit: int = Query(50, ge=1, le=1000),
              page_token: str | None = Query(None, max_length=2000)) -> dict[str, Any]:
    lab_ = lab(request)
    runs, token = jobs.search(lab_.mlflow, status, experiment, limit, page_token)
    return jobs.finite({"jobs": [{**jobs.summary(run),
                             "links": links(request, lab_, run.info.run_id, run.info.experiment_id)}
                            for run in runs],
                   "next_page_token": token})


@routes.get("/jobs/{job_id}", summary="One job: status, progress, metrics, child runs",
            response_model=schemas.JobDetail, responses=errors(404, 503))
def get_job(request: Request, job_id: str = JOB_ID) -> dict[str, Any]:
    lab_ = lab(request)
    run = jobs.load(lab_.mlflow, job_id)
    return jobs.finite({**jobs.detail(lab_.mlflow, run),
                   "links": links(request, lab_, job_id, run.info.experiment_id)})


@routes.get("/jobs/{job_id}/report", response_class=HTMLResponse, responses=errors(404, 409, 503),
            summary="The job's HTML report: one self-contained file",
            description="Per homework part and experiment: the figures (embedded), the variants' "
                        "key numbers, the findings with their verdicts, the config, the "
                        "environment, run times and links into the MLflow UI. 409 while the job "
                        "is queued or running.")
def job_report(request: Request, job_id: str = JOB_ID) -> HTMLResponse:
    lab_ = lab(request)
    run = jobs.load(lab_.mlflow, job_id)
    if run.info.status in jobs.ACTIVE:
        raise jobs.Conflict(f"job {job_id} is {run.info.status}: its report comes when it ends",
                            field="job_id")
    return HTMLResponse(report.stored(lab_.mlflow, job_id)
                        or report.build(lab_.mlflow, job_id, lab_.settings))


@routes.post("/jobs/{job_id}/cancel", status_code=202, summary="Cancel a queued or running job",
             response_model=schemas.Cancelled, responses=errors(404, 409, 503),
             description="The answer says which happened: `started: false` — the job was "
                         "cancelled before any worker took it, it is KILLED now and never runs; "
                         "`started: true` — a worker had taken it, it stops at its next progress "
                         "report and ends KILLED (or FINISHED / FAILED if it ends first). "
                         "`ends_as` lists the final states it can still reach. 503: the queue "
                         "could not be asked; the cancel is recorded and takes effect.")
def cancel_job(request: Request, job_id: str = JOB_ID) -> dict[str, Any]:
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
    guarded = {"dependencies": [Depends(require_token)], "responses": errors(401)}
    app.include_router(routes, **(guarded if s.api_token else {}))
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Health of API, queue, store",
                      response_model=schemas.Health,
                      responses={503: {"model": schemas.Health, "description": "unavailable"}})
    app.openapi = lambda: openapi(app)
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
        if error.status_code == 405:  # Starlette names the methods of the first route only
            response.headers["Allow"] = allowed_methods(request)
        return response

    @app.exception_handler(MlflowException)
    async def store_error(request: Request, error: MlflowException) -> JSONResponse:
        log.warning("tracking store error: %s", error)
        return error_body(503, f"tracking store error: {error.message}")

    return app


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (an experiment's path has a GET route and a
    POST route)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


FASTAPI_422 = "#/components/schemas/HTTPValidationError"
ERROR_REPLY = "#/components/schemas/ErrorReply"
NOT_SCHEMAS = ("default", "example", "examples", "enum")  # values, not schemas: left as they are


def openapi_30(node: Any) -> Any:
    """A JSON Schema (2020-12, as pydantic and FastAPI write them) in OpenAPI 3.0's dialect.
    The document is 3.0 because there `integer` is a JSON number without a fraction, which is
    what the strict configs take: in 3.1 (JSON Schema 2020-12) `20.0` is an integer too."""
    if isinstance(node, list):
        return [openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: value if key in NOT_SCHEMAS else openapi_30(value) for key, value in node.items()}
    members = node.get("anyOf")
    if members and {"type": "null"} in members:
        rest = [member for member in node.pop("anyOf") if member != {"type": "null"}]
        node.update(rest[0] if len(rest) == 1 and "$ref" not in rest[0]
                    else {"anyOf" if len(rest) > 1 else "allOf": rest})
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "prefixItems" in node:  # a tuple: in 3.0, a list of fixed length
        items = node.pop("prefixItems")
        node["items"] = items[0] if all(item == items[0] for item in items) else {"anyOf": items}
        node.update(minItems=len(items), maxItems=len(items))
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if not isinstance(node.get(exclusive, True), bool):
            node[bound], node[exclusive] = node[exclusive], True
    if isinstance(node.get("examples"), list) and node["examples"]:
        node["example"] = node.pop("examples")[0]
    return node


def errors_as_json(operation: dict[str, Any]) -> None:
    """FastAPI files an error reply under the route's own media type (text/html for a report);
    an ErrorReply is JSON whatever the route."""
    for answer in operation["responses"].values():
        content = answer.get("content", {})
        for media in [media for media in content if media != "application/json"]:
            if content[media].get("schema", {}).get("$ref") == ERROR_REPLY:
                content["application/json"] = content.pop(media)


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the schemas the config bodies refer to, without FastAPI's own
    422 model: a route that can answer 422 declares the project's ErrorReply; the 422 FastAPI
    adds to every route with a parameter is dropped where no parameter can fail (a str path)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, openapi_version="3.0.3",
                               description=app.description, routes=app.routes)
        for operation in (op for path in document["paths"].values() for op in path.values()):
            answer = operation["responses"].get("422", {})
            if answer.get("content", {}).get("application/json", {}).get("schema", {}).get(
                    "$ref") == FASTAPI_422:
                del operation["responses"]["422"]
            errors_as_json(operation)
        found = document.setdefault("components", {}).setdefault("schemas", {})
        found.update(CONFIG_SCHEMAS)
        for unused in ("HTTPValidationError", "ValidationError"):
            found.pop(unused, None)
        app.openapi_schema = openapi_30(document)
    return app.openapi_schema


app = create_app()
