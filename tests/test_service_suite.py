"""A suite through the real lab (API under uvicorn, a worker, SQLite stores): `POST /suites/hw1`
validates the subset and overrides, the worker runs it as one job with each experiment nested,
`GET /jobs/{id}/report` serves its report under the token rules; an identical request is
answered with the finished job at once (`reused: true`) unless it says `reuse: false`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from service_lab import TINY, TOKEN, Lab, embedded_env
from test_report import Images
from test_suite import FAILING_FIRST

from experiments import catalog
from service import report

REVISION = "suite-test-revision"  # the code version of this lab's processes, fixed


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of its own: its processes' code version must not move while the test runs."""
    home = tmp_path_factory.mktemp("suite-lab")
    lab = Lab(home, {**embedded_env(home), "PHENOLAB_GIT_REVISION": REVISION}, token=TOKEN)
    try:
        lab.start_api()
        lab.start_worker()
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def suite_job(lab: Lab) -> dict:
    response = lab.http.post("/suites/hw1", json=FAILING_FIRST)
    assert response.status_code == 202, response.text
    assert response.json()["reused"] is False
    return lab.wait(response.json()["id"], "FINISHED", "FAILED", timeout=600)


def test_the_suite_is_described(lab: Lab) -> None:
    [hw1] = lab.http.get("/suites").json()
    assert hw1["name"] == "hw1" and [p["label"] for p in hw1["parts"]][:2] == ["HW1-1", "HW1-2"]
    assert lab.http.get("/suites/hw1").json()["presets"] == {"quick": {"preset": "quick"}}
    assert lab.http.get("/suites/hw2").status_code == 404


def test_bad_suite_requests_are_refused_naming_the_field(lab: Lab) -> None:
    unknown = lab.http.post("/suites/hw2", json={})
    assert unknown.status_code == 404 and "known: hw1" in unknown.json()["detail"]
    for body, field in (({"experiments": ["function-fit", "task-fit", "nope"]}, "experiments.2"),
                        ({"overrides": {"sensitivity": {"epochs": 0}}}, "overrides.sensitivity.epochs"),
                        ({"reuse": "no"}, "reuse")):
        response = lab.http.post("/suites/hw1", json=body)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]


def test_a_suite_job_runs_each_experiment_nested(lab: Lab, suite_job: dict) -> None:
    assert suite_job["status"] == "FINISHED"
    assert suite_job["progress"]["experiment"] == "minimal-ratio"
    assert suite_job["progress"]["experiment_count"] == 2
    assert {c["name"].rsplit("-", 2)[0]: c["status"] for c in suite_job["children"]} == {
        "function-fit": "FAILED", "minimal-ratio": "FINISHED"}
    mlflow = MlflowClient(lab.env["MLFLOW_TRACKING_URI"])
    suite = mlflow.get_run(suite_job["id"])
    assert suite.data.tags["phenolab.failed_experiments"] == "function-fit"
    nested = report.runs_under(mlflow, suite)
    assert all(report.runs_under(mlflow, n) for n in nested if n.info.status == "FINISHED")
    # logged by the worker as the job ends: it may land just after the FINISHED status is read
    lab.until(lambda: report.stored(mlflow, suite_job["id"]) is not None, 30,
              "the worker to log the suite's report")


def test_the_report_is_served_under_the_token_rules(lab: Lab, suite_job: dict) -> None:
    url = f"/jobs/{suite_job['id']}/report"
    response = lab.http.get(url)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert len(Images(response.text).sources) > 0 and "minimal-ratio" in response.text
    assert lab.http.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert lab.http.get(f"/jobs/{'0' * 32}/report").status_code == 404


def test_an_identical_request_reuses_the_finished_job(lab: Lab, suite_job: dict) -> None:
    again = lab.http.post("/suites/hw1", json=FAILING_FIRST)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == suite_job["id"] and again.json()["reused"] is True
    fresh = lab.http.post("/suites/hw1", json={**FAILING_FIRST, "reuse": False})
    assert fresh.status_code == 202 and fresh.json()["id"] != suite_job["id"]
    assert lab.http.get(f"/jobs/{fresh.json()['id']}/report").status_code == 409  # not ended
    for job in lab.http.get("/jobs", params={"experiment": "hw1"}).json()["jobs"]:
        if job["status"] in ("SCHEDULED", "RUNNING"):
            lab.http.post(f"/jobs/{job['id']}/cancel")

    sets = [a for k, v in FAILING_FIRST.items() if k != "preset"
            for a in ("--set", f"{k}={json.dumps(v)}")]
    submitted = subprocess.run(
        [sys.executable, "-m", "service.cli", "submit", "hw1", "--preset", "quick", *sets, "--wait",
         "--url", lab.url, "--token", TOKEN], env=lab.env, capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).parent.parent)
    assert submitted.returncode == 0, submitted.stderr
    assert f"job {suite_job['id']} FINISHED (reused)" in submitted.stdout


def test_an_identical_experiment_request_is_reused_too(lab: Lab) -> None:
    submitted = lab.http.post("/experiments/function-fit", json=TINY)  # reuse: true, the default
    assert submitted.status_code == 202, submitted.text
    first = submitted.json()["id"]
    lab.wait(first, "FINISHED", timeout=300)
    again = lab.http.post("/experiments/function-fit", json=TINY)
    assert again.status_code == 200 and again.json()["id"] == first
    spelled_out = {**catalog.get("function-fit").presets["quick"],  # the same config, no preset
                   **{k: v for k, v in TINY.items() if k != "preset"}}
    assert lab.http.post("/experiments/function-fit", json=spelled_out).json()["id"] == first
    assert lab.http.post("/experiments/function-fit", json={**TINY, "reuse": False}).status_code == 202


def test_a_lost_suite_attempt_ends_and_discards_its_runs_at_every_depth(store: str) -> None:
    """A suite's worker lost mid-run leaves its experiments' runs and their variants running:
    re-queued, every one of them is ended and discarded, not only the suite's own children."""
    from experiments.suite import SuiteConfig
    from experiments.tracking import Tracker
    from service import jobs

    config = SuiteConfig(experiments=["function-fit"])
    mlflow = MlflowClient(store)
    suite = Tracker(mlflow, jobs.create(mlflow, "hw1", config, status="RUNNING"), "hw1")
    nested = suite.nested("function-fit", config.configs()["function-fit"])
    variant = nested.child("1-8-1", {"hidden": [8]})
    jobs.end_children(mlflow, mlflow.get_run(suite.run_id))
    for run_id in (nested.run_id, variant.run_id):
        run = mlflow.get_run(run_id)
        assert run.info.status == "FAILED" and run.info.lifecycle_stage == "deleted"
