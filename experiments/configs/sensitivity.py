"""Config of HW1-3 `sensitivity`, and the batch-size study it shares with `sharpness`."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from experiments.configs import (
    BatchSize,
    DatasetName,
    Distinct,
    Epochs,
    ExperimentConfig,
    LearningRate,
    OptimizerName,
    TestSubset,
    TrainSubset,
    Width,
)

NAME = "sensitivity"
TITLE = "HW1-3 Flatness vs generalization, part 2: sensitivity vs batch size"


class BatchSizeStudy(ExperimentConfig):
    """One MLP trained once per batch size (`repeats` seeds each, trained together as a vmap
    ensemble), same optimizer, learning rate and number of epochs for all."""

    dataset: DatasetName = "mnist"
    hidden: list[Width] = Field(default_factory=lambda: [256, 256, 256], min_length=1, max_length=8)
    batch_sizes: Annotated[list[BatchSize], Distinct] = Field(
        default_factory=lambda: [16, 64, 256, 1024, 4096], min_length=1, max_length=12)
    repeats: int = Field(1, ge=1, le=8, description="seeds per batch size, trained together")
    optimizer: OptimizerName = "adam"
    lr: LearningRate = 1e-3
    epochs: Epochs = 10
    train_subset: TrainSubset | None = None
    test_subset: TestSubset | None = None
    measure_subset: TrainSubset = Field(
        10_000, description="first N training examples the train-set measures use")


class Config(BatchSizeStudy):
    """Train the course MLP (3×256) with 5 batch sizes (16 … 4096) on MNIST; per model the
    final train/test loss and accuracy and its sensitivity: the Frobenius norm of the gradient
    of each test sample's own cross-entropy w.r.t. its own input (per sample, not the gradient
    of the batch-mean loss), averaged over the test set at the final weights (`sensitivity`;
    `sensitivity_train` the same over the first `measure_subset` training examples). With
    `jacobian`, also Novak et al.'s Frobenius norm of the Jacobian of the class probabilities
    w.r.t. the input. Figures: loss & sensitivity and accuracy & sensitivity vs batch size (two
    y axes)."""

    jacobian: bool = Field(False, description="also the softmax-Jacobian sensitivity")

    PRESETS: ClassVar = {"quick": {"epochs": 1, "train_subset": 2000, "test_subset": 1000,
                                   "measure_subset": 500, "batch_sizes": [16, 64, 256, 1024, 2000]}}
