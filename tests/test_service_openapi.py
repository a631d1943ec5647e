"""The OpenAPI document is the API: every route's every answer declared with the project's
ErrorReply, each experiment's submit body its strict config (plus `preset`, nothing else),
security only when a token is set; and schemathesis, every check, against the running API
(with the token; no worker runs, so its submits stay queued and are cancelled after).

The full run (tests/schemathesis.toml, `--checks all`, ≥ 5,000 cases, with and without a
token, against `phenolab api` with no worker) is the same command at a larger count:
`st --config-file tests/schemathesis.toml run URL/openapi.json --checks all -n 30 [-H
'Authorization: Bearer TOKEN']`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_lab import TOKEN, Lab

from experiments import catalog

CONFIG = Path(__file__).with_name("schemathesis.toml")
ERROR_REPLY = "#/components/schemas/ErrorReply"


@pytest.fixture(scope="module")
def queued_only(lab: Lab) -> Iterator[Lab]:
    """The session's lab, its submits cancelled afterwards, so that no worker ever runs them."""
    yield lab
    lab.cancel_queued()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_is_an_error_reply_and_every_submit_body_its_config(queued_only: Lab) -> None:
    document = queued_only.http.get("/openapi.json").json()
    assert document["openapi"] == "3.0.3"  # where 20.0 is no integer, as the configs say
    assert "HTTPValidationError" not in json.dumps(document)
    for name, operation in operations(document):
        if name == "GET /healthz":  # open to all; its 503 is a Health body
            assert "security" not in operation and set(operation["responses"]) == {"200", "503"}
            continue
        assert operation["security"] == [{"HTTPBearer": []}] and "401" in operation["responses"]
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                assert answer["content"] == {"application/json": {"schema": {
                    "$ref": ERROR_REPLY}}}, (name, status)
    for entry in catalog.entries().values():
        submit = document["paths"][f"/experiments/{entry.name}"]["post"]
        assert {"202", "413", "422", "503"} <= set(submit["responses"])
        body = submit["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False
        assert set(body["properties"]) == {*entry.config_cls.model_fields, "preset"}
        assert body["properties"]["preset"]["enum"] == list(entry.presets)


def test_without_a_token_no_security_is_declared(store: str) -> None:
    from service.app import create_app
    from service.settings import Settings, settings

    try:
        document = create_app(Settings(api_token=None)).openapi()
    finally:
        settings.cache_clear()  # importing service.app cached this test's environment
    text = json.dumps(document)
    assert "security" not in text and "HTTPBearer" not in text
    assert all("401" not in operation["responses"] for _, operation in operations(document))


def test_schemathesis_finds_nothing(queued_only: Lab, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    out = subprocess.run(
        [str(st), "--config-file", str(CONFIG), "run", f"{queued_only.url}/openapi.json",
         "--checks", "all", "-n", "10", "--phases", "examples,fuzzing,stateful", "--seed", "7",
         "-H", f"Authorization: Bearer {TOKEN}", "--no-color", "--request-timeout", "30",
         "--generation-database", "none"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    summary = out.stdout[-4000:]
    assert out.returncode == 0, summary
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases and int(cases[1]) == int(cases[2]) >= 200, summary
