"""Variants of an experiment as MLflow child runs: build, train, log, summarise.

Most experiments compare a few models (widths, batch sizes, rates …), each trained from
`seeds` seeds; every variant × seed is a child run that carries its settings as params, its
metric history, its final metrics, its status (`diverged` with the step, `converged`,
`stopped`) and its final weights (safetensors, with the architecture beside them). The seeds
of a variant — and, with `together`, same-shape variants on the same schedule — train as one
`vmap` ensemble. Over the seeds of each variant, `summarize` logs the mean, standard deviation
and count of every final number, and `series` gives the mean curve with its band.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from experiments.core import plots, reuse
from experiments.core.context import RunContext
from experiments.core.data import Split
from experiments.core.models import architecture, count_params
from experiments.core.train import EvalEvent, Hook, ModelResult, Status, TrainSpec, seeded, train
from experiments.tracking import Run, Tracker


@dataclass
class Variant:
    name: str
    build: Callable[[], nn.Module]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    spec: TrainSpec | None = None  # this variant's own schedule (e.g. batch size), else the shared one
    group: str = ""  # the variant a seed copy belongs to (its name before the seed), set by `with_seeds`


def with_seeds(variants: Sequence[Variant], seeds: int) -> list[Variant]:
    """Each variant `seeds` times, from its seed, seed+1, …: children named `<name> seed<s>`
    (the name alone for one seed), grouped under the variant's name."""
    return [replace(v, name=f"{v.name} seed{v.seed + k}" if seeds > 1 else v.name, seed=v.seed + k,
                    params={**v.params, "variant": v.name}, group=v.name)
            for v in variants for k in range(seeds)]


@dataclass
class Outcome:
    variant: Variant
    run: Run
    model: nn.Module
    result: ModelResult
    measures: dict[str, float] = field(default_factory=dict)  # what the experiment measured after

    def record(self, measures: Mapping[str, float]) -> None:
        """Numbers measured at the final weights: logged on the child (step 0) and kept for
        `summarize`."""
        self.measures.update(measures)
        self.run.summary(measures)

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
                 together: bool = False, hooks: GroupHooks | None = None, seeds: int = 1,
                 on_eval: Callable[[EvalEvent], Iterable[int] | None] | None = None) -> list[Outcome]:
    """Train each variant `seeds` times (see `with_seeds`) on its own schedule (`Variant.spec`,
    else the shared `spec`), one child run each, its final weights saved; the seeds of a
    variant train at once as one ensemble, and with `together` every variant of one schedule
    does. `hooks(group)` makes the hooks of each ensemble (per-model state sized to the group);
    `on_eval` sees (and may stop) models by their index in the seed-expanded variant list
    (variant-major), whichever ensemble they train in. Outcomes come in that order."""
    device = data.x.device
    variants = with_seeds(variants, seeds)
    schedules = [v.spec or spec for v in variants]
    if None in schedules:
        raise ValueError("a variant without its own spec needs the shared spec")
    groups: list[list[int]] = []
    for i, schedule in enumerate(schedules):  # a variant's seeds, or with `together` every
        same = next((g for g in groups if schedules[g[0]] == schedule  # variant of the schedule
                     and (together or variants[g[0]].group == variants[i].group)), None)
        if same is None:
            groups.append([i])
        else:
            same.append(i)
    fingerprints = reuse.data_fingerprints(data, evals or {}) if ctx.reuse else {}

    def group_hooks(ids: list[int]) -> list[Hook]:
        return [*(hooks([variants[i] for i in ids]) if hooks else ()),
                *([_ByVariant(on_eval, ids)] if on_eval else ())]

    outcomes: list[Outcome] = []
    for index, ids in enumerate(groups):
        models = {i: seeded(variants[i].build, [variants[i].seed], device)[0] for i in ids}
        runs = {i: tracker.child(variants[i].name, {"n_params": count_params(models[i]),
                                                    "seed": variants[i].seed, **variants[i].params})
                for i in ids}
        schedule = schedules[ids[0]]
        keys = {i: reuse.training_key(models[i], variants[i].seed, schedule,
                                      reuse.hook_keys(group_hooks(ids), row), fingerprints)
                if ctx.reuse else None for row, i in enumerate(ids)}
        found = {i: _reused(tracker, runs[i], models[i], key) for i, key in keys.items() if key}
        results = {i: result for i, result in found.items() if result is not None}
        fresh = [i for i in ids if i not in results]
        label = variants[ids[0]].name if len(ids) == 1 else f"{len(ids)} models together"
        ctx.begin(label, index, len(groups))
        if fresh:
            def sink(model: int, x: int, metrics: dict[str, float], fresh: list[int] = fresh,
                     runs: dict[int, Run] = runs) -> None:
                runs[fresh[model]].log(metrics, step=x)

            trained = train([models[i] for i in fresh], data, schedule,
                            seeds=[variants[i].seed for i in fresh], evals=evals, ctx=ctx, sink=sink,
                            hooks=group_hooks(fresh))
            results.update(zip(fresh, trained))
        for i in ids:
            outcomes.append(_record(variants[i], runs[i], models[i], results[i], keys[i]))
    order = {id(v): i for i, v in enumerate(variants)}
    return sorted(outcomes, key=lambda o: order[id(o.variant)])


