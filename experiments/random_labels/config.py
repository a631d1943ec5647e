"""Config of HW1-3 `random-labels`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from experiments.core.config import (
    COURSE_MLP,
    Epochs,
    SupervisedConfig,
    TrainSubset,
    Width,
    hidden_widths,
)

NAME = "random-labels"
TITLE = "HW1-3 Generalization: can a network fit random labels"


class Config(SupervisedConfig):
    """Shuffle a fraction of the training labels once before training (seeded; the chosen
    labels are permuted among themselves, so class counts stay the same) and train the course's
    MLP (3 hidden layers × 256) on them; per-epoch train loss/accuracy (at the epoch's end
    weights, against the shuffled labels) and test loss/accuracy (true labels), from `seeds`
    seeds (one ensemble, the same shuffled labels). Defaults fit the first 10 000 MNIST
    training images in ~50 epochs of Adam on a CPU: train accuracy far above chance while test
    accuracy stays near 10%."""

    fraction: float = Field(1.0, ge=0.0, le=1.0, description="fraction of training labels shuffled")
    hidden: list[Width] = hidden_widths(COURSE_MLP)
    epochs: Epochs = 50
    train_subset: TrainSubset | None = 10_000

    # quick: 500 random labels are memorised (train accuracy 1.0) in ~25 epochs of 4 steps
    PRESETS: ClassVar = {"quick": {"epochs": 25, "train_subset": 500, "test_subset": 1000,
                                   "seeds": 2}}
