"""Config of training dynamics `early-stopping`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from experiments.core.config import ActivationName, BatchSize, DynamicsConfig, LearningRate, Steps

NAME = "early-stopping"
TITLE = "Training dynamics: early stopping"


class Config(DynamicsConfig):
    """Hold out a seeded validation split of the training set; train, measure the validation
    loss every `eval_every` steps, stop when it has not improved for `patience` evaluations,
    restore the best-validation weights and save them as a snapshot; report the test metrics of
    the restored model and plot train/validation loss with the stopping point marked. Each of
    `seeds` seeds (its own initialisation and data order; the same validation split) has its
    own stopper and its own restored weights. Findings: the restored weights have the lowest
    validation loss seen; their test loss is no worse than the last weights'."""

    activation: ActivationName = "relu"
    lr: LearningRate = 0.1
    batch_size: BatchSize = 100
    steps: Steps = Field(30_000, description="the most steps to train")
    eval_every: int = Field(500, ge=1, le=100_000, description="steps between validations")
    validation: int = Field(5000, ge=10, le=30_000,
                            description="training examples held out for validation")
    patience: int = Field(5, ge=1, le=1000,
                          description="validations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, le=10.0,
                             description="the drop in validation loss that counts as better")

    PRESETS: ClassVar = {"quick": {"seeds": 2, "steps": 3000, "eval_every": 20, "patience": 5,
                                   "hidden": [128], "train_subset": 1500, "validation": 500,
                                   "test_subset": 1000, "optimizer": "adam", "lr": 0.001}}

    @model_validator(mode="after")
    def _something_left_to_fit(self) -> Config:
        if self.train_subset is not None and self.validation >= self.train_subset:
            raise ValueError(f"validation ({self.validation}) must be smaller than train_subset "
                             f"({self.train_subset}): some examples must be left to fit on")
        return self
