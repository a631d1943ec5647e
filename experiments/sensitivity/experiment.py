"""HW1-3 Flatness vs generalization, part 2: sensitivity vs batch size.

The same network trained with several batch sizes, each from `seeds` seeds; for each model, the
loss, the accuracy and the sensitivity — how much the loss moves when an input moves — at the
final weights. Novak et al. (2018) found that models whose outputs react less to their inputs
generalise better: the finding is the rank correlation of the sensitivity with the
generalization gap over every model trained.
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.core import measures, plots
from experiments.core.batch_study import budget_spent, rows, spread_by_batch_size, train_batch_sizes
from experiments.core.context import RunContext
from experiments.core.data import Dataset
from experiments.core.findings import Finding, correlation, log_findings
from experiments.core.variants import Outcome, summarize
from experiments.sensitivity.config import Config
from experiments.tracking import Tracker


def measure(config: Config, data: Dataset, outcome: Outcome) -> dict[str, float]:
    """The sensitivities of one model at its final weights (see the config), and the budget it
    got (`budget_spent`)."""
    train_part = data.train.head(config.measure_subset)
    values = {"sensitivity": measures.sensitivity(outcome.model, data.test.x, data.test.y),
              "sensitivity_train": measures.sensitivity(outcome.model, train_part.x, train_part.y)}
    if config.jacobian:
        values["jacobian_sensitivity"] = measures.jacobian_sensitivity(outcome.model, data.test.x)
    return {**{k: v.item() for k, v in values.items()},
            **budget_spent(outcome, len(data.train), config.budget)}


def findings(config: Config, outcomes: Sequence[Outcome]) -> list[Finding]:
    """Novak et al.'s claim over every model (batch size × seed): ρ(sensitivity, train acc −
    test acc) > 0; and its consequence with Keskar et al.'s larger gap at large batches:
    ρ(batch size, sensitivity) > 0."""
    sensitivity = [o.measures["sensitivity"] for o in outcomes]
    gap = [o.final["train_acc"] - o.final["test_acc"] for o in outcomes]
    sizes = [float(o.variant.params["batch_size"]) for o in outcomes]
    return [
        correlation("sensitivity_gap", "sensitivity (per sample) goes with the generalization "
                    "gap across models: lower sensitivity, smaller gap (Novak et al. 2018)",
                    sensitivity, gap, expect="above", seed=config.seed,
                    what="sensitivity, final_train_acc − final_test_acc"),
        correlation("batch_size_sensitivity", "larger batches give more sensitive models (Keskar "
                    "et al. 2017: larger batches generalise worse; with Novak et al.'s link of "
                    "sensitivity and gap)", sizes, sensitivity, expect="above", seed=config.seed,
                    what="batch size, sensitivity"),
    ]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data, outcomes = train_batch_sizes(config, tracker, ctx)
    for index, outcome in enumerate(outcomes):
        ctx.begin(f"sensitivity of {outcome.variant.name}", index, len(outcomes))
        outcome.record(measure(config, data, outcome))
    tracker.table("sensitivity", rows(outcomes, [{**o.final, **o.measures} for o in outcomes]))
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, outcomes))
    figures(config, outcomes, tracker)


def figures(config: Config, outcomes: Sequence[Outcome], tracker: Tracker) -> None:
    """Per measure, its mean over seeds vs batch size (parent series `<measure>_by_batch_size`),
    and the two figures loss & sensitivity, accuracy & sensitivity vs batch size with ±1 std
    error bars over seeds."""
    keys = ["sensitivity", "sensitivity_train", "train_loss", "test_loss", "train_acc",
            "test_acc", *(["jacobian_sensitivity"] if config.jacobian else [])]
    spread = {key: spread_by_batch_size(outcomes, [{**o.final, **o.measures}[key] for o in outcomes])
              for key in keys}
    sizes = spread["sensitivity"][0]
    for key, (_, means, _) in spread.items():
        tracker.log_series(f"{key}_by_batch_size", means, sizes)  # step = batch size
    sensitivity = {"sensitivity (train)": "sensitivity_train",  # same order as the left
                   "sensitivity (test)": "sensitivity"}
    for metric, label in (("loss", "cross-entropy"), ("acc", "accuracy")):
        left = {f"{s} {label}": f"{s}_{metric}" for s in ("train", "test")}
        named = {**left, **sensitivity}
        tracker.figure(plots.twin_axes(
            sizes, {name: spread[key][1] for name, key in left.items()},
            {name: spread[key][1] for name, key in sensitivity.items()},
            errors={name: spread[key][2] for name, key in named.items()},
            xlabel="batch size", left_label=label, logx=True,
            right_label=r"sensitivity $\|\partial\ell_i/\partial x_i\|_F$ (mean over samples)",
            title=f"{config.dataset}: {label} and sensitivity vs batch size\n"
                  f"mean ± 1 std over {config.seeds} seeds, budget {config.budget}"),
            f"{'accuracy' if metric == 'acc' else 'loss'}_sensitivity")
