"""The HTML report of a run — one experiment, or a suite of them — as one self-contained file:
laid out like the homework (per part, per experiment), with its figures embedded as data URIs,
a table of the variants' key numbers, the findings with their verdicts, the config, the
environment, run times and links into the MLflow UI. Read from MLflow through `MlflowClient`
only (no torch), so the API builds it as the CLI and the workers do; rendered with Jinja2.

The workers and `phenolab run` log it as the artifact `report.html` of a job when it ends;
`phenolab report RUN_ID` and `GET /jobs/{id}/report` rebuild it from the run when it is missing.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from experiments import catalog
from experiments.suite import FAILED_TAG, HW1_EXPERIMENTS, SUITES, Part, part_of
from experiments.tracking import ERROR_TAG, EXPERIMENT_TAG
from service.settings import Settings

# a report downloads every figure of a run: MLflow's progress bar per download is noise in the
# output of `phenolab run` and the workers
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
logger = logging.getLogger("phenolab.report")
REPORT = "report.html"  # the artifact's path in its run
ENVIRONMENT = ("git_revision", "torch_version", "python_version", "device", "host")


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]  # column → cell; "_link" → the row's MLflow link


@dataclass
class Section:
    """One experiment's run: what the report shows of it."""

    name: str
    title: str
    description: str
    run: Run
    link: str
    figures: list[tuple[str, str]]  # (name, data URI)
    variants: Table
    findings: list[dict[str, Any]] | None
    summary: dict[str, float]  # the parent's own metrics, other than the findings'
    config: dict[str, str]
    error: str | None = None
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.run.info.status

    @property
    def duration(self) -> str:
        return duration(self.run)

    @property
    def verdicts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in self.findings or ():
            counts[finding.get("verdict", "?")] = counts.get(finding.get("verdict", "?"), 0) + 1
        return counts


def runs_under(mlflow: MlflowClient, run: Run) -> list[Run]:
    """The runs whose parent is `run` (variants, or a suite's experiments), oldest first."""
    return mlflow.search_runs([run.info.experiment_id],
                              f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run.info.run_id}'",
                              max_results=5000, order_by=["attributes.start_time ASC"])


def root_artifacts(mlflow: MlflowClient, run_id: str) -> set[str]:
    return {f.path for f in mlflow.list_artifacts(run_id)}


def figures(mlflow: MlflowClient, run_id: str, present: set[str]) -> list[tuple[str, str]]:
    """The run's `figures/**.png` as (name, data URI), by name."""
    if "figures" not in present:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow.download_artifacts(run_id, "figures", tmp))
        return [(str(png.relative_to(root).with_suffix("")),
                 "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode())
                for png in sorted(root.rglob("*.png"))]


def findings(mlflow: MlflowClient, run_id: str, present: set[str]) -> list[dict[str, Any]] | None:
    """`findings.json` (claim, statistic, value, interval, verdict, details), if logged."""
    if "findings.json" not in present:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(mlflow.download_artifacts(run_id, "findings.json", tmp)).read_text())


def variants_table(children: list[Run], s: Settings) -> Table:
    """One row per variant: its params, its own tags (status, diverged …), its `final_*`
    metrics and `steps_trained`; columns in order of first appearance."""
    columns: dict[str, None] = {"variant": None}
    rows = []
    for child in children:
        tags = {k: v for k, v in child.data.tags.items() if not k.startswith(("mlflow.", "phenolab."))}
        metrics = {k: v for k, v in sorted(child.data.metrics.items())
                   if k.startswith("final_") or k == "steps_trained"}
        row = {"variant": child.info.run_name, **child.data.params, **tags, **metrics,
               "_link": s.run_link(child.info.experiment_id, child.info.run_id)}
        columns.update(dict.fromkeys(k for k in row if k != "_link"))
        rows.append(row)
    return Table(list(columns), rows)


