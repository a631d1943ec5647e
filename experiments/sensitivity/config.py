"""Config of HW1-3 `sensitivity`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from experiments.core.config import BatchSizeStudy

NAME = "sensitivity"
TITLE = "HW1-3 Flatness vs generalization, part 2: sensitivity vs batch size"


class Config(BatchSizeStudy):
    """Train the course MLP (3×256) with 5 batch sizes (16 … 4096) on MNIST; per model the
    final train/test loss and accuracy and its sensitivity: the Frobenius norm of the gradient
    of each test sample's own cross-entropy w.r.t. its own input (per sample, not the gradient
    of the batch-mean loss), averaged over the test set at the final weights (`sensitivity`;
    `sensitivity_train` the same over the first `measure_subset` training examples). With
    `jacobian`, also Novak et al.'s Frobenius norm of the Jacobian of the class probabilities
    w.r.t. the input. Figures: loss & sensitivity and accuracy & sensitivity vs batch size (two
    y axes), mean ± std over `seeds` seeds per batch size. Finding: the rank correlation of the
    sensitivity with the generalization gap (train − test accuracy) over every model."""

    jacobian: bool = Field(False, description="also the softmax-Jacobian sensitivity")

    PRESETS: ClassVar = {"quick": {"seeds": 2, "epochs": 1, "train_subset": 2000,
                                   "test_subset": 1000, "measure_subset": 500,
                                   "batch_sizes": [16, 64, 256, 1024, 2000]}}
