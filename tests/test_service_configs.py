"""Configs as the API and the CLI take them: strict JSON types (a JSON array for a tuple, an
integer for a float, nothing else converted), errors named by the user's own field paths."""

from __future__ import annotations

import pytest

from service import jobs
from service.cli import UsageError, make_config


def test_json_types_are_taken_as_they_are() -> None:
    config = jobs.validate("function-fit", {"domain": [0, 2], "lr": 1, "epochs": 30})
    assert config.domain == (0.0, 2.0) and config.lr == 1.0 and config.epochs == 30
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
