"""Variants of an experiment as MLflow child runs: build, train, log, summarise.

Most experiments compare a few models (widths, seeds, batch sizes …); each is a child run that
carries its own settings as params, its metric history, its final metrics and its status
(`diverged` with the step, `converged`, `stopped`). Same-shape variants with the same data and
schedule train together as one `vmap` ensemble.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split
from experiments.core.models import count_params
from experiments.core.train import EvalEvent, ModelResult, TrainSpec, seeded, train
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


def run_variants(tracker: Tracker, ctx: RunContext, variants: Sequence[Variant], data: Split,
                 spec: TrainSpec, *, evals: Mapping[str, Split] | None = None,
                 together: bool = False,
                 on_eval: Callable[[EvalEvent], Any] | None = None) -> list[Outcome]:
    """Train each variant (all at once when `together`; variants with their own `spec` train
    together per equal spec), one child run each. `on_eval` sees (and may stop) models by
    their index in `variants`, whichever ensemble they train in."""
    device = data.x.device
    groups: list[list[int]] = []
    for i, v in enumerate(variants):  # together: one ensemble per distinct schedule
        same = (next((g for g in groups if variants[g[0]].spec == v.spec), None)
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
        group_spec = group[0].spec or spec  # a group trained together shares one schedule
        ctx.begin(label, index, len(groups))

        def sink(model: int, x: int, metrics: dict[str, float], runs: list[Run] = runs) -> None:
            runs[model].log(metrics, step=x)

        def hook(event: EvalEvent, ids: list[int] = ids) -> list[int]:
            stops = on_eval(replace(event, active=[ids[m] for m in event.active])) if on_eval else ()
            return [ids.index(m) for m in stops or ()]

        results = train(models, data, group_spec, seeds=[v.seed for v in group], evals=evals, ctx=ctx,
                        sink=sink, on_eval=hook)
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


def series(outcomes: Sequence[Outcome], key: str) -> dict[str, tuple[list[float], list[float]]]:
    """{variant name: (x, values)} of one metric, the form `plots.lines` takes."""
    return {o.variant.name: o.series(key) for o in outcomes}


def log_train_test_figures(tracker: Tracker, outcomes: Sequence[Outcome], *, title: str,
                           xlabel: str = "epoch", label: Callable[[Outcome], str] | None = None,
                           suffix: str = "") -> None:
    """The figures `loss<suffix>` and `accuracy<suffix>`: train and test panels of the metric,
    one curve per outcome (named by `label`, default the variant's name); `title` may hold
    `{metric}`."""
    name = label or (lambda o: o.variant.name)
    for metric, figure, logy in (("loss", "loss", True), ("acc", "accuracy", False)):
        grid = {f"{split} {metric}": {name(o): o.series(f"{split}_{metric}") for o in outcomes}
                for split in ("train", "test")}
        tracker.figure(plots.panels(grid, xlabel=xlabel, ylabel=metric, logy=logy, columns=2,
                                    sharey=True, title=title.format(metric=metric)),
                       figure + suffix)
