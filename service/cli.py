"""`phenolab`: run experiments in the foreground, list the catalog, open the MLflow UI; serve the
lab (API + workers + UI), or one part of it; submit jobs to a running lab."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from experiments import catalog
from experiments.core.config import build_config, field_errors, one_line
from experiments.stores import home
from experiments.suite import SUITES, runnable
from service.settings import Settings, settings

EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 3, "WAITING": 4}


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON when they parse as JSON (numbers, lists, true),
    else plain strings. A dotted key sets a nested field: `overrides.sensitivity.epochs=2`."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected key=value")
        *outer, last = key.split(".")
        place = values
        for part in outer:
            place = place.setdefault(part, {})
            if not isinstance(place, dict):
                raise UsageError(f"--set {pair!r}: {part} is set to a value, not fields")
        try:
            place[last] = json.loads(raw)
        except json.JSONDecodeError:
            place[last] = raw
    return values


def make_config(name: str, preset: str | None, sets: Sequence[str]):
    try:
        entry = runnable(name)
    except catalog.UnknownExperiment as error:
        raise UsageError(str(error)) from None
    try:
        return build_config(entry.config_cls, preset, parse_sets(sets))
    except ValidationError as error:
        raise UsageError(f"--set {one_line(field_errors(error, entry.config_cls))}") from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = make_config(args.name, args.preset, [*args.set, *(["reuse=false"] if args.no_reuse else [])])
    from experiments.tracking import client
    from service import jobs, report

    mlflow = client()
    if config.reuse and (done := jobs.reusable(mlflow, args.name, config)) is not None:
        print("reused: this config ran to its end on this code version before "
              "(--no-reuse runs it again)")
        return print_run(mlflow, done.info.run_id, report.at(mlflow, done.info.run_id))
    from experiments.core.context import Cancelled, RunContext
    from experiments.runner import run_experiment  # torch: only when it runs
    from service.progress import ProgressBar

    run_id = jobs.create(mlflow, args.name, config, status="RUNNING")  # a job, run in the foreground
    with ProgressBar(args.name) as bar:
        ctx = RunContext(on_progress=bar.update)
        try:
            run_experiment(args.name, config, run_id=run_id, ctx=ctx)
        except Cancelled as stop:
            print(f"cancelled: {stop}", file=sys.stderr)
            return 130
        finally:  # the report of however it ended
            where = report.log(mlflow, run_id, settings())
    return print_run(mlflow, run_id, where)


def print_run(mlflow, run_id: str, report_at: str | None) -> int:
    """Where the run is, in MLflow and as a report."""
    run = mlflow.get_run(run_id)
    print(f"MLflow run: {run_id} ({run.info.status})")
    print(f"open it:    phenolab ui   →  {settings().run_link(run.info.experiment_id, run_id)}")
    if report_at:
        print(f"report:     {report_at}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Build the HTML report of a run from MLflow into a file."""
    from mlflow.exceptions import MlflowException

    from experiments.tracking import client
    from service import report

    try:
        html = report.build(client(), args.run_id, settings())
    except MlflowException as error:
        raise UsageError(f"run {args.run_id}: {error.message}") from None
    out = Path(args.output or f"report-{args.run_id}.html")
    out.write_text(html)
    print(f"report of {args.run_id}: {out.resolve()}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    entries = catalog.entries().values()
    if args.glossary:
        return print_glossary()
    if args.json:
        print(json.dumps([e.describe() for e in entries], indent=2))
        return 0
    for entry in entries:
        print(f"{entry.name:20s} {entry.title}\n    {entry.description}")
        schema = entry.config_cls.model_json_schema()["properties"]
        for key, value in entry.config_cls().model_dump(mode="json").items():
            note = schema[key].get("description")
            print(f"    --set {key}={json.dumps(value)}" + (f"  ({note})" if note else ""))
        if entry.presets:
            print(f"    presets: {json.dumps(entry.presets)}")
        names = [term.name for term in entry.own_terms]
        print(f"    logs (besides the shared names of `phenolab list --glossary`): {', '.join(names)}")
        print()
    return 0


def print_glossary() -> int:
    """Every logged name with its definition and where it is logged, as a Markdown table (the
    README's glossary is this output)."""
    print("| name | kind | logged by | definition |\n| --- | --- | --- | --- |")
    for term in catalog.glossary_terms():
        where = ", ".join(term.experiments) or "any"
        definition = term.definition.replace("|", r"\|")
        print(f"| `{term.name}` | {term.kind} | {where} | {definition} |")
    return 0


def ui_command(s: Settings, port: int | None = None) -> list[str]:
    home().mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", s.tracking_uri,
            "--host", s.ui_host, "--port", str(port or s.ui_port), "--workers", str(s.ui_workers)]


