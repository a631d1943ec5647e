"""The HTML report of a run, read back from a real MLflow store: an experiment's and a suite's,
with their figures embedded, the variants' numbers, findings, config, environment and links;
`phenolab report` and `phenolab run` (which logs it, and reuses a finished identical run).
Then opened in headless Chromium with the network off: every image loads, nothing is fetched,
no console error."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import browser
import pytest
from browser import open_page
from mlflow.tracking import MlflowClient
from stores import module_store
from test_catalog import SMOKE
from test_suite import FAILING_FIRST

import experiments
from experiments.suite import SuiteConfig
from experiments.tracking import create_parent_run
from service import jobs, report
from service.cli import main
from service.settings import Settings

TINY_FIT = {**SMOKE["function-fit"], "seeds": 1}


class Images(HTMLParser):
    """The src of every <img>, and the ids of the sections."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.ids: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.sources.append(found["src"] or "")
        if tag == "section" and found.get("id"):
            self.ids.append(found["id"] or "")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """One tiny experiment and one tiny suite (a failing experiment, a finished one)."""
    with module_store(tmp_path_factory.mktemp("report")) as uri:
        yield (MlflowClient(uri), experiments.run("function-fit", TINY_FIT),
               experiments.run("hw1", FAILING_FIRST))


def figure_count(mlflow: MlflowClient, run_id: str) -> int:
    return sum(f.path.endswith(".png") for f in mlflow.list_artifacts(run_id, "figures"))


def test_an_experiments_report_has_its_figures_numbers_config_and_environment(runs) -> None:
    mlflow, run_id, _ = runs
    run, s = mlflow.get_run(run_id), Settings()
    html = report.build(mlflow, run_id, s)
    images = Images(html).sources
    assert len(images) == figure_count(mlflow, run_id) >= 2
    for src in images:
        assert base64.b64decode(src.removeprefix("data:image/png;base64,"))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "HW1-1" in html and "Deep vs shallow" in html  # its part of the homework
    for child in report.runs_under(mlflow, run):
        assert f">{child.info.run_name}</a>" in html
        assert s.run_link(child.info.experiment_id, child.info.run_id) in html
    assert "final_running_loss" in html and "steps_trained" in html
    assert ">n_points</td><td>32<" in html  # the config
    assert run.data.tags["git_revision"] in html and run.data.tags["torch_version"] in html
    assert s.run_link(run.info.experiment_id, run_id) in html
    logged = "findings.json" in {f.path for f in mlflow.list_artifacts(run_id)}
    assert ("no findings recorded" in html) != logged


def test_a_suites_report_has_each_experiment_in_its_part(runs) -> None:
    mlflow, _, suite_id = runs
    html = report.build(mlflow, suite_id, Settings())
    page = Images(html)
    assert page.ids == ["function-fit", "minimal-ratio"]
    nested = report.runs_under(mlflow, mlflow.get_run(suite_id))
    assert len(page.sources) == sum(figure_count(mlflow, r.info.run_id) for r in nested) > 0
    parts = re.findall(r'<h2><span class="label">([^<]+)</span>([^<]+)</h2>', html)
    assert parts == [("HW1-1", "Deep vs shallow"), ("HW1-2", "Optimization")]
    assert "device &#39;cuda&#39; was requested" in html  # the failed one's error
    assert "Failed: function-fit" in html
    assert "<td>overrides.minimal-ratio.repetitions</td><td>3</td>" in html  # the suite's config


def test_findings_show_their_verdicts(store: str) -> None:
    mlflow = MlflowClient(store)
    run_id = create_parent_run(mlflow, "sensitivity", SuiteConfig().configs()["sensitivity"])
    findings = [{"claim": "lower sensitivity, smaller gap", "statistic": "Spearman ρ",
                 "value": 0.81234, "interval": [0.5, 0.95], "verdict": "holds", "details": {}},
                {"claim": "another", "statistic": "mean", "value": -0.1,
                 "interval": [-0.3, 0.2], "verdict": "inconclusive", "details": {"x": list(range(500))}}]
    mlflow.log_text(run_id, json.dumps(findings), "findings.json")
    mlflow.set_terminated(run_id)
    html = report.build(mlflow, run_id, Settings())
    assert "lower sensitivity, smaller gap" in html and "0.8123" in html and "[0.5, 0.95]" in html
    assert 'class="badge holds">holds<' in html and 'class="badge inconclusive">inconclusive<' in html
    assert "no findings recorded" not in html and "…" in html  # long details cut short


def test_phenolab_report_writes_the_file(runs, tmp_path: Path, capsys) -> None:
    mlflow, run_id, _ = runs
    out = tmp_path / "r.html"
    assert main(["report", run_id, "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert len(Images(out.read_text()).sources) == figure_count(mlflow, run_id)
    assert main(["report", "0" * 32]) == 2


def test_phenolab_run_logs_the_report_and_reuses_a_finished_run(
        store: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("PHENOLAB_GIT_REVISION", "report-test-revision")
    jobs.code_version.cache_clear()  # read once per process: this test's code version
    args = ["run", "function-fit", "--preset", "quick", "--set", "seeds=1",
            *(a for k, v in SMOKE["function-fit"].items() for a in ("--set", f"{k}={json.dumps(v)}"))]
    mlflow = MlflowClient(store)

    def jobs_run() -> list:
        return mlflow.search_runs([mlflow.get_experiment_by_name("function-fit").experiment_id],
                                  "tags.`phenolab.kind` = 'job'")

    assert main(args) == 0
    first = capsys.readouterr().out
    [job] = jobs_run()
    assert f"report:     {job.info.artifact_uri}/report.html" in first
    assert report.stored(mlflow, job.info.run_id).startswith("<!DOCTYPE html>")
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.startswith("reused:") and job.info.run_id in again and len(jobs_run()) == 1
    assert main([*args, "--no-reuse"]) == 0
    assert len(jobs_run()) == 2
    jobs.code_version.cache_clear()


def test_the_browser_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The check below can fail: a missing image, a fetch and a console error are all seen."""
    if browser.chromium() is None:
        pytest.skip(browser.why_not[-1])
    page = tmp_path / "broken.html"
    page.write_text('<img src="missing.png"><img src="https://example.com/a.png">'
                    '<script>console.error("boom")</script>')
    seen = open_page(page)
    assert [i["width"] for i in seen.images] == [0, 0]
    assert "boom" in seen.console_errors and seen.outside == ["https://example.com/a.png"]


def test_reports_open_offline_in_chromium_with_every_figure(runs, tmp_path: Path) -> None:
    if browser.chromium() is None:
        pytest.skip(browser.why_not[-1])
    mlflow, run_id, suite_id = runs
    for name, rid in (("experiment", run_id), ("suite", suite_id)):
        path = tmp_path / f"{name}.html"
        path.write_text(report.build(mlflow, rid, Settings()))
        seen = open_page(path, screenshot=True)
        assert len(seen.images) == len(Images(path.read_text()).sources) > 0, name
        assert all(i["complete"] and i["width"] > 0 for i in seen.images), (name, seen.images)
        assert seen.console_errors == [], name
        assert seen.outside == [], name
        assert seen.screenshot and seen.screenshot[:4] == b"\x89PNG"
