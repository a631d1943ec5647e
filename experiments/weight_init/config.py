"""Config of training dynamics `weight-init`."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from experiments.core.config import ActivationName, BatchSize, Distinct, DynamicsConfig, LearningRate

NAME = "weight-init"
TITLE = "Training dynamics: weight initialization"

Variance = Annotated[float, Field(gt=0.0, le=100.0)]
MAX_RECORDS = 200  # evaluations per model: one ridge each in the histogram figures
MAX_HISTOGRAM_VALUES = 50_000_000  # sampled values held (as Python floats) for one activation


class Config(DynamicsConfig):
    """Train the same MLP from zero weights and from Gaussian weights of several variances, with
    sigmoid, tanh or ReLU units; every `eval_every` steps record per layer the histograms of
    weights, biases and activations (TensorBoard's histogram view, as figures), the gradient
    norm of each weight and bias, the saturated fraction of the units and the spread between
    units (0 = all identical), beside the train/test loss and accuracy of each init, each init
    from `seeds` seeds (curves: mean ± std over seeds; histograms: the first seed). Findings:
    zero init never breaks the symmetry of the units; with sigmoid/tanh, larger variances
    saturate more units and the first layer's gradient shrinks relative to the last's."""

    activations: Annotated[list[ActivationName], Distinct] = Field(
        default_factory=lambda: ["sigmoid", "tanh", "relu"], min_length=1, max_length=3)
    zero_init: bool = Field(True, description="include all-zero weights and biases")
    variances: Annotated[list[Variance], Distinct] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3, 1.0, 2.0], max_length=10,
        description="variances of the Gaussian weight inits (biases start at 0)")
    fan_in: bool = Field(False, description="divide each variance by the layer's fan-in "
                                            "(variance 2 with ReLU = He init)")
    lr: LearningRate = 0.1
    batch_size: BatchSize = 100
    probe_size: int = Field(512, ge=16, le=10_000,
                            description="training examples the per-layer statistics use")
    hist_samples: int = Field(4096, ge=64, le=100_000,
                              description="values per histogram (a fixed random subset)")

    PRESETS: ClassVar = {"quick": {"seeds": 2, "steps": 300, "eval_every": 20, "hidden": [128, 128],
                                   "train_subset": 5000, "test_subset": 1000, "probe_size": 256}}

    @model_validator(mode="after")
    def _some_init(self) -> Config:
        if not self.zero_init and not self.variances:
            raise ValueError("variances: give at least one, or set zero_init")
        return self

    @model_validator(mode="after")
    def _records_fit(self) -> Config:
        """Every evaluation keeps, per init and seed, up to `hist_samples` values of each
        weight, bias and activation tensor until the activation's figures are drawn."""
        records = self.steps // self.eval_every + 1  # + the initial weights
        if records > MAX_RECORDS:
            raise ValueError(f"steps / eval_every: {records} evaluations, at most {MAX_RECORDS}")
        tensors = 3 * len(self.hidden) + 2  # weight and bias per Linear, one activation per hidden
        models = (len(self.variances) + self.zero_init) * self.seeds
        held = records * models * tensors * self.hist_samples
        if held > MAX_HISTOGRAM_VALUES:
            raise ValueError(f"{held:,} histogram values held, at most {MAX_HISTOGRAM_VALUES:,}: "
                             "fewer evaluations, inits, seeds, layers or hist_samples")
        return self

    COST_FIELDS: ClassVar = (*DynamicsConfig.COST_FIELDS, "activations", "variances", "zero_init")

    @property
    def ensemble(self) -> int:
        return len(self.activations) * (len(self.variances) + self.zero_init)

    def held_bytes(self) -> int:
        """The data, and as many histogram values as `_records_fit` allows, as Python floats."""
        return super().held_bytes() + 24 * MAX_HISTOGRAM_VALUES
