"""HW1-3 Generalization: number of parameters vs generalization.

One family of MLPs at widths spread over orders of magnitude in parameter count, all trained
the same way; the final train and test loss and accuracy against the number of parameters show
how the generalisation gap moves as the models grow.
"""

from __future__ import annotations

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import dataset_for
from experiments.core.models import classifier, count_params
from experiments.core.train import TrainSpec
from experiments.core.variants import Variant, run_variants
from experiments.param_count.config import Config
from experiments.tracking import Tracker


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    variants = [Variant(f"width-{w}", lambda w=w: classifier(data, [w] * config.depth),
                        config.seed, {"width": w, "depth": config.depth})
                for w in sorted(config.widths)]
    # "train" at each epoch's end weights, so the final train loss is the final model's
    outcomes = run_variants(tracker, ctx, variants, data.train, TrainSpec.of(config),
                            evals={"train": data.train, "test": data.test})

    n_params = [count_params(o.model) for o in outcomes]
    for metric in ("train_loss", "test_loss", "train_acc", "test_acc"):
        # on the parent, step = number of parameters: MLflow charts the metric against it
        tracker.log_series(f"{metric}_by_params", [o.final[metric] for o in outcomes], n_params)
    for metric, label, logy in (("loss", "cross-entropy", True), ("acc", "accuracy", False)):
        curves = {s: (n_params, [o.final[f"{s}_{metric}"] for o in outcomes])
                  for s in ("train", "test")}
        fig = plots.lines(curves, xlabel="number of parameters", ylabel=label, logx=True,
                          logy=logy, marker="o", title=f"{config.dataset}: {label} vs #parameters")
        tracker.figure(fig, "accuracy_vs_params" if metric == "acc" else "loss_vs_params")
    tracker.summary({"min_params": min(n_params), "max_params": max(n_params)})
