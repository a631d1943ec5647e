"""Configs as the API and the CLI take them: strict JSON types (a JSON array for a tuple, an
integer for a float, nothing else converted), errors named by the user's own field paths; a
job whose estimated memory or work is over the settings' limits is refused, naming the fields
its size grows with, while every experiment's defaults and presets fit with room to spare."""

from __future__ import annotations

import re

import pytest

from experiments import catalog
from experiments.suite import SUITES
from service import jobs
from service.cli import UsageError, make_config
from service.settings import Settings


def test_json_types_are_taken_as_they_are() -> None:
    config = jobs.validate("function-fit", {"domain": [0, 2], "converge_tol": 0, "epochs": 30})
    assert config.domain == (0.0, 2.0) and config.converge_tol == 0.0 and config.epochs == 30
    assert jobs.validate("batch-size", {"batch_sizes": [8, "full"]}).batch_sizes == [8, "full"]
    assert jobs.validate("interpolation", {"approaches": [{"batch_size": 8}, {"lr": 1}]})


@pytest.mark.parametrize(("body", "field"), [
    ({"epochs": "100"}, "epochs"), ({"epochs": 20.0}, "epochs"), ({"seed": True}, "seed"),
    ({"domain": [0, "1"]}, "domain.1"), ({"models": [[4, 2.0]]}, "models.0.1")])
def test_a_value_of_another_json_type_is_refused_by_its_path(body: dict, field: str) -> None:
    with pytest.raises(jobs.InvalidConfig) as refused:
        jobs.validate("function-fit", body)
    assert [e["field"] for e in refused.value.errors] == [field]


def test_nested_and_union_fields_are_named_as_the_user_wrote_them() -> None:
    with pytest.raises(jobs.InvalidConfig) as refused:
        jobs.validate("interpolation", {"approaches": [{"batch_size": "8"}, {}], "same_init": 1})
    assert {e["field"] for e in refused.value.errors} == {"approaches.0.batch_size", "same_init"}
    with pytest.raises(jobs.InvalidConfig) as refused:
        jobs.validate("batch-size", {"batch_sizes": [16, "half"]})
    [error] = refused.value.errors
    assert error == {"field": "batch_sizes.1",
                     "reason": "Input should be a valid integer or Input should be 'full'"}


def test_cli_set_values_are_json_first() -> None:
    assert make_config("function-fit", None, ["domain=[0,2]", "target=sign"]).domain == (0.0, 2.0)
    with pytest.raises(UsageError, match=r"--set epochs: Input should be a valid integer"):
        make_config("function-fit", None, ["epochs=20.0"])
    with pytest.raises(UsageError, match=r"same_init: Input should be a valid boolean"):
        make_config("interpolation", None, ["same_init=yes"])


def test_every_experiment_and_suite_fits_the_default_limits_with_room_to_spare() -> None:
    limits = Settings()
    for entry in [*catalog.entries().values(), *SUITES.values()]:
        for preset in [None, *entry.presets]:
            cost = jobs.validate(entry.name, {} if preset is None else {"preset": preset},
                                 limits).cost()
            assert cost.memory_bytes < limits.max_job_memory_gb * 2**30 / 4, (entry.name, preset)
            assert cost.flops < limits.max_job_tflops * 1e12 / 4, (entry.name, preset)


WIDE = [8192] * 8


@pytest.mark.parametrize(("name", "body", "fields", "over"), [
    ("function-fit", {"models": [[8192] * 16] * 8}, ["models"], "GiB of memory"),
    ("learning-rate", {"hidden": WIDE, "rates": [(n + 1) / 100 for n in range(16)]},
     ["hidden", "rates"], "GiB of memory"),
    ("batch-size", {"hidden": WIDE, "batch_sizes": [50_000, "full"]}, ["hidden", "batch_sizes"],
     "GiB of memory"),
    ("interpolation", {"hidden": WIDE}, ["hidden"], "GiB of memory"),
    ("task-fit", {"param_budget": 20_000_000, "epochs": 1000}, ["param_budget", "epochs"],
     "30,000 TFLOPs (PHENOLAB_MAX_JOB_TFLOPS)"),
    ("hw1", {"overrides": {"function-fit": {"models": [[8192] * 16] * 8}}},
     ["overrides.function-fit.models"], "GiB of memory"),
])
def test_a_job_too_large_is_refused_naming_its_fields_and_estimate(
        name: str, body: dict, fields: list[str], over: str) -> None:
    with pytest.raises(jobs.InvalidConfig) as refused:
        jobs.validate(name, body, Settings())
    assert [e["field"] for e in refused.value.errors] == fields
    assert re.match(r"job too large: it would take ~[\d,.]+ GiB of memory, ~[\d,.]+ TFLOPs, "
                    r"over the limit of ", refused.value.detail), refused.value.detail
    assert over in refused.value.detail


def test_the_limits_are_settings() -> None:
    with pytest.raises(jobs.InvalidConfig, match=r"over the limit of 0.01 TFLOPs"):
        jobs.validate("random-labels", {}, Settings(max_job_tflops=0.01))
    assert jobs.validate("random-labels", {}, Settings(max_job_memory_gb=1))