def section(mlflow: MlflowClient, run: Run, s: Settings) -> Section:
    name = run.data.tags.get(EXPERIMENT_TAG, "?")
    entry = catalog.entries().get(name)
    present = root_artifacts(mlflow, run.info.run_id)
    return Section(
        name=name, title=entry.title if entry else name,
        description=entry.description if entry else "", run=run,
        link=s.run_link(run.info.experiment_id, run.info.run_id),
        figures=figures(mlflow, run.info.run_id, present),
        variants=variants_table(runs_under(mlflow, run), s),
        findings=findings(mlflow, run.info.run_id, present),
        summary={k: v for k, v in sorted(run.data.metrics.items()) if not k.startswith("finding/")},
        config=dict(sorted(run.data.params.items())),
        error=run.data.tags.get(ERROR_TAG),
        environment={k: run.data.tags[k] for k in ENVIRONMENT if k in run.data.tags})


def grouped(sections: list[Section]) -> list[tuple[Part | None, list[Section]]]:
    """Sections by homework part, in the homework's order."""
    order = {name: i for i, name in enumerate(HW1_EXPERIMENTS)}
    groups: dict[str, tuple[Part | None, list[Section]]] = {}
    for sec in sorted(sections, key=lambda sec: order.get(sec.name, len(order))):
        part = part_of(sec.name)
        groups.setdefault(part.label if part else "", (part, []))[1].append(sec)
    return list(groups.values())


def build(mlflow: MlflowClient, run_id: str, s: Settings) -> str:
    """The report of the run `run_id`: a suite's (every experiment nested in it) or an
    experiment's, as one HTML document."""
    run = mlflow.get_run(run_id)
    name = run.data.tags.get(EXPERIMENT_TAG, "?")
    suite = SUITES.get(name)
    top = section(mlflow, run, s)
    sections = [section(mlflow, r, s) for r in runs_under(mlflow, run)] if suite else [top]
    return template().render(
        title=suite.title if suite else top.title, suite=suite, top=top, groups=grouped(sections),
        sections=sections, failed=run.data.tags.get(FAILED_TAG), mlflow_ui=s.mlflow_ui,
        built=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def log(mlflow: MlflowClient, run_id: str, s: Settings) -> str | None:
    """Build the report and log it as the run's artifact `report.html`; returns where it is.
    A report that cannot be built is a warning, never its job's failure (None)."""
    try:
        mlflow.log_text(run_id, build(mlflow, run_id, s), REPORT)
    except Exception as error:
        logger.warning("no report for run %s: %s: %s", run_id, type(error).__name__, error)
        return None
    return at(mlflow, run_id)


def at(mlflow: MlflowClient, run_id: str) -> str | None:
    """The URI of the run's logged report (a file:// one opens in a browser as it is), if any."""
    if REPORT not in root_artifacts(mlflow, run_id):
        return None
    return f"{mlflow.get_run(run_id).info.artifact_uri}/{REPORT}"


def stored(mlflow: MlflowClient, run_id: str) -> str | None:
    """The run's logged `report.html`, if any."""
    if REPORT not in root_artifacts(mlflow, run_id):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(mlflow.download_artifacts(run_id, REPORT, tmp)).read_text()


def duration(run: Run) -> str:
    """How long the run took (ran so far, if it has not ended), as `1 h 02 min`, `3 min 07 s`."""
    end = run.info.end_time or datetime.now(UTC).timestamp() * 1000
    seconds = max(0.0, (end - run.info.start_time) / 1000)
    if seconds >= 3600:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"
    if seconds >= 60:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds:.1f} s"


def when(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if millis else "—"


def number(value: Any) -> str:
    """Numbers with 4 significant digits; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def brief(value: Any, limit: int = 160) -> str:
    """A finding's details in one short line (they may hold every model's numbers)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


@cache
def template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("service", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(number=number, brief=brief, when=when)
    return env.get_template("report.html.j2")
