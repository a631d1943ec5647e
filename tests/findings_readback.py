"""Reading a run's findings back through MlflowClient, as the tests of the experiments do."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient


def findings_json(client: MlflowClient, run_id: str, tmp_path: Path) -> dict[str, dict]:
    """The parent's findings.json by key, after checking that each finding has its claim,
    statistic, value, interval and verdict, and that the verdict is also its tag
    finding/<key>."""
    path = client.download_artifacts(run_id, "findings.json", str(tmp_path / "findings"))
    found = {f["key"]: f for f in json.loads(Path(path).read_text())}
    tags = client.get_run(run_id).data.tags
    for key, finding in found.items():
        assert {"claim", "statistic", "value", "interval", "verdict"} <= finding.keys()
        assert len(finding["interval"]) == 2 and tags[f"finding/{key}"] == finding["verdict"]
    return found
