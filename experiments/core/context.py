"""What a running experiment is told by whoever runs it: the device, where progress goes, and
whether it should stop. The CLI shows progress as a bar, the worker writes it to MLflow tags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class Cancelled(Exception):
    """Raised inside a run when its job was cancelled; the run ends KILLED."""


@dataclass(frozen=True)
class Progress:
    variant: str
    variant_index: int
    variant_count: int
    done: int
    total: int
    info: dict[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1], each variant weighing the same."""
        inner = self.done / self.total if self.total else 0.0
        return min(1.0, (self.variant_index + inner) / max(self.variant_count, 1))


@dataclass
class RunContext:
    device: str = "cpu"
    on_progress: Callable[[Progress], None] = lambda progress: None
    cancelled: Callable[[], bool] = lambda: False
    reuse: bool = True  # load a finished model with the same training key instead of training it
    variant: str = ""
    variant_index: int = 0
    variant_count: int = 1

    def begin(self, variant: str, index: int = 0, count: int = 1) -> None:
        """Start a variant (or a group trained together, as one)."""
        self.variant, self.variant_index, self.variant_count = variant, index, count
        self.advance(0, 1)

    def advance(self, done: int, total: int, **info: float) -> None:
        """Report progress within the current variant; stop here if the job was cancelled."""
        self.on_progress(Progress(self.variant, self.variant_index, self.variant_count,
                                  done, total, info))
        if self.cancelled():
            raise Cancelled(f"cancelled during {self.variant or 'setup'}")
