"""Training dynamics: learning rate (seed 003, part 5).

The same MLP, from the same initial weights and on the same batches, is trained with several
learning rates. A small rate moves the weights little per step, so the loss falls slowly but
smoothly; a larger one learns faster and noisier, until a rate is so large that the updates
overshoot and the loss blows up. A rate whose loss turns NaN/inf — or passes `diverge_loss`,
since a ReLU net's loss can explode by ten orders of magnitude and then sit, finite, with every
unit dead — is stopped at that step and tagged `diverged` with the step; the other rates go
on. With sgd or momentum all rates train at once as one vmap ensemble (model i's loss scaled by
its rate, the base rate 1); the adaptive optimizers, which are not linear in the rate, train one
rate after another.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Dataset, dataset_for
from experiments.core.models import classifier
from experiments.core.train import DivergesAbove, Hook, LearningRates, TrainSpec
from experiments.core.variants import Outcome, Variant, log_train_test_figures, run_variants
from experiments.learning_rate.config import Config
from experiments.tracking import Tracker

LINEAR = ("sgd", "momentum")  # optimizers whose step is proportional to the learning rate


def schedule(config: Config, lr: float = 1.0) -> TrainSpec:
    """`steps` steps of `batch_size`, evaluated every `eval_every` steps."""
    return TrainSpec.of(config, lr=lr)


def hooks(config: Config, device: str) -> Callable[[Sequence[Variant]], list[Hook]]:
    """Per ensemble: the rates of its variants (when they train together at base rate 1) and
    the loss above which a rate counts as diverged."""
    def make(group: Sequence[Variant]) -> list[Hook]:
        found: list[Hook] = [DivergesAbove(config.diverge_loss)] if config.diverge_loss else []
        if config.optimizer in LINEAR:
            found.append(LearningRates([v.params["lr"] for v in group], config.optimizer, device))
        return found
    return make


def variants(config: Config, data: Dataset) -> list[Variant]:
    """One variant per rate, all from the same seed (same initial weights, same batch order);
    with an adaptive optimizer each carries its own schedule."""
    together = config.optimizer in LINEAR
    return [Variant(f"lr-{rate:g}", lambda: classifier(data, config.hidden, config.activation),
                    config.seed, {"lr": rate, "batch_size": config.batch_size,
                                  "optimizer": config.optimizer, "activation": config.activation,
                                  "hidden": config.hidden},
                    spec=None if together else schedule(config, lr=rate))
            for rate in config.rates]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    outcomes = run_variants(tracker, ctx, variants(config, data), data.train, schedule(config),
                            evals={"test": data.test}, together=True, hooks=hooks(config, ctx.device))
    diverged = [o for o in outcomes if o.result.status == "diverged"]
    figures(outcomes, tracker, math.log(data.n_classes), config.diverge_loss)
    tracker.table("final", [{"lr": o.variant.params["lr"], "status": o.result.status,
                             "stop_step": o.result.stop_step,
                             **{k: o.final.get(k, math.nan)
                                for k in ("running_loss", "running_acc", "test_loss", "test_acc")}}
                            for o in outcomes])
    finished = [o for o in outcomes if o.result.status != "diverged"] or outcomes
    best = max(finished, key=lambda o: o.final.get("test_acc", -1.0))
    tracker.summary({"diverged_count": len(diverged), "best_lr": best.variant.params["lr"],
                     "best_test_acc": best.final.get("test_acc", math.nan)})
    tracker.tags({"diverged_rates": ",".join(f"{o.variant.params['lr']:g}" for o in diverged)
                  or "none"})


def legend(outcome: Outcome) -> str:
    """The rate, and where it diverged."""
    name = f"lr {outcome.variant.params['lr']:g}"
    return f"{name} ✗ diverged at step {outcome.result.stop_step}" if (
        outcome.result.status == "diverged") else name


def divergence_marks(outcomes: list[Outcome], initial: float) -> dict[str, tuple[float, float]]:
    """One mark per diverged rate: at its divergence step, at the last finite training loss it
    logged (the initial loss `initial` when it diverged before the first evaluation)."""
    marks = {}
    for o in outcomes:
        if o.result.status == "diverged":
            losses = o.series("running_loss")[1]
            marks[legend(o)] = (float(o.result.stop_step or 0), losses[-1] if losses else initial)
    return marks


def figures(outcomes: list[Outcome], tracker: Tracker, initial: float,
            diverge_loss: float | None) -> None:
    """All loss curves with the diverged rates marked; train/test loss and accuracy panels;
    final accuracy against the rate."""
    tracker.figure(plots.lines({legend(o): o.series("running_loss") for o in outcomes}, xlabel="step",
                               ylabel="training loss (mean of the mini-batches since the last point)",
                               logy=True, markers=divergence_marks(outcomes, initial),
                               title="training loss per learning rate (✗ = diverged: NaN/inf"
                                     + (f" or > {diverge_loss:g})" if diverge_loss else ")")),
                   "loss_diverged_marked")
    log_train_test_figures(tracker, outcomes, xlabel="step", label=legend, train="running",
                           title="{metric} per learning rate")
    kept = [o for o in outcomes if o.result.status != "diverged"]
    rates = [o.variant.params["lr"] for o in kept]
    finals = {f"final {s} acc": (rates, [o.final.get(f"{s}_acc", math.nan) for o in kept])
              for s in ("running", "test")}
    marks = {f"lr {o.variant.params['lr']:g} diverged": (o.variant.params["lr"], 0.0)
             for o in outcomes if o.result.status == "diverged"}
    tracker.figure(plots.lines(finals, xlabel="learning rate (log)", ylabel="accuracy", logx=True,
                               markers=marks, title="final accuracy per learning rate (✗ = diverged)"),
                   "final_accuracy")
