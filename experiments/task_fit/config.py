"""Config of HW1-1 `task-fit`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from experiments.core.config import (
    INPUT_SIZES,
    BatchSize,
    SupervisedConfig,
)
from experiments.core.cost import POSITIONS, Training, equal_width

NAME = "task-fit"
TITLE = "HW1-1 Deep vs shallow: train on an actual task"


class Config(SupervisedConfig):
    """Train shallow and deep models (CNN or DNN) with about the same number of parameters on
    MNIST or CIFAR-10; compare loss and accuracy per epoch, train and test. Each depth is a
    count of conv layers (CNN, channels from `conv_channels`) or of hidden layers (DNN); the
    remaining widths are solved so every model has `param_budget` parameters within 1%. Each
    depth trains from `seeds` seeds (one ensemble per depth)."""

    family: Literal["cnn", "mlp"] = "cnn"
    depths: list[Annotated[int, Field(ge=1, le=6)]] = Field(
        default_factory=lambda: [1, 3], min_length=1, max_length=6)
    conv_channels: list[Annotated[int, Field(ge=1, le=512)]] = Field(
        default_factory=lambda: [8, 16, 32], min_length=1, max_length=6)
    param_budget: int = Field(60_000, ge=1_000, le=20_000_000)
    batch_size: BatchSize = 64

    PRESETS: ClassVar = {"quick": {"epochs": 2, "train_subset": 5000, "test_subset": 2000,
                                   "seeds": 2}}

    COST_FIELDS: ClassVar = ("param_budget", "depths", "family", "conv_channels", "seeds",
                             "batch_size", "epochs", "dataset", "train_subset")

    def trainings(self) -> list[Training]:
        """One model of `param_budget` parameters per depth; a CNN applies its weights at
        every position of the image and keeps a feature map per channel."""
        size, positions = INPUT_SIZES[self.dataset], POSITIONS[self.dataset]
        if self.family == "mlp":
            return [self.mlp([equal_width(self.param_budget, depth, size, 10)] * depth,
                             self.seeds, self.batch_size, self.examples) for depth in self.depths]
        return [Training(self.param_budget, size + positions * max(self.conv_channels) * depth,
                         self.seeds, self.batch_size, self.examples, self.optimizer, positions)
                for depth in self.depths]
