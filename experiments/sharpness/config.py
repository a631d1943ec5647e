"""Config of HW1-3 `sharpness`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from experiments.core.config import BatchSizeStudy

NAME = "sharpness"
TITLE = "HW1-3 Flatness vs generalization: sharpness vs batch size"


class Config(BatchSizeStudy):
    """Per batch size, at the final weights and on the first `measure_subset` training
    examples (mean cross-entropy): the 1-D loss profile along the normalized gradient direction
    (seed 002's bonus: each input moved along its own normalized input gradient; or the weights
    along the normalized weight gradient) with `profile_sharpness` = loss(t=radius) −
    loss(0), the rise at a fixed step uphill, and `profile_sharpness_back` = loss(t=−radius) −
    loss(0), the point seed 002 took (its "sharpness" at step −2.5); ε-sharpness (Keskar
    et al. 2017, % rise of the max loss in the box |δ_i| ≤ ε(|θ_i|+1), by projected ascent);
    the Hessian's top eigenvalue by power iteration on Hessian-vector products.
    Each child run logs its profile as `profile_loss` with step = round(100·t) (MLflow steps
    are integers). Figures: the profiles, and the measures vs batch size."""

    profile_space: Literal["inputs", "weights"] = "inputs"
    profile_radius: float = Field(2.5, gt=0.0, le=100.0, description="profile spans t in [−r, r]")
    profile_steps: int = Field(10, ge=1, le=100, description="profile points on each side of t=0")
    epsilon: float = Field(1e-3, gt=0.0, le=1.0, description="ε of the ε-sharpness box")
    ascent_steps: int = Field(10, ge=1, le=100)
    power_iters: int = Field(20, ge=1, le=200)

    PRESETS: ClassVar = {"quick": {"epochs": 1, "train_subset": 2000, "test_subset": 1000,
                                   "measure_subset": 500, "batch_sizes": [16, 64, 256, 1024, 2000],
                                   "power_iters": 5, "ascent_steps": 3, "profile_steps": 5}}
