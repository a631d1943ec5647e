"""Config of HW1-2 `weight-trajectory`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from experiments.core.config import (
    INPUT_SIZES,
    BatchSize,
    SupervisedConfig,
    Width,
    hidden_widths,
    mlp_params,
)
from experiments.core.cost import BYTES

NAME = "weight-trajectory"
TITLE = "HW1-2 Optimization: the path of the weights during training, in 2-D"
MAX_POINTS = 2000  # collected weight vectors, all held (on the CPU) for one PCA
MAX_VALUES = 200_000_000  # points × parameters: 0.8 GB as float32, twice that in the PCA


class Config(SupervisedConfig):
    """Train the same MLP on MNIST from `seeds` seeds (the training events, trained together as
    one vmap ensemble), keep the weights every `collect_every` epochs (epoch 0 included) as
    safetensors snapshots, and project them to 2-D with PCA fitted over all collected points,
    once for the first layer (its weight and bias) and once for the whole model. Two figures,
    one colour per event, each point annotated with the test accuracy of those weights; a child
    run per event with its metric history."""

    hidden: list[Width] = hidden_widths([128, 128], "hidden widths of the MLP (course: 784-128-128-10)")
    seeds: int = Field(8, ge=1, le=16, description="training events (the course trains 8): "
                                                   "seeds seed, seed+1, …, trained together")
    epochs: int = Field(24, ge=1, le=1000)
    collect_every: int = Field(3, ge=1, le=1000, description="epochs between collected weights")
    batch_size: BatchSize = 100

    PRESETS: ClassVar = {"quick": {"epochs": 6, "train_subset": 2000, "test_subset": 1000,
                                   "hidden": [64, 64], "seeds": 4}}

    @property
    def points(self) -> int:
        """Weight vectors collected: per event epoch 0, every `collect_every`-th epoch, the last."""
        per_event = self.epochs // self.collect_every + 1 + (self.epochs % self.collect_every > 0)
        return self.seeds * per_event

    @model_validator(mode="after")
    def _points_fit(self) -> Config:
        if self.points > MAX_POINTS:
            raise ValueError(f"{self.points} collected points (seeds × collections), at most "
                             f"{MAX_POINTS}: fewer seeds or epochs, or a larger collect_every")
        held = self.points * mlp_params(INPUT_SIZES[self.dataset], self.hidden, 10)
        if held > MAX_VALUES:
            raise ValueError(f"hidden: {held:,} weights held (points × parameters), at most "
                             f"{MAX_VALUES:,}: narrower layers or fewer points")
        return self

    COST_FIELDS: ClassVar = (*SupervisedConfig.COST_FIELDS, "collect_every")

    def held_bytes(self) -> int:
        """The data, and the collected weights twice (kept, and in the PCA)."""
        weights = self.points * mlp_params(INPUT_SIZES[self.dataset], self.hidden, 10)
        return super().held_bytes() + 2 * BYTES * weights
