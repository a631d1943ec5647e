"""Config of HW1-2 `minimal-ratio`."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, ClassVar, Literal

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
    mlp_params,
    mlp_training,
)
from experiments.core.cost import Training

NAME = "minimal-ratio"
TITLE = "HW1-2 Optimization: what happens when the gradient is almost zero"

Method = Literal["grad_norm", "newton", "levenberg_marquardt"]
MAX_PARAMS = 1000  # the exact Hessian is [P, P] per network: the course's nets have a few hundred
MAX_HESSIAN_ENTRIES = 250_000_000  # repetitions · P² float64 entries at once: 2 GB
HANDOVER_EVERY = 10  # phase 1 checks the gradient norm of its last step every this many steps


class Config(ExperimentConfig):
    """Train a small network on a 1-D function with its loss (phase 1) until its gradient norm
    is below `handover` (or `epochs` run out), then drive it to a point of near-zero gradient,
    below `grad_threshold` (phase 2), by minimizing the gradient norm, by Newton's method or by
    Levenberg–Marquardt; there compute the exact Hessian of the training loss (float64), its
    eigenvalues classified against a tolerance tied to float64 precision and the spectrum's
    scale (100·n·ε·max|λ|: positive, negative, flat), the significant ratio (positive among
    the non-flat eigenvalues, the main number), the course's minimal ratio (fraction of
    eigenvalues > 0) and the sampling minimal ratio (fraction of nearby weights with a higher
    loss). Repeated with many seeds, all trained together as one vmap ensemble. Finding
    (Dauphin et al. 2014): near critical points, a lower loss goes with a higher ratio, i.e.
    Spearman ρ(loss, significant ratio) < 0 over the repetitions that reached the threshold,
    with a bootstrap interval. Figure: the ratios against the loss."""

    target: TargetName = "sinc"
    n_points: int = Field(128, ge=8, le=10_000, description="evenly spaced inputs on [0, 1]")
    hidden: list[Width] = Field(default_factory=lambda: [6, 6], min_length=1, max_length=4,
                                description="hidden widths (default 1-6-6-1: 61 parameters)")
    activation: ActivationName = "tanh"
    repetitions: int = Field(100, ge=1, le=1000, description="networks, each from its own seed")
    optimizer: OptimizerName = "adam"
    lr: LearningRate = Field(1e-2, description="phase 1 learning rate (full batch)")
    epochs: Epochs = Field(2000, description="phase 1: at most this many full-batch steps on the loss")
    handover: float = Field(1e-2, gt=0.0, le=10.0, description=(
        "phase 1 stops a network once the 2-norm of its full-batch loss gradient is below this "
        f"(checked every {HANDOVER_EVERY} steps); above grad_threshold, so phase 2 has work"))
    methods: Annotated[list[Method], Distinct] = Field(
        default_factory=lambda: ["grad_norm", "levenberg_marquardt"], min_length=1, max_length=3,
        description="phase 2 methods, each started from the same phase-1 weights")
    grad_threshold: float = Field(1e-3, gt=0.0, le=1.0, description=(
        "gradient 2-norm (full training loss, float64) that counts as 'almost zero'"))
    grad_norm_lr: LearningRate = Field(1e-3, description="Adam step on ‖∇L‖² (grad_norm)")
    grad_norm_steps: int = Field(500, ge=1, le=100_000, description="max steps of grad_norm")
    second_order_steps: int = Field(200, ge=1, le=10_000,
                                    description="max steps of newton / levenberg_marquardt")
    damping: float = Field(1e-3, gt=0.0, le=1e6, description="initial Levenberg–Marquardt λ")
    samples: int = Field(1000, ge=10, le=100_000, description="points of the sampling ratio")
    sample_radius: float = Field(1e-2, gt=0.0, le=10.0,
                                 description="2-norm of the sampled weight perturbations")

    PRESETS: ClassVar = {"quick": {"repetitions": 20, "epochs": 500, "grad_norm_steps": 100,
                                   "second_order_steps": 100, "samples": 200}}

    @property
    def n_params(self) -> int:
        """Parameters of the 1-hidden…-1 MLP (weights and biases)."""
        return mlp_params(1, self.hidden, 1)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.n_params > MAX_PARAMS:
            raise ValueError(f"hidden: {self.n_params} parameters, at most {MAX_PARAMS} "
                             "(the exact Hessian is P×P per network)")
        if self.handover <= self.grad_threshold:
            raise ValueError(f"handover ({self.handover:g}) must exceed grad_threshold "
                             f"({self.grad_threshold:g}): phase 1 would do phase 2's work")
        if self.repetitions * self.n_params ** 2 > MAX_HESSIAN_ENTRIES:
            raise ValueError(f"repetitions × parameters² = {self.repetitions * self.n_params ** 2:,}"
                             f" Hessian entries, at most {MAX_HESSIAN_ENTRIES:,}: fewer of either")
        return self

    COST_FIELDS: ClassVar = ("hidden", "repetitions", "seeds", "n_points", "epochs", "methods",
                             "grad_norm_steps", "second_order_steps")

    def trainings(self) -> list[Training]:
        """Phase 1; then each method from its weights, a grad_norm step as three gradients and
        a second-order step as the exact Hessian's P."""
        first = mlp_training(1, self.hidden, 1, self.repetitions * self.seeds, self.n_points,
                             self.n_points * self.epochs, self.optimizer)
        steps = 3 * self.grad_norm_steps + self.second_order_steps * self.n_params
        return [first, replace(first, examples=self.n_points * len(self.methods) * steps)]

    def held_bytes(self) -> int:
        """Every network's exact Hessian, float64."""
        return 8 * self.repetitions * self.seeds * self.n_params ** 2
