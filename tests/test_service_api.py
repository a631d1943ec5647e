"""The API on its own (no worker): catalog, bad input, auth, listing, and no torch in its process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_lab import TINY, Lab

UNKNOWN_ID = "0" * 32


@pytest.fixture(scope="module", autouse=True)
def cancel_leftovers(lab: Lab) -> Iterator[None]:
    """The jobs these tests queue are cancelled at the end, so no worker ever runs them."""
    yield
    lab.cancel_queued()


def test_api_process_never_imports_torch(lab: Lab, tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        from fastapi.testclient import TestClient
        from service.app import create_app

        with TestClient(create_app()) as http:
            assert http.get("/experiments").status_code == 200
            job = http.post("/experiments/function-fit", json={"preset": "quick"}).json()
            assert http.get(f"/jobs/{job['id']}").json()["status"] == "SCHEDULED"
            assert http.get("/jobs").status_code == 200
            assert http.get("/healthz").status_code == 200
            assert http.post(f"/jobs/{job['id']}/cancel").json()["status"] == "KILLED"
        print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
    """)
    env = {**lab.env, "PHENOLAB_API_TOKEN": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_catalog(lab: Lab) -> None:
    catalog = lab.http.get("/experiments").json()
    names = [entry["name"] for entry in catalog]
    assert "function-fit" in names and names == sorted(names)
    entry = lab.http.get("/experiments/function-fit").json()
    assert entry["schema"]["properties"]["epochs"]["maximum"] == 100_000
    assert entry["defaults"]["epochs"] == 20_000 and "quick" in entry["presets"]
    assert entry["description"] and entry["title"]
    paths = lab.http.get("/openapi.json").json()["paths"]
    assert set(paths["/experiments/function-fit"]) == {"get", "post"}  # each experiment's own


def test_submit_answers_202_with_links_and_lists_jobs_newest_first(lab: Lab) -> None:
    response = lab.http.post("/experiments/function-fit", json={**TINY, "seed": 7})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "SCHEDULED" and len(job["id"]) == 32
    assert job["links"]["self"] == f"{lab.url}/jobs/{job['id']}"
    assert job["links"]["mlflow"].endswith(f"/runs/{job['id']}")
    ids = [job["id"]] + [lab.submit() for _ in range(2)]

    detail = lab.job(ids[0])
    assert detail["config"]["seed"] == 7 and detail["config"]["epochs"] == TINY["epochs"]
    assert detail["attempt"] == 1 and detail["children"] == [] and detail["progress"] is None

    first = lab.http.get("/jobs", params={"limit": 2, "status": "SCHEDULED"}).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    rest = lab.http.get("/jobs", params={"limit": 2, "status": "SCHEDULED",
                                         "page_token": first["next_page_token"]}).json()
    assert ids[0] in [j["id"] for j in rest["jobs"]]
    assert lab.http.get("/jobs", params={"status": "FINISHED"}).json()["jobs"] == []
    by_name = lab.http.get("/jobs", params={"experiment": "function-fit", "limit": 500}).json()
    assert set(ids) <= {j["id"] for j in by_name["jobs"]}

    assert lab.http.post(f"/jobs/{ids[1]}/cancel").json()["status"] == "KILLED"
    assert lab.job(ids[1])["status"] == "KILLED"
    again = lab.http.post(f"/jobs/{ids[1]}/cancel")
    assert again.status_code == 409 and "already ended KILLED" in again.json()["detail"]

    health = lab.http.get("/healthz").json()
    assert health["status"] == "ok" and health["queue"]["backend"] == "sqlite"
    assert health["queue"]["pending"] >= 2 and health["store"]["ok"]


POST = "/experiments/function-fit"
BAD_INPUT = [
    # (name, method, path, body: dict → JSON, str → raw, status, text in the message)
    ("unknown experiment", "POST", "/experiments/nope", {}, 404,
     "unknown experiment 'nope'; known: "),
    ("unknown experiment read", "GET", "/experiments/nope", None, 404, "function-fit"),
    ("unknown field", "POST", POST, {"bogus": 1}, 422, "bogus: Extra inputs are not permitted"),
    ("wrong type int", "POST", POST, {"epochs": "many"}, 422, "epochs: Input should be a valid int"),
    ("boolean seed", "POST", POST, {"seed": True}, 422, "seed: Input should be a valid integer"),
    ("boolean width", "POST", POST, {"models": [[True, 3]]}, 422,
     "models.0.0: Input should be a valid integer"),
    ("string for an integer", "POST", POST, {"epochs": "100"}, 422,
     "epochs: Input should be a valid integer"),
    ("float for an integer", "POST", POST, '{"epochs": 20.0}', 422,
     "epochs: Input should be a valid integer"),
    ("string for a boolean", "POST", "/experiments/interpolation", {"same_init": "yes"}, 422,
     "same_init: Input should be a valid boolean"),
    ("integer for a boolean", "POST", "/experiments/interpolation", {"same_init": 1}, 422,
     "same_init: Input should be a valid boolean"),
    ("a union's member names", "POST", "/experiments/batch-size", {"batch_sizes": [1.5]}, 422,
     "invalid config: batch_sizes.0: Input should be a valid integer or Input should be 'full'"),
    ("wrong type list", "POST", POST, {"models": "wide"}, 422, "models: Input should be a valid list"),
    ("wrong enum", "POST", POST, {"target": "cosh"}, 422, "target: Input should be"),
    ("negative", "POST", POST, {"epochs": -5}, 422, "epochs: Input should be greater than or equal"),
    ("huge int", "POST", POST, {"epochs": 10**12}, 422, "epochs: Input should be less than or equal"),
    ("huge width", "POST", POST, {"models": [[10**9]]}, 422, "models.0.0: Input should be less"),
    ("too many models", "POST", POST, {"models": [[4]] * 100}, 422, "models: List should have at most"),
    ("inf", "POST", POST, '{"lrs": [1e999]}', 422, "lrs.0: Input should be"),
    ("nan", "POST", POST, '{"lrs": [NaN]}', 422, "lrs.0: Input should be"),
    ("zero lr", "POST", POST, {"lrs": [0]}, 422, "lrs.0: Input should be greater than 0"),
    ("bad domain", "POST", POST, {"domain": [1, 0]}, 422, "lower bound must be below"),
    ("a job too large", "POST", POST, {"models": [[8192] * 16] * 8}, 422,
     "GiB of memory (PHENOLAB_MAX_JOB_MEMORY_GB) and over the limit of 30,000 TFLOPs "
     "(PHENOLAB_MAX_JOB_TFLOPS): models: the job's size grows with it"),
    ("a job of too many wide rates", "POST", "/experiments/learning-rate",
     {"hidden": [8192] * 8, "rates": [(n + 1) / 100 for n in range(16)]}, 422,
     "GiB of memory (PHENOLAB_MAX_JOB_MEMORY_GB) and over the limit of 30,000 TFLOPs "
     "(PHENOLAB_MAX_JOB_TFLOPS): hidden: the job's size grows with it; rates: the job's size"),
    ("a job of too wide batches", "POST", "/experiments/batch-size",
     {"hidden": [8192] * 8, "batch_sizes": [50_000, "full"]}, 422,
     "hidden: the job's size grows with it; batch_sizes: the job's size grows with it"),
    ("a job of too wide models", "POST", "/experiments/interpolation", {"hidden": [8192] * 8},
     422, "over the limit of 16 GiB of memory (PHENOLAB_MAX_JOB_MEMORY_GB)"),
    ("unknown preset", "POST", POST, {"preset": "huge"}, 422, "preset: unknown preset 'huge'"),
    ("preset wrong type", "POST", POST, {"preset": [1]}, 422, "preset: unknown preset [1]"),
    ("not JSON", "POST", POST, "{oops", 422, "body: not JSON"),
    ("JSON array", "POST", POST, "[1, 2]", 422, "body: expected a JSON object, got list"),
    ("deep nesting", "POST", POST, "[" * 30_000, 422, "body: not JSON"),
    ("deep list in a field", "POST", POST, '{"models": ' + "[" * 600 + "]" * 600 + "}", 422,
     "models.0.0: Input should be a valid integer"),
    ("4300+ digit int", "POST", POST, '{"epochs": ' + "9" * 5000 + "}", 422, "body: not JSON"),
    ("oversized body", "POST", POST, {"x": "a" * 100_000}, 413, "request body over 65536 bytes"),
    ("unknown job", "GET", f"/jobs/{UNKNOWN_ID}", None, 404, f"no job '{UNKNOWN_ID}'"),
    ("malformed job id", "GET", "/jobs/not-a-run-id", None, 404, "no job"),
    ("cancel unknown job", "POST", f"/jobs/{UNKNOWN_ID}/cancel", None, 404, "no job"),
    ("bad status filter", "GET", "/jobs?status=DONE", None, 422, "status: Input should be"),
    ("bad limit", "GET", "/jobs?limit=0", None, 422, "limit: Input should be greater than or equal"),
    ("huge limit", "GET", "/jobs?limit=99999999999", None, 422, "limit: Input should be less"),
    ("bad page token", "GET", "/jobs?page_token=xyz", None, 400, "bad page_token"),
    ("page token of a list", "GET", "/jobs?page_token=WzFd", None, 400, "bad page_token"),
    ("page token offset inf", "GET", "/jobs?page_token=eyJvZmZzZXQiOiAxZTk5OX0=", None, 400,
     "bad page_token"),
    ("negative page offset", "GET", "/jobs?page_token=eyJvZmZzZXQiOiAtNX0=", None, 400,
     "bad page_token: offset -5 out of range"),
    ("no such route", "GET", "/nope", None, 404, "Not Found"),
    ("method not allowed", "DELETE", "/jobs", None, 405, "Method Not Allowed"),
    ("unknown experiment filter", "GET", "/jobs?experiment=nope", None, 404, "unknown experiment"),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_a_clear_4xx(lab: Lab, case: tuple) -> None:
    _, method, path, body, status, text = case
    kwargs = ({"json": body} if isinstance(body, dict)
              else {"content": body, "headers": {"content-type": "application/json"}}
              if isinstance(body, str) else {})
    response = lab.http.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert text in response.json()["detail"], response.text
    errors = response.json()["errors"]
    assert errors and all(e["field"] and e["reason"] for e in errors), response.text


def test_oversized_streamed_body_is_413(lab: Lab) -> None:
    chunks = (json.dumps({"x": "a" * 50_000}).encode() for _ in range(3))  # no Content-Length
    response = lab.http.post(POST, content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_token_is_required_except_for_health_and_docs(lab: Lab) -> None:
    for headers, reason in (({}, "needs 'Authorization: Bearer"),
                            ({"Authorization": "Bearer wrong"}, "wrong bearer token"),
                            ({"Authorization": "Basic czNjcmV0"}, "needs 'Authorization")):
        for method, path in (("GET", "/experiments"), ("POST", POST), ("GET", "/jobs"),
                             ("GET", f"/jobs/{UNKNOWN_ID}"),
                             ("POST", f"/jobs/{UNKNOWN_ID}/cancel")):
            response = lab.http.request(method, path, headers=headers or {"Authorization": ""})
            assert response.status_code == 401, (method, path, response.text)
            assert reason in response.json()["detail"]
            assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/healthz", "/docs", "/openapi.json"):
        assert lab.http.get(path, headers={"Authorization": ""}).status_code == 200


def test_links_use_the_public_api_url(store: str) -> None:
    """Behind a proxy the links name PHENOLAB_API_URL, not the address the API was reached at."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings, settings

    try:
        with TestClient(create_app(Settings(api_url="https://lab.example.org/"))) as http:
            job = http.post(POST, json=TINY).json()
            assert job["links"]["self"] == f"https://lab.example.org/jobs/{job['id']}"
            assert http.post(f"/jobs/{job['id']}/cancel").json()["links"]["cancel"] == \
                f"https://lab.example.org/jobs/{job['id']}/cancel"
    finally:
        settings.cache_clear()  # importing service.app cached this test's environment
