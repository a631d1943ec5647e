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
from experiments.core.cost import Training

NAME = "batch-size"
TITLE = "Training dynamics: batch size"


class Config(DynamicsConfig):
    """Train the same MLP with several batch sizes (mini-batches up to the full batch), each
    from `seeds` seeds, for the same budget — a number of steps (as in the course), of epochs,
    or until the full-pass training loss reaches `target_loss` (at most `steps` steps) — and
    compare the train/test loss and accuracy curves (mean ± std over seeds), the noise of the
    per-step mini-batch losses and the final accuracy per batch size. Findings: smaller batches
    give noisier per-step losses; at an equal number of epochs (budget=epochs) the smallest
    batch reaches at least the test accuracy of the full batch."""

    activation: ActivationName = "relu"
    lr: LearningRate = 0.1
    batch_sizes: Annotated[list[BatchSize | Literal["full"]], Distinct] = Field(
        default_factory=lambda: [50, 100, 1000, "full"], min_length=1, max_length=12)
    budget: Literal["steps", "epochs", "target_loss"] = Field(
        "steps", description="train every batch size for `steps` steps, for `epochs` epochs, or "
                             "until its training loss reaches `target_loss` (at most `steps` steps)")
    steps: int = Field(5000, ge=1, le=100_000, description="steps per batch size (budget=steps), "
                       "the cap (target_loss); every step's mini-batch loss is kept and logged")
    target_loss: float = Field(0.05, gt=0.0, le=10.0, description="full-pass training loss to "
                               "reach, checked every `eval_every` steps (budget=target_loss)")
    epochs: Epochs = 10
    eval_every: int = Field(100, ge=1, le=100_000,
                            description="steps (or epochs, with budget=epochs) between evaluations")

    PRESETS: ClassVar = {"quick": {"seeds": 2, "steps": 200, "eval_every": 20, "hidden": [128],
                                   "train_subset": 5000, "test_subset": 1000}}

    COST_FIELDS: ClassVar = DynamicsConfig.BATCH_STUDY_COST

    def trainings(self) -> list[Training]:
        return self.per_batch_size(self.batch_sizes)
