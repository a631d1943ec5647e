"""HW1-3 Generalization: number of parameters vs generalization.

One family of MLPs at widths spread over orders of magnitude in parameter count, all trained
the same way, each from `seeds` seeds; the final train and test loss and accuracy (mean over
the seeds, ±1 std band) against the number of parameters show how the generalisation gap moves
as the models grow.
"""

from __future__ import annotations

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import dataset_for
from experiments.core.findings import Finding, correlation, log_findings
from experiments.core.models import classifier, count_params
from experiments.core.train import TrainSpec
from experiments.core.variants import Outcome, Variant, by_group, mean_std, run_variants, summarize
from experiments.param_count.config import Config
from experiments.tracking import Tracker

METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")


def findings(config: Config, outcomes: list[Outcome]) -> list[Finding]:
    """Over every model (each width × seed): Spearman ρ of the parameter count with the final
    train accuracy, and with the generalisation gap (both expected above 0)."""
    claim = ("train accuracy rises with the parameter count; test accuracy rises then levels "
             "off while the generalization gap grows")
    n_params = [count_params(o.model) for o in outcomes]
    return [correlation("train_acc_rises_with_params", claim, n_params,
                        [o.final["train_acc"] for o in outcomes], expect="above",
                        what="number of parameters, final train accuracy", seed=config.seed),
            correlation("gap_grows_with_params", claim, n_params,
                        [o.measures["generalization_gap"] for o in outcomes], expect="above",
                        what="number of parameters, final train − test accuracy", seed=config.seed)]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    variants = [Variant(f"width-{w}", lambda w=w: classifier(data, [w] * config.depth),
                        config.seed, {"width": w, "depth": config.depth})
                for w in sorted(config.widths)]
    # "train" at each epoch's end weights, so the final train loss is the final model's
    outcomes = run_variants(tracker, ctx, variants, data.train, TrainSpec.of(config),
                            evals={"train": data.train, "test": data.test}, seeds=config.seeds)
    for o in outcomes:
        o.record({"generalization_gap": o.final["train_acc"] - o.final["test_acc"]})
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, outcomes))

    groups = list(by_group(outcomes).values())
    n_params = [count_params(seeds[0].model) for seeds in groups]
    stats = {metric: [mean_std([o.final[metric] for o in seeds]) for seeds in groups]
             for metric in METRICS}
    for metric, values in stats.items():
        # on the parent, step = number of parameters: MLflow charts the metric against it
        tracker.log_series(f"{metric}_by_params", [m for m, _ in values], n_params)
    for metric, label, logy in (("loss", "cross-entropy", True), ("acc", "accuracy", False)):
        curves = {s: (n_params, *zip(*stats[f"{s}_{metric}"])) for s in ("train", "test")}
        fig = plots.lines(curves, xlabel="number of parameters", ylabel=label, logx=True,
                          logy=logy, marker="o",
                          title=f"{config.dataset}: {label} vs #parameters "
                                f"(mean ± std over {config.seeds} seeds)")
        tracker.figure(fig, "accuracy_vs_params" if metric == "acc" else "loss_vs_params")
    tracker.summary({"min_params": min(n_params), "max_params": max(n_params)})
