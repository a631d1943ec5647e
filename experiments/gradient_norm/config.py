"""Config of HW1-2 `gradient-norm`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from experiments.core.config import (
    INPUT_SIZES,
    BatchSize,
    ExperimentConfig,
    LearningRate,
    OptimizerName,
    TargetName,
    TrainSubset,
    Width,
    mlp_training,
)
from experiments.core.cost import BYTES, TRAIN_EXAMPLES, Training

NAME = "gradient-norm"
TITLE = "HW1-2 Optimization: the gradient norm and the loss at every iteration"


class Config(ExperimentConfig):
    """Record, at every iteration, the 2-norm of the gradient over all parameters (of the
    mini-batch loss that step descends) and that loss, for two trainings: an MLP fitting a 1-D
    target function, and an MLP on MNIST. Each task trains from `seeds` seeds as one ensemble:
    one child run per task and seed with the per-step series (logged in batches); one figure
    per task with both curves (mean over the seeds, ±1 std band) over a shared x axis."""

    target: TargetName = "sinc"
    n_points: int = Field(1000, ge=8, le=100_000, description="evenly spaced inputs on [0, 1]")
    function_hidden: list[Width] = Field(default_factory=lambda: [128], min_length=1,
                                         max_length=8, description="hidden widths (1-D fit)")
    function_steps: int = Field(2000, ge=1, le=100_000, description="iterations of the 1-D fit")
    function_batch_size: BatchSize | None = Field(None, description="None = full batch")
    mnist: bool = Field(True, description="also train on MNIST")
    mnist_hidden: list[Width] = Field(default_factory=lambda: [128, 128], min_length=1,
                                      max_length=8, description="hidden widths (MNIST)")
    mnist_steps: int = Field(3000, ge=1, le=100_000, description="iterations on MNIST")
    batch_size: BatchSize = Field(128, description="MNIST mini-batch size")
    train_subset: TrainSubset | None = None
    optimizer: OptimizerName = "adam"
    lr: LearningRate = 1e-3

    PRESETS: ClassVar = {"quick": {"function_steps": 500, "mnist_steps": 300,
                                   "train_subset": 5000, "n_points": 256, "seeds": 2}}

    COST_FIELDS: ClassVar = ("function_hidden", "function_steps", "function_batch_size",
                             "n_points", "mnist", "mnist_hidden", "mnist_steps", "batch_size",
                             "train_subset", "seeds")

    def trainings(self) -> list[Training]:
        batch = self.function_batch_size or self.n_points
        parts = [mlp_training(1, self.function_hidden, 1, self.seeds, batch,
                              batch * self.function_steps, self.optimizer)]
        if self.mnist:
            parts.append(mlp_training(INPUT_SIZES["mnist"], self.mnist_hidden, 10, self.seeds,
                                      self.batch_size, self.batch_size * self.mnist_steps,
                                      self.optimizer))
        return parts

    def held_bytes(self) -> int:
        """MNIST's training images, when it trains on them."""
        examples = self.train_subset or TRAIN_EXAMPLES["mnist"]
        return BYTES * INPUT_SIZES["mnist"] * examples if self.mnist else 0
