"""`phenolab`: run experiments in the foreground, list the catalog, open the MLflow UI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from experiments import registry
from experiments.configs import build_config
from service.settings import settings


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON when they parse as JSON (numbers, lists, true),
    else plain strings."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected key=value")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def validation_message(error: ValidationError) -> str:
    """One line per field: `key: reason`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                     for e in error.errors())


def make_config(name: str, preset: str | None, sets: Sequence[str]):
    try:
        entry = registry.get(name)
    except registry.UnknownExperiment as error:
        raise UsageError(str(error)) from None
    try:
        return build_config(entry.config_cls, preset, parse_sets(sets))
    except ValidationError as error:
        raise UsageError(f"--set {validation_message(error)}") from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = make_config(args.name, args.preset, args.set)
    from experiments.context import Cancelled, RunContext
    from experiments.runner import run_experiment
    from service.progress import ProgressBar

    with ProgressBar(args.name) as bar:
        ctx = RunContext(on_progress=bar.update)
        try:
            run_id = run_experiment(args.name, config, ctx=ctx)
        except Cancelled as stop:
            print(f"cancelled: {stop}", file=sys.stderr)
            return 130
    from experiments.tracking import client

    run = client().get_run(run_id)
    print(f"MLflow run: {run_id} ({run.info.status})")
    print(f"open it:    phenolab ui   →  {settings().run_link(run.info.experiment_id, run_id)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for entry in registry.entries().values():
        if args.json:
            continue
        print(f"{entry.name:20s} {entry.title}")
        print(f"    {entry.description}")
        schema = entry.config_cls.model_json_schema()["properties"]
        for key, value in entry.config_cls().model_dump(mode="json").items():
            print(f"    --set {key}={json.dumps(value)}  ({schema[key].get('description', '')})"
                  if schema[key].get("description") else f"    --set {key}={json.dumps(value)}")
        if entry.presets:
            print(f"    presets: {json.dumps(entry.presets)}")
        print()
    if args.json:
        print(json.dumps([e.describe() for e in registry.entries().values()], indent=2))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    s = settings()
    os.makedirs("mlruns", exist_ok=True)
    command = ["mlflow", "ui", "--backend-store-uri", s.tracking_uri, "--host", s.ui_host,
               "--port", str(args.port or s.ui_port)]
    print(f"MLflow UI on http://{s.ui_host}:{args.port or s.ui_port}  ({s.tracking_uri})")
    return subprocess.call(command)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phenolab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment in the foreground")
    run.add_argument("name")
    run.add_argument("--preset", help="named preset, e.g. quick")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (JSON values: 3, 0.1, [1,2], true)")
    run.set_defaults(func=cmd_run)
    lst = sub.add_parser("list", help="the experiment catalog with parameters and defaults")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    ui = sub.add_parser("ui", help="the MLflow UI on the tracking store")
    ui.add_argument("--port", type=int)
    ui.set_defaults(func=cmd_ui)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"phenolab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
