"""Config of HW1-3 `param-count`."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from experiments.core.config import (
    Distinct,
    SupervisedConfig,
    Width,
)

NAME = "param-count"
TITLE = "HW1-3 Generalization: number of parameters vs generalization"


class Config(SupervisedConfig):
    """Train one family of MLPs (`depth` hidden layers, all of one width) at every width in
    `widths` — by default 10 widths whose parameter counts span ~1.6 k to ~0.8 M — under the
    same schedule, from `seeds` seeds each; final train and test loss and accuracy (at the final
    weights) of each, plotted against the number of parameters on a log axis."""

    widths: Annotated[list[Width], Distinct] = Field(
        default_factory=lambda: [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], min_length=2,
        max_length=16)
    depth: int = Field(1, ge=1, le=4, description="hidden layers, each `width` wide")

    PRESETS: ClassVar = {"quick": {"epochs": 2, "train_subset": 2000, "test_subset": 1000,
                                   "seeds": 2}}

    COST_FIELDS: ClassVar = (*SupervisedConfig.COST_FIELDS, "widths", "depth")

    def architectures(self) -> list[list[int]]:
        return [[width] * self.depth for width in self.widths]