def cmd_ui(args: argparse.Namespace) -> int:
    s = settings()
    print(f"MLflow UI on http://{s.ui_host}:{args.port or s.ui_port}  ({s.tracking_uri})")
    return subprocess.call(ui_command(s, args.port))


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    s = settings()
    uvicorn.run("service.app:app", host=args.host or s.api_host, port=args.port or s.api_port,
                log_level="info", proxy_headers=True)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from service.worker import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {k: v for k, v in {"gpus": args.gpus, "jobs_per_gpu": args.jobs_per_gpu}.items()
                 if v is not None}
    return Supervisor(Settings(**overrides) if overrides else settings()).run()


def prepare_store(s: Settings) -> None:
    """Create a database store's tables here, once, before the API, the workers and the UI
    start: three processes migrating a fresh SQLite file at once fail with "table already
    exists"."""
    if s.tracking_uri.startswith(("http:", "https:", "databricks")):
        return
    from experiments.tracking import client

    home().mkdir(parents=True, exist_ok=True)
    client(s.tracking_uri).search_experiments(max_results=1)


def cmd_serve(args: argparse.Namespace) -> int:
    """API, workers and MLflow UI as child processes; Ctrl-C / SIGTERM stops all three."""
    s = settings()
    prepare_store(s)
    me = [sys.executable, "-m", "service.cli"]
    parts = {"api": subprocess.Popen([*me, "api"]), "worker": subprocess.Popen([*me, "worker"]),
             "ui": subprocess.Popen(ui_command(s))}
    print(f"phenolab serve\n  API       {s.api}   (docs: {s.api}/docs)\n"
          f"  MLflow UI {s.mlflow_ui}\n  store     {s.tracking_uri}\n  queue     {s.queue}\n"
          "Ctrl-C stops everything.", flush=True)
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: stop.append(signum))
    failed = None
    while not stop and failed is None:
        time.sleep(0.5)
        failed = next((name for name, proc in parts.items() if proc.poll() is not None), None)
    if failed:
        print(f"phenolab serve: {failed} exited with {parts[failed].returncode}; stopping",
              file=sys.stderr)
    for proc in parts.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in parts.values():
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 1 if failed else 0


def cmd_submit(args: argparse.Namespace) -> int:
    """POST the config; with --wait, follow the job with a progress bar until it ends."""
    import httpx

    s = settings()
    body = parse_sets(args.set)
    if args.preset:
        body["preset"] = args.preset
    if args.no_reuse:
        body["reuse"] = False
    token = args.token or s.api_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.url or s.api, headers=headers, timeout=60) as http:
        try:
            kind = "suites" if args.name in SUITES else "experiments"
            response = http.post(f"/{kind}/{args.name}", json=body)
            if response.status_code not in (200, 202):  # 200: a finished job, reused
                try:
                    detail = response.json()["detail"]
                except (ValueError, KeyError, TypeError):  # not the API's JSON: a proxy's page
                    detail = response.text[:200]
                raise UsageError(f"{response.status_code}: {detail}")
            job = response.json()
            print(f"job {job['id']} {job['status']}{' (reused)' if job.get('reused') else ''}"
                  f"\n  {job['links']['self']}\n"
                  f"  {job['links']['mlflow']}")
            if not args.wait:
                return 0
            status = follow(http, job["id"], args.name, args.timeout)
        except httpx.HTTPError as error:
            raise UsageError(f"API at {http.base_url}: {error}") from None
    print(f"job {job['id']} {status}")
    return EXIT_CODES.get(status, 1)


