#!/usr/bin/env python3
"""The self-test's client of a running stack (deploy/selftest/run.sh): submit a job over the
API, wait for it, read it back from the MLflow server. Standard library only, so it runs with
the machine's python3 before any project environment exists.

    stack_client.py submit            → prints the job id
    stack_client.py wait ID [STATUS]  → waits until the job is STATUS (default FINISHED)
    stack_client.py status ID         → prints the job's status
    stack_client.py pending           → prints the queue's pending count (API /healthz)
    stack_client.py readback ID       → params, metrics and a figure of the job, from MLflow

Settings: the stack's own (deploy/selftest/selftest.env, which run.sh exports): PHENOLAB_API_PORT,
PHENOLAB_API_TOKEN, MLFLOW_PORT, and MLFLOW_APP_NAME=basic-auth with MLFLOW_ADMIN_PASSWORD (log in
to MLflow as admin); SELFTEST_TIMEOUT (seconds, default 600).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# A tiny function-fit job: the cost is the stack's, not the training's.
JOB = {"preset": "quick", "epochs": 20, "n_points": 32, "models": [[8]], "eval_every": 5}
API = f"http://127.0.0.1:{os.environ['PHENOLAB_API_PORT']}"
MLFLOW = f"http://127.0.0.1:{os.environ['MLFLOW_PORT']}"
TOKEN = os.environ.get("PHENOLAB_API_TOKEN", "")
TIMEOUT = float(os.environ.get("SELFTEST_TIMEOUT", "600"))
MLFLOW_LOGIN = ("Basic " + base64.b64encode(f"admin:{os.environ['MLFLOW_ADMIN_PASSWORD']}".encode()).decode()
                if os.environ.get("MLFLOW_APP_NAME") == "basic-auth" else "")


def request(url: str, body: dict[str, Any] | None = None, authorization: str = "") -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if authorization:
        req.add_header("Authorization", authorization)
    with urllib.request.urlopen(req, timeout=60) as reply:
        return reply.read()


def api(path: str, body: dict[str, Any] | None = None) -> Any:
    return json.loads(request(API + path, body, f"Bearer {TOKEN}" if TOKEN else ""))


def mlflow(endpoint: str, **query: Any) -> Any:
    """GET one of the MLflow server's REST endpoints."""
    url = f"{MLFLOW}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    return json.loads(request(url, authorization=MLFLOW_LOGIN))


def submit() -> str:
    job = api("/experiments/function-fit", JOB)
    assert job["status"] == "SCHEDULED", job
    return job["id"]


def wait(job_id: str, status: str = "FINISHED") -> None:
    deadline, job = time.monotonic() + TIMEOUT, {}
    while time.monotonic() < deadline:
        job = api(f"/jobs/{job_id}")
        if job["status"] == status:
            return
        if job["status"] in ("FINISHED", "FAILED", "KILLED"):
            break
        time.sleep(1)
    sys.exit(f"job {job_id}: {job.get('status')} (wanted {status}); {job.get('error') or ''}")


def artifacts(run_id: str, path: str = "") -> list[str]:
    """Every artifact file of a run, listed through the MLflow server."""
    listing = mlflow("artifacts/list", run_id=run_id, path=path).get("files", [])
    found = []
    for entry in listing:
        found += artifacts(run_id, entry["path"]) if entry["is_dir"] else [entry["path"]]
    return found


def readback(job_id: str) -> None:
    """The job as the MLflow server has it: FINISHED, with params, metrics (its own or its
    variants' child runs) and a PNG figure downloaded through the served artifacts."""
    run = mlflow("runs/get", run_id=job_id)["run"]
    assert run["info"]["status"] == "FINISHED", run["info"]
    params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
    search = json.loads(request(f"{MLFLOW}/api/2.0/mlflow/runs/search", {
        "experiment_ids": [run["info"]["experiment_id"]],
        "filter": f"tags.mlflow.parentRunId = '{job_id}'"}, MLFLOW_LOGIN))
    metrics = {m["key"]: m["value"] for r in [run, *search.get("runs", [])]
               for m in r["data"].get("metrics", [])}
    figures = [path for path in artifacts(job_id) if path.endswith(".png")]
    assert params, "the job's run has no params"
    assert metrics, "neither the job nor its variants have metrics"
    assert figures, f"no figure among the job's artifacts: {artifacts(job_id)}"
    png = request(f"{MLFLOW}/get-artifact?" + urllib.parse.urlencode(
        {"path": figures[0], "run_uuid": job_id}), authorization=MLFLOW_LOGIN)
    assert png.startswith(b"\x89PNG") and len(png) > 1000, f"{figures[0]}: not a PNG"
    login = "basic-auth: anonymous read refused (401)" if refused_anonymous(job_id) else "open"
    print(f"MLflow server {login}; job {job_id}: {len(params)} params (epochs={params.get('epochs')}), "
          f"{len(metrics)} metrics, {len(search.get('runs', []))} child run(s), "
          f"figures {figures}, {figures[0]} {len(png)} bytes")


def refused_anonymous(job_id: str) -> bool:
    """With basic-auth on, a request without a login must get 401; without it, none is needed."""
    try:
        request(f"{MLFLOW}/api/2.0/mlflow/runs/get?run_id={job_id}")
    except urllib.error.HTTPError as error:
        assert MLFLOW_LOGIN and error.code == 401, f"anonymous read: HTTP {error.code}"
        return True
    assert not MLFLOW_LOGIN, "basic-auth is on but an anonymous read was served"
    return False


def main(argv: list[str]) -> None:
    command, *args = argv or ["help"]
    if command == "submit":
        print(submit())
    elif command == "wait":
        wait(*args)
    elif command == "status":
        print(api(f"/jobs/{args[0]}")["status"])
    elif command == "pending":
        print(api("/healthz")["queue"]["pending"])
    elif command == "readback":
        readback(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
