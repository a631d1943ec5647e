"""Config of HW1-3 `sharpness`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from experiments.core.config import BatchSizeStudy

NAME = "sharpness"
TITLE = "HW1-3 Flatness vs generalization: sharpness vs batch size"


class Config(BatchSizeStudy):
    """Per batch size, at the final weights and on the training loss L = the mean cross-entropy
    over the first `measure_subset` training examples: the 1-D loss profile along the
    normalized gradient direction (seed 002's bonus: each input moved along its own normalized
    input gradient; or the weights along the normalized weight gradient) with
    `profile_sharpness` = loss(t=radius) − loss(0), the rise at a fixed step uphill, and
    `profile_sharpness_back` = loss(t=−radius) − loss(0), the point seed 002 took (its
    "sharpness" at step −2.5); ε-sharpness (Keskar et al. 2017, % rise of the max loss in the
    box |δ_i| ≤ ε(|θ_i|+1), by projected ascent); and the spectrum of the Hessian ∇²L in float64,
    from exact Hessian-vector products: its algebraically largest and smallest eigenvalues
    λ_max, λ_min by Lanczos to the relative tolerance `eigen_tol` (with their residuals and
    whether Lanczos converged), its trace by Hutchinson's estimator (with its standard error),
    and its eigenvalue density by stochastic Lanczos quadrature. Each child run logs its
    profile as `profile_loss` with step = round(100·t) (MLflow steps are integers). Figures: the
    profiles, the Hessian densities, and the measures vs batch size. Finding (Keskar et al.):
    ε-sharpness and λ_max rise with the batch size (Spearman over every model)."""

    profile_space: Literal["inputs", "weights"] = "inputs"
    profile_radius: float = Field(2.5, gt=0.0, le=100.0, description="profile spans t in [−r, r]")
    profile_steps: int = Field(10, ge=1, le=100, description="profile points on each side of t=0")
    epsilon: float = Field(1e-3, gt=0.0, le=1.0, description="ε of the ε-sharpness box")
    ascent_steps: int = Field(10, ge=1, le=100)
    eigen_tol: float = Field(1e-5, ge=1e-12, le=1e-1, description=(
        "relative tolerance of λ_max and λ_min: ARPACK accepts θ when some eigenvalue λ has "
        "|λ − θ| ≤ eigen_tol·|θ|"))
    eigen_restarts: int = Field(100, ge=1, le=10_000, description=(
        "at most this many ARPACK restarts per end (each at most 20 Hessian-vector products); "
        "past it the child is tagged lanczos_converged=false"))
    trace_probes: int = Field(30, ge=2, le=10_000,
                              description="Rademacher probes of Hutchinson's trace (one product each)")
    density_probes: int = Field(2, ge=1, le=100, description="probes of the SLQ density")
    density_steps: int = Field(60, ge=2, le=1000, description="Lanczos steps per density probe")
    density_width: float = Field(0.01, gt=0.0, le=1.0, description=(
        "Gaussian width of each SLQ node in the density figure, as a fraction of the span of "
        "that model's nodes (≈ λ_max − λ_min)"))

    PRESETS: ClassVar = {"quick": {"seeds": 2, "epochs": 1, "train_subset": 2000, "test_subset": 1000,
                                   "measure_subset": 500, "batch_sizes": [16, 64, 256, 1024, 2000],
                                   "ascent_steps": 3, "profile_steps": 5, "trace_probes": 10,
                                   "density_probes": 1, "density_steps": 30}}