def follow(http, job_id: str, name: str, timeout: float | None = None) -> str:
    """Poll the job once a second, drawing its progress with the bar of `phenolab run`, until
    it ends, or `timeout` seconds passed ("WAITING": no worker may be running)."""
    from dataclasses import fields

    from tqdm import tqdm

    from experiments.core.context import Progress
    from service.progress import ProgressBar

    deadline = None if timeout is None else time.monotonic() + timeout
    with ProgressBar(name) as bar:
        while True:
            response = http.get(f"/jobs/{job_id}")
            response.raise_for_status()
            job = response.json()
            if progress := job.get("progress"):  # the worker's Progress, as a dict
                bar.update(Progress(**{f.name: progress[f.name] for f in fields(Progress)}))
            if job["status"] not in ("SCHEDULED", "RUNNING"):
                if job.get("error"):
                    tqdm.write(f"error: {job['error']}", file=sys.stderr)
                return job["status"]
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    tqdm.write(f"still {job['status']} after {timeout:g} s: is a worker running?", file=sys.stderr)
    return "WAITING"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phenolab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment (or a suite: hw1) in the foreground")
    run.add_argument("name")
    run.add_argument("--preset", help="named preset, e.g. quick")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (JSON values: 3, 0.1, [1,2], true; "
                          "a.b=… a nested one)")
    run.add_argument("--no-reuse", action="store_true",
                     help="= --set reuse=false: run it again even when this config ran to its "
                          "end on this code, and train every model anew")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="build the HTML report of a run into a file")
    rep.add_argument("run_id")
    rep.add_argument("-o", "--output", metavar="FILE", help="default report-RUN_ID.html")
    rep.set_defaults(func=cmd_report)
    lst = sub.add_parser("list", help="the experiment catalog with parameters and defaults")
    lst.add_argument("--json", action="store_true")
    lst.add_argument("--glossary", action="store_true", help="every logged name and its definition")
    lst.set_defaults(func=cmd_list)
    ui = sub.add_parser("ui", help="the MLflow UI on the tracking store")
    ui.add_argument("--port", type=int)
    ui.set_defaults(func=cmd_ui)
    api = sub.add_parser("api", help="the REST API only (no torch in this process)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="worker processes: one per GPU slot, or CPU")
    worker.add_argument("--gpus", help="all | none | 0,1 (default: PHENOLAB_GPUS or all)")
    worker.add_argument("--jobs-per-gpu", type=int)
    worker.set_defaults(func=cmd_worker)
    serve = sub.add_parser("serve", help="the embedded lab: API + workers + MLflow UI")
    serve.set_defaults(func=cmd_serve)
    submit = sub.add_parser("submit", help="submit a job to a running lab over HTTP")
    submit.add_argument("name")
    submit.add_argument("--preset", help="named preset, e.g. quick")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (JSON values: 3, 0.1, [1,2], true)")
    submit.add_argument("--wait", action="store_true",
                        help="follow the job; exit 0 FINISHED, 1 FAILED, 3 KILLED")
    submit.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="with --wait: stop following after this long (exit 4)")
    submit.add_argument("--no-reuse", action="store_true",
                        help="= --set reuse=false: a new job, every model trained anew")
    submit.add_argument("--url", help="API URL (default PHENOLAB_API_URL or the local one)")
    submit.add_argument("--token", help="bearer token (default PHENOLAB_API_TOKEN)")
    submit.set_defaults(func=cmd_submit)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"phenolab: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `phenolab list | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 — keeps the interpreter's final flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
