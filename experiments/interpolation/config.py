"""Config of HW1-3 `interpolation`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiments.core.config import (
    COURSE_MLP,
    BatchSize,
    Budget,
    DatasetConfig,
    LearningRate,
    OptimizerName,
    TrainSubset,
    Width,
    hidden_widths,
)
from experiments.core.cost import Training

NAME = "interpolation"
TITLE = "HW1-3 Flatness vs generalization, part 1: the line between two trained models"


class Approach(BaseModel):
    """How one of the two models is trained."""

    model_config = ConfigDict(extra="forbid", strict=True)  # as strict as the config

    batch_size: BatchSize = 64
    lr: LearningRate = 1e-3


class Config(DatasetConfig, Budget):
    """Train m1 and m2 with two approaches (default batch size 64 vs 1024; preset `lr`:
    learning rate 1e-3 vs 1e-2), each from `seeds` seeds, the pair of one seed from the same
    initialisation unless `same_init` is off, both with the same `budget` (default: until the
    training loss reaches `target_loss`, as Keskar et al. compare batch sizes); then, per seed,
    evaluate θ(α) = (1−α)·θ1 + α·θ2 for α from `alpha_min` to `alpha_max` in steps of
    `alpha_step`, all α at once: train and test cross-entropy (log scale) and accuracy vs α
    on one figure, mean ± std over the seeds. On the parent run the metrics `interp_*` (means
    over seeds) carry step = round(100·α). Finding (Keskar et al. fig. 3): the train loss
    rises more steeply beyond the large-batch end (α = 1 + `delta`) than beyond the
    small-batch end (α = −`delta`), and blows up at the ends of the line."""

    hidden: list[Width] = hidden_widths(COURSE_MLP)
    approaches: list[Approach] = Field(
        default_factory=lambda: [Approach(batch_size=64), Approach(batch_size=1024)],
        min_length=2, max_length=2, description="m1's and m2's training")
    same_init: bool = True
    optimizer: OptimizerName = "adam"
    alpha_min: float = Field(-1.0, ge=-5.0, le=5.0)
    alpha_max: float = Field(2.0, ge=-5.0, le=5.0)
    alpha_step: float = Field(0.1, ge=0.01, le=1.0)
    delta: float = Field(0.5, ge=0.01, le=5.0, description="how far beyond each end (in α) the "
                         "finding compares the rise of the loss; always on the α grid")
    eval_subset: TrainSubset | None = Field(
        10_000, description="first N training examples for the train loss along the line")

    PRESETS: ClassVar = {
        "quick": {"seeds": 2, "epochs": 10, "train_subset": 2000, "test_subset": 1000,
                  "eval_subset": 1000, "alpha_step": 0.25},
        "lr": {"approaches": [{"batch_size": 64, "lr": 1e-3}, {"batch_size": 64, "lr": 1e-2}]},
    }

    @model_validator(mode="after")
    def _alpha_range(self) -> Config:
        if self.alpha_min >= self.alpha_max:
            raise ValueError("alpha_min must be below alpha_max")
        return self

    COST_FIELDS: ClassVar = ("hidden", "approaches", "seeds", "epochs", "dataset", "train_subset")

    def trainings(self) -> list[Training]:
        return [self.mlp(self.hidden, self.seeds, approach.batch_size,
                         self.train_examples * self.epochs) for approach in self.approaches]
