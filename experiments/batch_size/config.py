"""Config of training dynamics `batch-size`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from experiments.core.config import (
    ActivationName,
    BatchSize,
    Distinct,
    DynamicsConfig,
    Epochs,
    LearningRate,
)

NAME = "batch-size"
TITLE = "Training dynamics: batch size"


class Config(DynamicsConfig):
    """Train the same MLP with several batch sizes (mini-batches up to the full batch) for the
    same budget — a number of steps, as in the course, or of epochs — and compare the train/test
    loss and accuracy curves and the final accuracy per batch size."""

    activation: ActivationName = "relu"
    lr: LearningRate = 0.1
    batch_sizes: Annotated[list[BatchSize | Literal["full"]], Distinct] = Field(
        default_factory=lambda: [50, 100, 1000, "full"], min_length=1, max_length=12)
    budget: Literal["steps", "epochs"] = Field(
        "steps", description="train every batch size for `steps` steps or for `epochs` epochs")
    steps: int = Field(5000, ge=1, le=100_000, description="steps per batch size (budget=steps); "
                         "every step's mini-batch loss is kept and logged")
    epochs: Epochs = 10
    eval_every: int = Field(100, ge=1, le=100_000,
                            description="steps (or epochs, with budget=epochs) between evaluations")

    PRESETS: ClassVar = {"quick": {"steps": 200, "eval_every": 20, "hidden": [128],
                                   "train_subset": 5000, "test_subset": 1000}}
