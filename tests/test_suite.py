"""The hw1 suite: its config validates a subset and per-experiment overrides, naming each bad
field; it runs as one MLflow parent run with each experiment nested in it (its variants one
level further down), exactly as the experiment runs alone; a failing experiment is recorded
FAILED and the suite goes on; progress says which experiment of how many."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from pydantic import ValidationError
from stores import module_store
from test_catalog import SMOKE

import experiments
from experiments import catalog
from experiments.core.config import build_config, field_errors
from experiments.core.context import Cancelled, Progress, RunContext
from experiments.suite import FAILED_TAG, HW1_EXPERIMENTS, SUITES, SuiteConfig, runnable

# function-fit fails at once (no CUDA here); minimal-ratio, after it, runs to its end
FAILING_FIRST = {"preset": "quick", "seeds": 1, "experiments": ["minimal-ratio", "function-fit"],
                 "overrides": {"function-fit": {**SMOKE["function-fit"], "device": "cuda"},
                               "minimal-ratio": SMOKE["minimal-ratio"]}}


def errors_of(body: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as raised:
        build_config(SuiteConfig, None, body)
    return {e["field"]: e["reason"] for e in field_errors(raised.value, SuiteConfig)}


def test_hw1_is_every_experiment_of_the_catalog_once_in_its_part() -> None:
    assert sorted(HW1_EXPERIMENTS) == catalog.names()
    assert len(set(HW1_EXPERIMENTS)) == len(HW1_EXPERIMENTS)
    assert "hw1" not in catalog.names() and runnable("hw1") is SUITES["hw1"]
    assert runnable("sensitivity") is catalog.get("sensitivity")
    with pytest.raises(catalog.UnknownExperiment, match="suites: hw1"):
        runnable("hw2")


def test_the_suite_config_builds_each_experiments_own_config() -> None:
    config = build_config(SuiteConfig, "quick", {
        "experiments": ["sensitivity", "function-fit"], "seeds": 1,
        "overrides": {"sensitivity": {"epochs": 2, "seeds": 2}}})
    configs = config.configs()
    assert list(configs) == ["function-fit", "sensitivity"]  # the homework's order
    quick = build_config(catalog.get("sensitivity").config_cls, "quick", {"epochs": 2, "seeds": 2})
    assert configs["sensitivity"] == quick  # its preset, then the suite's seeds, then its overrides
    assert configs["function-fit"].seeds == 1
    assert configs["function-fit"].seed == catalog.get("function-fit").config_cls().seed
    assert len(SuiteConfig().configs()) == len(HW1_EXPERIMENTS)


def test_bad_subsets_and_overrides_name_their_field() -> None:
    assert "experiments.2" in errors_of({"experiments": ["function-fit", "task-fit", "nope"]})
    assert "experiments" in errors_of({"experiments": []})
    assert "at most once" in errors_of({"experiments": ["task-fit", "task-fit"]})["experiments"]
    found = errors_of({"overrides": {"sensitivity": {"epochs": 0, "bogus": 1}}})
    assert set(found) == {"overrides.sensitivity.epochs", "overrides.sensitivity.bogus"}
    assert "not among the chosen" in errors_of(
        {"experiments": ["task-fit"], "overrides": {"sensitivity": {"epochs": 2}}})["overrides.sensitivity"]
    assert "preset" in errors_of({"preset": "slow"})
    assert "seeds" in errors_of({"seeds": 0})


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str, list[Progress]]:
    """FAILING_FIRST run once on a fresh store, with the progress it reported."""
    seen: list[Progress] = []
    with module_store(tmp_path_factory.mktemp("suite")) as uri:
        run_id = experiments.run("hw1", FAILING_FIRST, ctx=RunContext(on_progress=seen.append))
        yield MlflowClient(uri), run_id, seen


def under(mlflow: MlflowClient, run_id: str) -> list:
    experiment = mlflow.get_run(run_id).info.experiment_id
    return mlflow.search_runs([experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
                              order_by=["attributes.start_time ASC"])


def test_the_suite_is_one_parent_with_each_experiment_nested(suite_run) -> None:
    mlflow, run_id, _ = suite_run
    suite = mlflow.get_run(run_id)
    assert suite.info.status == "FINISHED"  # one experiment failed, the other finished
    assert suite.data.tags["phenolab.experiment"] == "hw1"
    assert suite.data.tags[FAILED_TAG] == "function-fit"
    nested = {run.data.tags["phenolab.experiment"]: run for run in under(mlflow, run_id)}
    assert list(nested) == ["function-fit", "minimal-ratio"]  # the homework's order
    failed, finished = nested["function-fit"], nested["minimal-ratio"]
    assert failed.info.status == "FAILED"
    assert "device 'cuda' was requested" in failed.data.tags["phenolab.error"]
    assert "errors/traceback.txt" in {f.path for f in mlflow.list_artifacts(failed.info.run_id, "errors")}
    assert finished.info.status == "FINISHED"
    assert finished.data.params["repetitions"] == str(SMOKE["minimal-ratio"]["repetitions"])
    assert finished.data.params["seeds"] == "1"
    variants = under(mlflow, finished.info.run_id)
    assert variants and all(v.data.tags["phenolab.experiment"] == "minimal-ratio" for v in variants)
    assert all(v.info.experiment_id == suite.info.experiment_id for v in variants)


def test_an_experiment_in_the_suite_computes_what_it_computes_alone(suite_run) -> None:
    mlflow, run_id, _ = suite_run
    [nested] = [r for r in under(mlflow, run_id) if r.info.status == "FINISHED"]
    config = build_config(SuiteConfig, None, FAILING_FIRST).configs()["minimal-ratio"]
    alone = experiments.run("minimal-ratio", config, tracking_uri=mlflow.tracking_uri)

    def finals(parent: str) -> dict[str, dict[str, float]]:
        return {r.info.run_name: {k: v for k, v in r.data.metrics.items() if k.startswith("final_")}
                for r in under(mlflow, parent)}

    def numbers(metrics: dict[str, float]) -> dict[str, str]:
        """Every metric but the timings, as text (so that nan equals nan)."""
        return {k: repr(v) for k, v in metrics.items() if not k.endswith("_seconds")}

    assert finals(nested.info.run_id) == finals(alone)
    assert numbers(mlflow.get_run(alone).data.metrics) == numbers(nested.data.metrics)


def test_progress_says_which_experiment_of_how_many(suite_run) -> None:
    _, _, seen = suite_run
    assert seen[0].variant == "1/2 function-fit: starting" and seen[0].experiment_index == 0
    assert {p.experiment for p in seen} == {"function-fit", "minimal-ratio"}
    assert all(p.experiment_count == 2 for p in seen)
    last = [p for p in seen if p.experiment == "minimal-ratio"]
    assert all(p.variant.startswith("2/2 minimal-ratio: ") for p in last)
    assert min(p.fraction for p in last) >= 0.5 and max(p.fraction for p in last) <= 1.0


def test_a_suite_fails_only_when_every_experiment_failed(store: str) -> None:
    body = {"experiments": ["function-fit"], "overrides": {"function-fit": {"device": "cuda"}}}
    with pytest.raises(RuntimeError, match="every experiment of the suite failed: function-fit"):
        experiments.run("hw1", body)
    mlflow = MlflowClient(store)
    [suite] = mlflow.search_runs([mlflow.get_experiment_by_name("hw1").experiment_id],
                                 "tags.`phenolab.experiment` = 'hw1'")
    assert suite.info.status == "FAILED"


def test_a_cancel_stops_the_suite_where_it_is(store: str) -> None:
    ctx = RunContext(on_progress=lambda p: stop.append(p.experiment_index == 1),
                     cancelled=lambda: any(stop))
    stop: list[bool] = []
    with pytest.raises(Cancelled):
        experiments.run("hw1", FAILING_FIRST, ctx=ctx)
    mlflow = MlflowClient(store)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("hw1").experiment_id])
    assert {r.data.tags["phenolab.experiment"]: r.info.status for r in runs} == {
        "hw1": "KILLED", "function-fit": "FAILED"}  # minimal-ratio never started