def _reused(tracker: Tracker, run: Run, model: nn.Module, key: str) -> ModelResult | None:
    """The result of a finished child trained under `key`, its weights loaded into `model`
    and its history logged on `run`; None when there is none."""
    source = reuse.find(tracker.mlflow, key)
    if source is None:
        return None
    result = reuse.load(tracker.mlflow, source, model)
    for row in result.history:
        run.log({k: v for k, v in row.items() if k not in ("epoch", "step", "x")}, step=row["x"])
    run.tags({reuse.SOURCE_TAG: source.info.run_id})
    return result


def _record(variant: Variant, run: Run, model: nn.Module, result: ModelResult,
            key: str | None) -> Outcome:
    """The child's status tags, final metrics, weights, training key: its outcome."""
    tags: dict[str, Any] = {"status": result.status, **({reuse.KEY_TAG: key} if key else {})}
    if result.status == "diverged":
        tags["diverged"] = "true"
        tags["diverged_step"] = result.stop_step
    run.tags(tags)
    outcome = Outcome(variant, run, model, result)
    run.summary({**{f"final_{k}": v for k, v in outcome.final.items()},
                 "steps_trained": result.stop_step or 0})
    run.weights(variant.name, model.state_dict(), architecture(model), asdict(result))
    return outcome


class _ByVariant(Hook):
    """An `on_eval` callback that knows models by their index in the variant list, as a hook
    of the ensemble holding the variants `ids`: what it returns is stopped."""

    def __init__(self, on_eval: Callable[[EvalEvent], Iterable[int] | None], ids: list[int]) -> None:
        self.callback, self.ids = on_eval, ids

    def on_eval(self, event: EvalEvent) -> dict[int, Status]:
        stops = self.callback(replace(event, active=[self.ids[m] for m in event.active]))
        return {self.ids.index(m): "stopped" for m in stops or ()}


def by_group(outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    """The outcomes of each variant (its seeds), in order."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.variant.group or o.variant.name, []).append(o)
    return groups


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def seed_series(seeds: Sequence[Outcome], key: str) -> tuple[list[float], list[float], list[float]]:
    """(x, mean, std) of one metric over the seeds of a variant, at the x every seed reached
    (a seed that stopped early ends the curve there)."""
    curves = [dict(zip(*o.series(key))) for o in seeds]
    xs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    stats = [mean_std([c[x] for c in curves]) for x in xs]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def series(outcomes: Sequence[Outcome], key: str,
           label: Callable[[Outcome], str] | None = None) -> dict[str, tuple[list[float], ...]]:
    """{variant: (x, mean, std)} of one metric over each variant's seeds (label: of the
    variant's first seed, default the variant's name), the form `plots.lines` takes."""
    return {(label(seeds[0]) if label else name): seed_series(seeds, key)
            for name, seeds in by_group(outcomes).items()}


def summarize(tracker: Tracker, outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Per variant, over its seeds, the mean, standard deviation and count of every final
    metric, `steps_trained` and every recorded measure: parent metrics
    `mean/<variant>/<name>`, `std/<variant>/<name>`, `n/<variant>/<name>` and the table
    `summary`; returns its rows."""
    rows, metrics = [], {}
    for name, seeds in by_group(outcomes).items():
        values: dict[str, list[float]] = {}
        for o in seeds:
            numbers = {**{f"final_{k}": v for k, v in o.final.items()},
                       "steps_trained": o.result.stop_step or 0, **o.measures}
            for key, value in numbers.items():
                values.setdefault(key, []).append(float(value))
        for key, found in values.items():
            mean, std = mean_std(found)
            metrics.update({f"mean/{name}/{key}": mean, f"std/{name}/{key}": std,
                            f"n/{name}/{key}": len(found)})
            rows.append({"variant": name, "name": key, "mean": mean, "std": std, "n": len(found),
                         "seeds": " ".join(f"{v:.6g}" for v in found)})
    tracker.summary(metrics)
    tracker.table("summary", rows)
    return rows


def log_train_test_figures(tracker: Tracker, outcomes: Sequence[Outcome], *, title: str,
                           xlabel: str = "epoch", label: Callable[[Outcome], str] | None = None,
                           suffix: str = "", train: str = "train") -> None:
    """The figures `loss<suffix>` and `accuracy<suffix>`: train and test panels of the metric,
    one curve per variant — the mean over its seeds with a ±1 std band — named by `label` (of
    its first seed; default the variant's name); `title` may hold
    `{metric}`. The train panel draws `<train>_loss`: `train` (a full pass over the training
    split) or `running` (the mean of the mini-batches between evaluations)."""
    for metric, figure, logy in (("loss", "loss", True), ("acc", "accuracy", False)):
        grid = {f"{split} {metric}": series(outcomes, f"{split}_{metric}", label)
                for split in (train, "test")}
        tracker.figure(plots.panels(grid, xlabel=xlabel, ylabel=metric, logy=logy, columns=2,
                                    sharey=True, title=title.format(metric=metric)),
                       figure + suffix)
