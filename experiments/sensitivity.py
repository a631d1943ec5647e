"""HW1-3 Flatness vs generalization, part 2: sensitivity vs batch size.

The same network trained with several batch sizes; for each, the loss, the accuracy and the
sensitivity — how much the loss moves when an input moves — at the final weights. Models whose
loss reacts less to their inputs tend to generalise better.

Batch sizes cannot share a training step (each takes its own number of steps per epoch), so
each batch size trains on its own; the `repeats` seeds of one batch size train together as a
vmap ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments import measures, plots
from experiments.configs.sensitivity import BatchSizeStudy, Config
from experiments.context import RunContext
from experiments.data import Dataset, load_dataset
from experiments.models import classifier
from experiments.tracking import Tracker
from experiments.train import TrainSpec
from experiments.variants import Outcome, Variant, run_variants


def train_batch_sizes(config: BatchSizeStudy, tracker: Tracker,
                      ctx: RunContext) -> tuple[Dataset, list[Outcome]]:
    """One child run per batch size × seed; all start from the same initialisations
    (seed, seed+1 …) and train for the same number of epochs. Train metrics are evaluated at
    each epoch's end weights over the whole training set."""
    data = load_dataset(config.dataset, ctx.device, config.train_subset, config.test_subset)
    variants = []
    for batch_size in config.batch_sizes:
        spec = TrainSpec(optimizer=config.optimizer, lr=config.lr, batch_size=batch_size,
                         epochs=config.epochs)
        for seed in range(config.seed, config.seed + config.repeats):
            name = f"bs{batch_size}" + (f"-seed{seed}" if config.repeats > 1 else "")
            variants.append(Variant(name, lambda: classifier(data, config.hidden), seed,
                                    {"batch_size": batch_size, "lr": config.lr,
                                     "optimizer": config.optimizer, "hidden": config.hidden},
                                    spec=spec))
    outcomes = run_variants(tracker, ctx, variants, data.train, variants[0].spec,
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


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data, outcomes = train_batch_sizes(config, tracker, ctx)
    train_part = data.train.head(config.measure_subset)
    results = []
    for index, outcome in enumerate(outcomes):
        ctx.begin(f"sensitivity of {outcome.variant.name}", index, len(outcomes))
        values = {"sensitivity": measures.sensitivity(outcome.model, data.test.x, data.test.y),
                  "sensitivity_train": measures.sensitivity(outcome.model, train_part.x,
                                                            train_part.y)}
        if config.jacobian:
            values["jacobian_sensitivity"] = measures.jacobian_sensitivity(outcome.model,
                                                                          data.test.x)
        host = {k: v.item() for k, v in values.items()}
        outcome.run.summary(host)
        results.append({**outcome.final, **host})
    tracker.table("sensitivity", rows(outcomes, results))

    def column(key: str) -> list[float]:
        return by_batch_size(outcomes, [r[key] for r in results])[1]

    sizes = sorted(config.batch_sizes)
    for key in ("sensitivity", "sensitivity_train", "train_loss", "test_loss", "train_acc",
                "test_acc", *(["jacobian_sensitivity"] if config.jacobian else [])):
        tracker.log_series(f"{key}_by_batch_size", column(key), sizes)  # step = batch size
    right = {"sensitivity (train)": column("sensitivity_train"),  # same order as the left
             "sensitivity (test)": column("sensitivity")}
    for metric, label in (("loss", "cross-entropy"), ("acc", "accuracy")):
        tracker.figure(plots.twin_axes(
            sizes, {f"{s} {label}": column(f"{s}_{metric}") for s in ("train", "test")}, right,
            xlabel="batch size", left_label=label, logx=True,
            right_label=r"sensitivity $\|\partial\ell_i/\partial x_i\|_F$ (mean over samples)",
            title=f"{config.dataset}: {label} and sensitivity vs batch size"),
            f"{'accuracy' if metric == 'acc' else 'loss'}_sensitivity")
