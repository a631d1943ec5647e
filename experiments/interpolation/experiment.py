"""HW1-3 Flatness vs generalization, part 1: the line between two trained models.

Train m1 and m2 two ways (batch size 64 vs 1024, or learning rate 1e-3 vs 1e-2), then walk the
straight line θ(α) = (1−α)·θ1 + α·θ2 through weight space, beyond both ends: how the loss rises
around each model shows which one sits in the flatter minimum.
"""

from __future__ import annotations

import torch

from experiments.core import measures, plots
from experiments.core.context import RunContext
from experiments.core.data import dataset_for
from experiments.core.models import classifier
from experiments.core.train import TrainSpec
from experiments.core.variants import Variant, run_variants
from experiments.interpolation.config import Config
from experiments.tracking import Tracker


def alpha_grid(config: Config) -> list[float]:
    """α from `alpha_min` to `alpha_max` in steps of `alpha_step`, rounded so that 0 and 1
    are hit exactly (and always included)."""
    count = int(round((config.alpha_max - config.alpha_min) / config.alpha_step))
    grid = {round(config.alpha_min + k * config.alpha_step, 6) for k in range(count + 1)}
    return sorted(grid | {0.0, 1.0})


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    variants = [
        Variant(f"m{i + 1}-bs{a.batch_size}-lr{a.lr:g}",
                lambda: classifier(data, config.hidden),
                config.seed if config.same_init else config.seed + i,
                {"batch_size": a.batch_size, "lr": a.lr, "hidden": config.hidden},
                spec=TrainSpec.of(config, lr=a.lr, batch_size=a.batch_size))
        for i, a in enumerate(config.approaches)]
    m1, m2 = run_variants(tracker, ctx, variants, data.train, evals={"test": data.test})
    first, second = m1.model.state_dict(), m2.model.state_dict()
    tracker.snapshots({"m1": first, "m2": second})

    alphas = alpha_grid(config)
    line = measures.interpolate(first, second, torch.tensor(alphas, device=ctx.device))
    splits = {"train": data.train.head(config.eval_subset), "test": data.test}
    values = {}
    for split_name, split in splits.items():
        loss, acc = measures.evaluate_stacked(m1.model, line, split)
        values[f"{split_name}_loss"], values[f"{split_name}_acc"] = loss.tolist(), acc.tolist()
    # MLflow steps are integers, so the α axis is logged as step = round(100·α) (α = 0.1 →
    # step 10): the chart's x axis reads as α in percent; the exact α go into a table
    steps = [round(100 * a) for a in alphas]
    for key, ys in values.items():
        tracker.log_series(f"interp_{key}", ys, steps)
    tracker.tags({"interp_step": "round(100*alpha)"})
    tracker.table("interpolation", [{"alpha": a, **{k: v[i] for k, v in values.items()}}
                                    for i, a in enumerate(alphas)])

    names = f"α=0: {m1.variant.name}, α=1: {m2.variant.name}"
    fig = plots.twin_axes(
        alphas, {f"{s} cross-entropy": values[f"{s}_loss"] for s in splits},
        {f"{s} accuracy": values[f"{s}_acc"] for s in splits}, xlabel="α", logy=True,
        left_label="cross-entropy (log scale)", right_label="accuracy",
        title=f"{config.dataset}: θ(α) = (1−α)θ1 + αθ2\n{names}")
    for a, label in ((0.0, "m1"), (1.0, "m2")):
        fig.axes[0].axvline(a, color="gray", linestyle=":", linewidth=1)
        fig.axes[0].annotate(label, (a, 0.55), xycoords=("data", "axes fraction"),  # mid-height:
                             xytext=(3, 0), textcoords="offset points", color="gray")  # clear of curves
    tracker.figure(fig, "interpolation")
    at = {a: i for i, a in enumerate(alphas)}
    tracker.summary({f"{key}_at_{name}": values[key][at[a]]
                     for key in values for name, a in (("m1", 0.0), ("m2", 1.0))})
