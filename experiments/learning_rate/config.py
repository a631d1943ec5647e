"""Config of training dynamics `learning-rate`."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from experiments.core.config import ActivationName, BatchSize, Distinct, DynamicsConfig, Steps

NAME = "learning-rate"
TITLE = "Training dynamics: learning rate"

# wider than the shared LearningRate bound: this experiment looks for the rates that diverge
Rate = Annotated[float, Field(gt=0.0, le=1000.0)]


class Config(DynamicsConfig):
    """Train the same MLP with several learning rates and compare the loss and accuracy curves.
    A rate whose loss turns NaN/inf (or exceeds `diverge_loss`) is stopped at that step and
    tagged `diverged` (with the step) while the others go on. Every rate trains from `seeds`
    seeds, all rates and seeds at once as one vmap ensemble (per-model learning rates). The
    default grid runs from 0.001 up to rates that diverge: the course's 0.001 … 2, extended
    upwards (5, 10) so the grid reaches past the stable range."""

    activation: ActivationName = "relu"
    rates: Annotated[list[Rate], Distinct] = Field(
        default_factory=lambda: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0],
        min_length=1, max_length=16)
    batch_size: BatchSize = 1000
    steps: Steps = 10_000
    diverge_loss: float | None = Field(
        1000.0, ge=10.0, le=1e30,
        description="a mini-batch loss above this also counts as diverged (at least 10, above "
                    "the initial cross-entropy ln(classes), or every rate would stop at step 1): "
                    "at large rates a "
                    "ReLU net's loss explodes to 1e10 and more, then its units die and the loss "
                    "sits finite; None = only NaN/inf")

    PRESETS: ClassVar = {"quick": {"steps": 200, "eval_every": 20, "hidden": [128],
                                   "batch_size": 200, "train_subset": 5000, "test_subset": 1000,
                                   "seeds": 2}}

    COST_FIELDS: ClassVar = (*DynamicsConfig.COST_FIELDS, "rates")

    @property
    def ensemble(self) -> int:
        return len(self.rates)
