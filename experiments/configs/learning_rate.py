"""Config of training dynamics `learning-rate`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from experiments.configs import ActivationName, BatchSize, DynamicsConfig, LearningRate

NAME = "learning-rate"
TITLE = "Training dynamics: learning rate"


class Config(DynamicsConfig):
    """Train the same MLP with several learning rates and compare the loss and accuracy curves.
    A rate whose loss turns NaN/inf is stopped at that step and tagged `diverged` (with the
    step) while the others go on. With sgd or momentum all rates train at once as one vmap
    ensemble (per-model learning rates); adaptive optimizers train them one after another."""

    activation: ActivationName = "relu"
    rates: list[LearningRate] = Field(
        default_factory=lambda: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0],
        min_length=1, max_length=16)
    batch_size: BatchSize = 1000
    steps: int = Field(10_000, ge=1, le=1_000_000)

    PRESETS: ClassVar = {"quick": {"steps": 200, "eval_every": 20, "hidden": [128],
                                   "batch_size": 200, "train_subset": 5000, "test_subset": 1000}}
