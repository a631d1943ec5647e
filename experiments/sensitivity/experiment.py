"""HW1-3 Flatness vs generalization, part 2: sensitivity vs batch size.

The same network trained with several batch sizes; for each, the loss, the accuracy and the
sensitivity — how much the loss moves when an input moves — at the final weights. Models whose
loss reacts less to their inputs tend to generalise better.
"""

from __future__ import annotations

from experiments.core import measures, plots
from experiments.core.batch_study import by_batch_size, rows, train_batch_sizes
from experiments.core.context import RunContext
from experiments.sensitivity.config import Config
from experiments.tracking import Tracker


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
