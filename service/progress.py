"""A terminal progress bar for a run in the foreground: variant, epoch and loss."""

from __future__ import annotations

from tqdm import tqdm

from experiments.core.context import Progress


class ProgressBar:
    def __init__(self, name: str) -> None:
        self.name = name
        self.bar: tqdm | None = None
        self.variant: str | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, progress: Progress) -> None:
        if progress.variant != self.variant or self.bar is None:
            if self.bar is not None:
                self.bar.close()
            self.variant = progress.variant
            self.bar = tqdm(total=progress.total, unit="ep", dynamic_ncols=True,
                            desc=f"{self.name} [{progress.variant_index + 1}/"
                                 f"{progress.variant_count}] {progress.variant}")
        if self.bar.total != progress.total:
            self.bar.total = progress.total
        if isinstance(loss := progress.info.get("loss"), int | float):
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.bar.update(progress.done - self.bar.n)  # tqdm throttles the redraws
