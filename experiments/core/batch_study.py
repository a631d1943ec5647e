"""The batch-size study that sensitivity, sharpness (and their measures) share: the same MLP
trained once per batch size and seed, then measured at its final weights.

Batch sizes cannot share a training step (each takes its own number of steps per epoch), so
each batch size trains on its own; the `repeats` seeds of one batch size train together as a
vmap ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.core.config import BatchSizeStudy
from experiments.core.context import RunContext
from experiments.core.data import Dataset, dataset_for
from experiments.core.models import classifier
from experiments.core.train import TrainSpec
from experiments.core.variants import Outcome, Variant, run_variants
from experiments.tracking import Tracker


def train_batch_sizes(config: BatchSizeStudy, tracker: Tracker,
                      ctx: RunContext) -> tuple[Dataset, list[Outcome]]:
    """One child run per batch size × seed; all start from the same initialisations
    (seed, seed+1 …) and train for the same number of epochs. Train metrics are evaluated at
    each epoch's end weights over the whole training set."""
    data = dataset_for(config, ctx.device)
    variants = []
    for batch_size in config.batch_sizes:
        spec = TrainSpec.of(config, batch_size=batch_size)
        for seed in range(config.seed, config.seed + config.repeats):
            name = f"bs{batch_size}" + (f"-seed{seed}" if config.repeats > 1 else "")
            variants.append(Variant(name, lambda: classifier(data, config.hidden), seed,
                                    {"batch_size": batch_size, "lr": config.lr,
                                     "optimizer": config.optimizer, "hidden": config.hidden},
                                    spec=spec))
    outcomes = run_variants(tracker, ctx, variants, data.train,
                            evals={"train": data.train, "test": data.test}, together=True)
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
