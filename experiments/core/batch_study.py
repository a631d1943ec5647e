"""The batch-size study that sensitivity, sharpness (and their measures) share: the same MLP
trained once per batch size and seed, then measured at its final weights.

Batch sizes cannot share a training step (each takes its own number of steps per epoch), so
each batch size trains on its own; the `seeds` seeds of one batch size train together as a
vmap ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from experiments.core.config import BatchSizeStudy, Budget
from experiments.core.context import RunContext
from experiments.core.data import Dataset, dataset_for
from experiments.core.models import classifier
from experiments.core.train import TrainSpec, UntilLoss
from experiments.core.variants import GroupHooks, Outcome, Variant, mean_std, run_variants
from experiments.tracking import Tracker


def budget_hooks(config: Budget) -> GroupHooks:
    """With budget=target_loss, every ensemble stops each model when its `train_loss` (a
    full pass at the epoch's end weights) is at most `target_loss`."""
    if config.budget != "target_loss":
        return lambda group: []
    return lambda group: [UntilLoss(config.target_loss, "train_loss")]


def train_batch_sizes(config: BatchSizeStudy, tracker: Tracker,
                      ctx: RunContext) -> tuple[Dataset, list[Outcome]]:
    """One child run per batch size × seed; every batch size starts from the same
    initialisations (seed, seed+1 …) and gets the same budget. Train metrics are evaluated at
    each epoch's end weights over the whole training set; what each model got (steps, epochs,
    its final training loss, whether it reached the target) is logged beside its measures."""
    data = dataset_for(config, ctx.device)
    variants = [Variant(f"bs{batch_size}", lambda: classifier(data, config.hidden), config.seed,
                        {"batch_size": batch_size, "lr": config.lr, "optimizer": config.optimizer,
                         "hidden": config.hidden, "budget": config.budget},
                        spec=TrainSpec.of(config, batch_size=batch_size))
                for batch_size in config.batch_sizes]
    outcomes = run_variants(tracker, ctx, variants, data.train, seeds=config.seeds,
                            evals={"train": data.train, "test": data.test}, together=True,
                            hooks=budget_hooks(config))
    return data, outcomes


def by_batch_size(outcomes: Sequence[Outcome],
                  values: Sequence[float]) -> tuple[list[int], list[float]]:
    """(sorted batch sizes, mean of `values` over the seeds of each batch size)."""
    groups: dict[int, list[float]] = {}
    for outcome, value in zip(outcomes, values):
        groups.setdefault(outcome.variant.params["batch_size"], []).append(value)
    sizes = sorted(groups)
    return sizes, [sum(groups[s]) / len(groups[s]) for s in sizes]


def rows(outcomes: Sequence[Outcome], measured: Sequence[dict[str, float]]) -> list[dict]:
    """One table row per model: its batch size and seed, final metrics and measures."""
    return [{"variant": o.variant.name, "batch_size": o.variant.params["batch_size"],
             "seed": o.variant.seed, **o.final, **m} for o, m in zip(outcomes, measured)]


def budget_spent(outcome: Outcome, train_size: int, budget: str) -> dict[str, float]:
    """What one model of a batch-size comparison got, beside `steps_trained` and its
    `final_train_loss`: `epochs_trained` = its optimizer steps / steps per epoch
    (⌈train_size / batch size⌉; fractional when a step budget ends mid-epoch) and, with
    budget=target_loss, `reached_target` = 1 when it stopped because its training loss reached
    the target, 0 when the cap ran out first (or it diverged)."""
    batch = min(outcome.variant.spec.batch_size or train_size, train_size)
    spent = {"epochs_trained": (outcome.result.stop_step or 0) / math.ceil(train_size / batch)}
    if budget == "target_loss":
        spent["reached_target"] = float(outcome.result.status == "reached")
    return spent


def spread_by_batch_size(outcomes: Sequence[Outcome],
                         values: Sequence[float]) -> tuple[list[int], list[float], list[float]]:
    """(sorted batch sizes, mean, sample std) of `values` (one per outcome) over the seeds of
    each batch size: the points and error bars of a figure against the batch size."""
    groups: dict[int, list[float]] = {}
    for outcome, value in zip(outcomes, values):
        groups.setdefault(outcome.variant.params["batch_size"], []).append(value)
    sizes = sorted(groups)
    stats = [mean_std(groups[s]) for s in sizes]
    return sizes, [m for m, _ in stats], [s for _, s in stats]
