"""Config of HW1-3 `random-labels`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from experiments.core.config import (
    BatchSize,
    DatasetName,
    Epochs,
    ExperimentConfig,
    LearningRate,
    OptimizerName,
    TestSubset,
    TrainSubset,
    Width,
)

NAME = "random-labels"
TITLE = "HW1-3 Generalization: can a network fit random labels"


class Config(ExperimentConfig):
    """Shuffle a fraction of the training labels once before training (seeded; the chosen
    labels are permuted among themselves, so class counts stay the same) and train the course's
    MLP (3 hidden layers × 256) on them; per-epoch train loss/accuracy (at the epoch's end
    weights, against the shuffled labels) and test loss/accuracy (true labels). Defaults fit the
    first 10 000 MNIST training images in ~50 epochs of Adam on a CPU: train accuracy far
    above chance while test accuracy stays near 10%."""

    dataset: DatasetName = "mnist"
    fraction: float = Field(1.0, ge=0.0, le=1.0, description="fraction of training labels shuffled")
    hidden: list[Width] = Field(default_factory=lambda: [256, 256, 256], min_length=1, max_length=8)
    optimizer: OptimizerName = "adam"
    lr: LearningRate = 1e-3
    batch_size: BatchSize = 128
    epochs: Epochs = 50
    train_subset: TrainSubset | None = 10_000
    test_subset: TestSubset | None = None

    # quick: 500 random labels are memorised (train accuracy 1.0) in ~25 epochs of 4 steps
    PRESETS: ClassVar = {"quick": {"epochs": 25, "train_subset": 500, "test_subset": 1000}}
