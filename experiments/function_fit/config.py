"""Config of HW1-1 `function-fit`."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from experiments.core.config import (
    ActivationName,
    Distinct,
    Epochs,
    ExperimentConfig,
    LearningRate,
    OptimizerName,
    TargetName,
    Width,
    mlp_training,
)
from experiments.core.cost import Training, equal_width

NAME = "function-fit"
TITLE = "HW1-1 Deep vs shallow: simulate a function"

Bound = Annotated[float, Field(ge=-10.0, le=10.0)]
Hidden = Annotated[list[Width], Field(min_length=1, max_length=16)]


class Config(ExperimentConfig):
    """Fit a 1-D target function (sinc, sign, …) on a bounded domain with DNNs of the same
    parameter count but different depths; compare their loss per epoch and their predictions
    against the ground truth. Models are given as hidden widths, or by `param_budget` and
    `depths` (widths solved within 1% of the budget). Each architecture is tuned as the course
    asks: trained at every rate of `lrs`, `seeds` seeds each (all of one architecture as one
    ensemble), and compared at its best rate (lowest mean final training MSE over its seeds)."""

    target: TargetName = "sinc"
    domain: tuple[Bound, Bound] = (0.0, 1.0)
    n_points: int = Field(1000, ge=10, le=100_000, description="evenly spaced training inputs")
    models: list[Hidden] = Field(
        default_factory=lambda: [[190], [10, 18, 15, 4], [5, 10, 10, 10, 10, 10, 5]],
        min_length=1, max_length=8, description="hidden widths of each model (571/572/571 params)")
    param_budget: int | None = Field(None, ge=10, le=1_000_000,
                                     description="when set, widths come from this and `depths`")
    depths: list[Annotated[int, Field(ge=1, le=16)]] = Field(
        default_factory=lambda: [1, 4, 7], min_length=1, max_length=8)
    activation: ActivationName = "relu"
    optimizer: OptimizerName = "adam"
    lrs: Annotated[list[LearningRate], Distinct] = Field(
        default_factory=lambda: [1e-3, 3e-3, 1e-2], min_length=1, max_length=6,
        description="the learning-rate grid each architecture is tuned over (half-decade "
                    "steps around Adam's usual 1e-3)")
    epochs: Epochs = 20_000
    eval_every: int = Field(10, ge=1, le=10_000, description="epochs between loss records")
    converge_tol: float = Field(1e-3, ge=0.0, le=1.0,
                                description="relative loss improvement that still counts")
    converge_patience: int = Field(100, ge=1, le=100_000,
                                   description="records without improvement before stopping")

    PRESETS: ClassVar = {"quick": {"epochs": 2000, "n_points": 256, "seeds": 2}}

    @model_validator(mode="after")
    def _domain_ordered(self) -> Config:
        if self.domain[0] >= self.domain[1]:
            raise ValueError("domain: the lower bound must be below the upper bound")
        return self

    COST_FIELDS: ClassVar = ("models", "param_budget", "depths", "n_points", "epochs", "seeds",
                             "lrs")

    @property
    def ensemble(self) -> int:
        return len(self.lrs)

    def trainings(self) -> list[Training]:
        """Each architecture on all `n_points` at once, `epochs` times, its copies together."""
        hidden = self.models if self.param_budget is None else [
            [equal_width(self.param_budget, depth, 1, 1)] * depth for depth in self.depths]
        return [mlp_training(1, widths, 1, self.seeds * self.ensemble, self.n_points,
                             self.n_points * self.epochs, self.optimizer) for widths in hidden]
