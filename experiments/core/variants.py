"""Variants of an experiment as MLflow child runs: build, train, log, summarise.

Most experiments compare a few models (widths, seeds, batch sizes …); each is a child run that
carries its own settings as params, its metric history, its final metrics and its status
(`diverged` with the step, `converged`, `stopped`). Same-shape variants with the same data and
schedule train together as one `vmap` ensemble.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split
from experiments.core.models import count_params
from experiments.core.train import EvalEvent, Hook, ModelResult, Status, TrainSpec, seeded, train
from experiments.tracking import Run, Tracker


@dataclass
class Variant:
    name: str
    build: Callable[[], nn.Module]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    spec: TrainSpec | None = None  # this variant's own schedule (e.g. batch size), else the shared one


@dataclass
class Outcome:
    variant: Variant
    run: Run
    model: nn.Module
    result: ModelResult

    @property
    def final(self) -> dict[str, float]:
        """The metrics of the last evaluation before the model stopped."""
        last = self.result.history[-1] if self.result.history else {}
        return {k: v for k, v in last.items() if k not in ("epoch", "step", "x")}

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(x, values) of one metric over the evaluations; x is the epoch (or step)."""
        rows = [r for r in self.result.history if key in r]
        return [r["x"] for r in rows], [r[key] for r in rows]


GroupHooks = Callable[[Sequence["Variant"]], Sequence[Hook]]  # the hooks of one ensemble


def run_variants(tracker: Tracker, ctx: RunContext, variants: Sequence[Variant], data: Split,
                 spec: TrainSpec | None = None, *, evals: Mapping[str, Split] | None = None,
                 together: bool = False, hooks: GroupHooks | None = None,
                 on_eval: Callable[[EvalEvent], Iterable[int] | None] | None = None) -> list[Outcome]:
    """Train each variant on its own schedule (`Variant.spec`, else the shared `spec`), one
    child run each; with `together`, the variants of one schedule train at once as one
    ensemble. `hooks(group)` makes the hooks of each ensemble (per-model state sized to the
    group); `on_eval` sees (and may stop) models by their index in `variants`, whichever
    ensemble they train in."""
    device = data.x.device
    schedules = [v.spec or spec for v in variants]
    if None in schedules:
        raise ValueError("a variant without its own spec needs the shared spec")
    groups: list[list[int]] = []
    for i, schedule in enumerate(schedules):  # together: one ensemble per distinct schedule
        same = (next((g for g in groups if schedules[g[0]] == schedule), None)
                if together else None)
        if same is None:
            groups.append([i])
        else:
            same.append(i)
    outcomes: list[Outcome] = []
    for index, ids in enumerate(groups):
        group = [variants[i] for i in ids]
        models = [seeded(v.build, [v.seed], device)[0] for v in group]
        runs = [tracker.child(v.name, {"n_params": count_params(m), "seed": v.seed, **v.params})
                for v, m in zip(group, models)]
        label = group[0].name if len(group) == 1 else f"{len(group)} models together"
        ctx.begin(label, index, len(groups))

        def sink(model: int, x: int, metrics: dict[str, float], runs: list[Run] = runs) -> None:
            runs[model].log(metrics, step=x)

        own = [*(hooks(group) if hooks else ()), *([_ByVariant(on_eval, ids)] if on_eval else ())]
        results = train(models, data, schedules[ids[0]], seeds=[v.seed for v in group], evals=evals,
                        ctx=ctx, sink=sink, hooks=own)
        for variant, run, model, result in zip(group, runs, models, results):
            tags: dict[str, Any] = {"status": result.status}
            if result.status == "diverged":
                tags["diverged"] = "true"
                tags["diverged_step"] = result.stop_step
            run.tags(tags)
            outcome = Outcome(variant, run, model, result)
            run.summary({**{f"final_{k}": v for k, v in outcome.final.items()},
                         "steps_trained": result.stop_step or 0})
            outcomes.append(outcome)
    return outcomes


class _ByVariant(Hook):
    """An `on_eval` callback that knows models by their index in the variant list, as a hook
    of the ensemble holding the variants `ids`: what it returns is stopped."""

    def __init__(self, on_eval: Callable[[EvalEvent], Iterable[int] | None], ids: list[int]) -> None:
        self.callback, self.ids = on_eval, ids

    def on_eval(self, event: EvalEvent) -> dict[int, Status]:
        stops = self.callback(replace(event, active=[self.ids[m] for m in event.active]))
        return {self.ids.index(m): "stopped" for m in stops or ()}


def series(outcomes: Sequence[Outcome], key: str) -> dict[str, tuple[list[float], list[float]]]:
    """{variant name: (x, values)} of one metric, the form `plots.lines` takes."""
    return {o.variant.name: o.series(key) for o in outcomes}


def log_train_test_figures(tracker: Tracker, outcomes: Sequence[Outcome], *, title: str,
                           xlabel: str = "epoch", label: Callable[[Outcome], str] | None = None,
                           suffix: str = "", train: str = "train") -> None:
    """The figures `loss<suffix>` and `accuracy<suffix>`: train and test panels of the metric,
    one curve per outcome (named by `label`, default the variant's name); `title` may hold
    `{metric}`. The train panel draws `<train>_loss`: `train` (a full pass over the training
    split) or `running` (the mean of the mini-batches between evaluations)."""
    name = label or (lambda o: o.variant.name)
    for metric, figure, logy in (("loss", "loss", True), ("acc", "accuracy", False)):
        grid = {f"{split} {metric}": {name(o): o.series(f"{split}_{metric}") for o in outcomes}
                for split in (train, "test")}
        tracker.figure(plots.panels(grid, xlabel=xlabel, ylabel=metric, logy=logy, columns=2,
                                    sharey=True, title=title.format(metric=metric)),
                       figure + suffix)
