"""Training dynamics: learning rate (seed 003, part 5).

The same MLP, from the same initial weights and on the same batches, is trained with several
learning rates, each from `seeds` seeds (seed k starts every rate from the same weights). A
small rate moves the weights little per step, so the loss falls slowly but smoothly; a larger
one learns faster and noisier, until a rate is so large that the updates overshoot and the loss
blows up. A model whose loss turns NaN/inf — or passes `diverge_loss`, since a ReLU net's loss
can explode by ten orders of magnitude and then sit, finite, with every unit dead — is stopped
at that step and tagged `diverged` with the step; the others go on. Every rate and seed trains
at once as one vmap ensemble, each model at its own rate (`LearningRates`, base rate 1: exact
for every optimizer). The findings: where in the grid the best rate lies, and whether the
largest rate diverges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Dataset, dataset_for
from experiments.core.findings import Direction, Finding, average, bootstrap, log_findings
from experiments.core.models import classifier
from experiments.core.train import DivergesAbove, Hook, LearningRates, TrainSpec
from experiments.core.variants import (
    Outcome,
    Variant,
    by_group,
    log_train_test_figures,
    mean_std,
    run_variants,
    series,
    summarize,
)
from experiments.learning_rate.config import Config
from experiments.tracking import Tracker

CLAIM = "too small a rate trains slowly, too large diverges, a rate in between is best"


def hooks(config: Config, device: str) -> Callable[[Sequence[Variant]], list[Hook]]:
    """Per ensemble: the rates of its models (trained at base rate 1) and the loss above which
    a model counts as diverged."""
    def make(group: Sequence[Variant]) -> list[Hook]:
        found: list[Hook] = [DivergesAbove(config.diverge_loss)] if config.diverge_loss else []
        return [*found, LearningRates([v.params["lr"] for v in group], config.optimizer, device)]
    return make


def variants(config: Config, data: Dataset) -> list[Variant]:
    """One variant per rate, all from the same seed (seed k of every rate: the same initial
    weights, the same batch order)."""
    return [Variant(f"lr-{rate:g}", lambda: classifier(data, config.hidden, config.activation),
                    config.seed, {"lr": rate, "batch_size": config.batch_size,
                                  "optimizer": config.optimizer, "activation": config.activation,
                                  "hidden": config.hidden})
            for rate in config.rates]


def diverged(seeds: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in seeds if o.result.status == "diverged"]


def score(outcome: Outcome) -> float:
    """What the best rate is chosen by: the final test accuracy, 0 for a model that diverged."""
    return 0.0 if outcome.result.status == "diverged" else outcome.final.get("test_acc", 0.0)


def findings(config: Config, groups: dict[str, list[Outcome]]) -> list[Finding]:
    """`best_rate_above_smallest` / `best_rate_below_largest`: log10 of the best rate (highest
    mean `score` over the seeds) over the smallest / the largest rate, bootstrap over the seeds
    (paired: seed k of every rate resampled together); `largest_rate_diverges`: the fraction of
    the largest rate's seeds that diverged, expected above 1/2."""
    rates = [seeds[0].variant.params["lr"] for seeds in groups.values()]
    scores = [[score(o) for o in seeds] for seeds in groups.values()]

    def best(*per_rate: Sequence[float]) -> float:
        return rates[int(np.argmax([np.mean(s) for s in per_rate]))]

    found, interval = best(*scores), bootstrap(best, scores, config.seed)
    what = (f"the best rate: highest mean final test accuracy over {len(scores[0])} seeds, a "
            "diverged seed scoring 0")

    def position(key: str, end: float, expect: Direction) -> Finding:
        return Finding(key, CLAIM, f"log10(best rate / {end:g}); {what}", math.log10(found / end),
                       (math.log10(interval[0] / end), math.log10(interval[1] / end)), expect,
                       details={"rates": rates, "scores": scores, "best_rate": found})

    largest = max(groups.values(), key=lambda seeds: seeds[0].variant.params["lr"])
    return [position("best_rate_above_smallest", min(rates), "above"),
            position("best_rate_below_largest", max(rates), "below"),
            average("largest_rate_diverges", CLAIM,
                    [float(o.result.status == "diverged") for o in largest], expect="above",
                    null=0.5, seed=config.seed,
                    what=f"fraction diverged of the largest rate ({max(rates):g})")]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    outcomes = run_variants(tracker, ctx, variants(config, data), data.train,
                            TrainSpec.of(config, lr=1.0), evals={"test": data.test},
                            together=True, hooks=hooks(config, ctx.device), seeds=config.seeds)
    groups = by_group(outcomes)
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, groups))
    figures(groups, tracker, math.log(data.n_classes), config.diverge_loss)
    tracker.table("final", [{"lr": o.variant.params["lr"], "seed": o.variant.seed,
                             "status": o.result.status, "stop_step": o.result.stop_step,
                             **{k: o.final.get(k, math.nan)
                                for k in ("running_loss", "running_acc", "test_loss", "test_acc")}}
                            for o in outcomes])
    bad = [seeds for seeds in groups.values() if diverged(seeds)]
    finished = {name: seeds for name, seeds in groups.items() if not diverged(seeds)} or groups
    best = max(finished.values(), key=lambda seeds: float(np.mean([score(o) for o in seeds])))
    tracker.summary({"diverged_count": len(bad), "best_lr": best[0].variant.params["lr"]})
    tracker.tags({"diverged_rates": ",".join(f"{seeds[0].variant.params['lr']:g}" for seeds in bad)
                  or "none"})


