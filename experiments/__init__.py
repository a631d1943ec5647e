"""Phenolab experiments: the science of how deep networks behave, one module per experiment.

`experiments.run("sensitivity", {"epochs": 3})` runs one from Python, the same code path as
`phenolab run` and the queue workers. Importing this package does not import torch.
"""

from __future__ import annotations

from typing import Any


def run(name: str, config: Any = None, **kwargs: Any) -> str:
    """Run an experiment in this process; returns the MLflow parent run id (the job id)."""
    from experiments.runner import run_experiment

    return run_experiment(name, config, **kwargs)