def legend(seeds: Sequence[Outcome]) -> str:
    """The rate, and how many of its seeds diverged, from which step."""
    name = f"lr {seeds[0].variant.params['lr']:g}"
    bad = diverged(seeds)
    if not bad:
        return name
    return (f"{name} ✗ {len(bad)}/{len(seeds)} diverged from step "
            f"{min(o.result.stop_step or 0 for o in bad)}")


def divergence_marks(groups: dict[str, list[Outcome]], curves: dict[str, tuple[list[float], ...]],
                     initial: float) -> dict[str, tuple[float, float]]:
    """A mark where rates with a diverged seed diverged: at the first divergence step, at the
    last value of the rate's mean training-loss curve (the initial loss `initial` when there
    is none); rates marked at the same point share one mark, labelled with all of them."""
    points: dict[tuple[float, float], list[str]] = {}
    for name, seeds in groups.items():
        if bad := diverged(seeds):
            losses = curves[name][1]
            point = (float(min(o.result.stop_step or 0 for o in bad)), losses[-1] if losses else initial)
            points.setdefault(point, []).append(f"{seeds[0].variant.params['lr']:g}")
    return {f"lr {', '.join(rates)} ✗": point for point, rates in points.items()}


def figures(groups: dict[str, list[Outcome]], tracker: Tracker, initial: float,
            diverge_loss: float | None) -> None:
    """All loss curves (mean over seeds, ±1 std) with the diverged rates marked; train/test
    loss and accuracy panels; final accuracy against the rate."""
    outcomes = [o for seeds in groups.values() for o in seeds]
    labels = {name: legend(seeds) for name, seeds in groups.items()}
    curves = series(outcomes, "running_loss")
    tracker.figure(plots.lines({labels[name]: curve for name, curve in curves.items()},
                               xlabel="step", logy=True,
                               ylabel="training loss (mean of the mini-batches since the last point)",
                               markers=divergence_marks(groups, curves, initial),
                               title="training loss per rate, seed mean ± std (✗ diverged: NaN/inf"
                                     + (f" or > {diverge_loss:g})" if diverge_loss else ")")),
                   "loss_diverged_marked")
    log_train_test_figures(tracker, outcomes, xlabel="step", train="running",
                           label=lambda o: labels[o.variant.group],
                           title="{metric} per learning rate (mean ± std over seeds)")
    kept = [seeds for seeds in groups.values() if not diverged(seeds)]
    rates = [seeds[0].variant.params["lr"] for seeds in kept]
    finals = {f"final {s} acc": (rates, *zip(*[mean_std([o.final.get(f"{s}_acc", math.nan)
                                                        for o in seeds]) for seeds in kept]))
              for s in ("running", "test")} if kept else {}
    marks = {f"lr {seeds[0].variant.params['lr']:g} ✗": (seeds[0].variant.params["lr"], 0.0)
             for seeds in groups.values() if diverged(seeds)}
    tracker.figure(plots.lines(finals, xlabel="learning rate (log)", ylabel="accuracy", logx=True,
                               markers=marks, title="final accuracy per rate, seed mean ± std "
                                                    "(✗ = a seed diverged)"),
                   "final_accuracy")
