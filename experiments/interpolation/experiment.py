"""HW1-3 Flatness vs generalization, part 1: the line between two trained models.

Train m1 and m2 two ways (batch size 64 vs 1024, or learning rate 1e-3 vs 1e-2), each from
several seeds, then walk, per seed, the straight line θ(α) = (1−α)·θ1 + α·θ2 through weight
space, beyond both ends: how the loss rises around each model shows which one sits in the
flatter minimum (Keskar et al. 2017, fig. 3: the large-batch end is the sharp one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from experiments.core import measures, plots
from experiments.core.batch_study import budget_hooks, budget_spent
from experiments.core.context import RunContext
from experiments.core.data import Dataset, dataset_for
from experiments.core.findings import Finding, average, log_findings, withheld
from experiments.core.models import classifier
from experiments.core.train import TrainSpec
from experiments.core.variants import Outcome, Variant, by_group, mean_std, run_variants, summarize
from experiments.interpolation.config import Config
from experiments.tracking import Tracker

Line = dict[str, list[float]]  # {"<split>_loss" | "<split>_acc": one value per α}


def alpha_grid(config: Config) -> list[float]:
    """α from `alpha_min` to `alpha_max` in steps of `alpha_step`, rounded so that 0 and 1
    are hit exactly (and always included), as are −`delta` and 1 + `delta` (the finding's)."""
    count = int(round((config.alpha_max - config.alpha_min) / config.alpha_step))
    grid = {round(config.alpha_min + k * config.alpha_step, 6) for k in range(count + 1)}
    return sorted(grid | {0.0, 1.0, round(-config.delta, 6), round(1 + config.delta, 6)})


def train_pairs(config: Config, data: Dataset, tracker: Tracker,
                ctx: RunContext) -> list[tuple[Outcome, Outcome]]:
    """m1 and m2 from each seed: (m1, m2) per seed. With `same_init` the pair of seed s both
    start from seed s; without, m2 starts from seed s + `seeds` (no init shared with any m1)."""
    variants = [
        Variant(f"m{i + 1}-bs{a.batch_size}-lr{a.lr:g}",
                lambda: classifier(data, config.hidden),
                config.seed + (0 if config.same_init else i * config.seeds),
                {"batch_size": a.batch_size, "lr": a.lr, "hidden": config.hidden,
                 "budget": config.budget},
                spec=TrainSpec.of(config, lr=a.lr, batch_size=a.batch_size))
        for i, a in enumerate(config.approaches)]
    outcomes = run_variants(tracker, ctx, variants, data.train, seeds=config.seeds,
                            evals={"train": data.train, "test": data.test},
                            hooks=budget_hooks(config))
    for outcome in outcomes:
        outcome.record(budget_spent(outcome, len(data.train), config.budget))
    first, second = by_group(outcomes).values()
    return list(zip(first, second))


def walk(config: Config, data: Dataset, m1: Outcome, m2: Outcome, alphas: list[float]) -> Line:
    """Loss and accuracy along θ(α) of one pair, all α at once: train on the first
    `eval_subset` training examples, test on the test split."""
    line = measures.interpolate(m1.model.state_dict(), m2.model.state_dict(),
                                torch.tensor(alphas, device=data.train.x.device))
    values: Line = {}
    for name, split in {"train": data.train.head(config.eval_subset), "test": data.test}.items():
        loss, acc = measures.evaluate_stacked(m1.model, line, split)
        values[f"{name}_loss"], values[f"{name}_acc"] = loss.tolist(), acc.tolist()
    return values


def findings(config: Config, lines: Sequence[Line], alphas: list[float]) -> list[Finding]:
    """Keskar et al.'s fig. 3, per seed on the train loss L(α): steepness = [L(1+δ) − L(1)] −
    [L(−δ) − L(0)] (the rise beyond the large-batch m2 minus the rise beyond the small-batch
    m1), expected > 0 — only when m2's batch is the larger; blow-up = min(L(α_min), L(α_max))
    − max(L(0), L(1)), expected > 0. Means over seeds, bootstrap over seeds."""
    at = {a: i for i, a in enumerate(alphas)}

    def loss(line: Line, alpha: float) -> float:
        return line["train_loss"][at[round(alpha, 6)]]

    d = config.delta
    steep = [(loss(v, 1 + d) - loss(v, 1)) - (loss(v, -d) - loss(v, 0)) for v in lines]
    blow = [min(loss(v, config.alpha_min), loss(v, config.alpha_max)) - max(loss(v, 0), loss(v, 1))
            for v in lines]
    small, large = (a.batch_size for a in config.approaches)
    steeper = average("large_batch_side_steeper", "the loss along θ(α) rises more steeply on the "
                      "large-batch side (m2, α > 1) than on the small-batch side (m1, α < 0) "
                      "(Keskar et al. 2017, fig. 3)", steep, expect="above", null=0.0,
                      seed=config.seed, what=f"over seeds of [L(1+δ) − L(1)] − [L(−δ) − L(0)], "
                      f"L the train loss along θ(α), δ = {d:g}")
    if large <= small:  # the claim compares a small batch (α = 0) with a large one (α = 1)
        steeper = withheld(steeper, f"m2's batch ({large}) is not larger than m1's ({small}): "
                                    "the claim is about batch sizes")
    return [steeper, average(
        "blows_up_beyond_ends", "beyond the endpoints the loss blows up: at both ends of the "
        "line it is above the loss of both models", blow, expect="above", null=0.0,
        seed=config.seed, what=f"over seeds of min(L({config.alpha_min:g}), "
        f"L({config.alpha_max:g})) − max(L(0), L(1)), L the train loss along θ(α)")]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    pairs = train_pairs(config, data, tracker, ctx)
    alphas = alpha_grid(config)
    lines = [walk(config, data, m1, m2, alphas) for m1, m2 in pairs]
    means, stds = log_lines(tracker, pairs, lines, alphas)
    summarize(tracker, [o for pair in pairs for o in pair])
    log_findings(tracker, findings(config, lines, alphas))
    figure(config, pairs[0], alphas, means, stds, tracker)


def log_lines(tracker: Tracker, pairs: Sequence[tuple[Outcome, Outcome]], lines: Sequence[Line],
              alphas: list[float]) -> tuple[Line, Line]:
    """The parent's series `interp_*` and summaries `*_at_m1|m2` (means over the seed pairs),
    the tables `interpolation` (mean and std per α) and `interpolation_seeds` (every pair);
    returns the (mean, std) lines."""
    stats = {key: [mean_std([line[key][i] for line in lines]) for i in range(len(alphas))]
             for key in lines[0]}
    means = {key: [m for m, _ in values] for key, values in stats.items()}
    stds = {key: [s for _, s in values] for key, values in stats.items()}
    # MLflow steps are integers, so the α axis is logged as step = round(100·α) (α = 0.1 →
    # step 10): the chart's x axis reads as α in percent; the exact α go into the tables
    steps = [round(100 * a) for a in alphas]
    for key, ys in means.items():
        tracker.log_series(f"interp_{key}", ys, steps)
    tracker.tags({"interp_step": "round(100*alpha)"})
    tracker.table("interpolation", [{"alpha": a, **{k: v[i] for k, v in means.items()},
                                     **{f"{k}_std": v[i] for k, v in stds.items()}}
                                    for i, a in enumerate(alphas)])
    tracker.table("interpolation_seeds", [{"seed": m1.variant.seed, "alpha": a,
                                           **{k: v[i] for k, v in line.items()}}
                                          for (m1, _), line in zip(pairs, lines)
                                          for i, a in enumerate(alphas)])
    at = {a: i for i, a in enumerate(alphas)}
    tracker.summary({f"{key}_at_{name}": means[key][at[a]]
                     for key in means for name, a in (("m1", 0.0), ("m2", 1.0))})
    return means, stds


def figure(config: Config, pair: tuple[Outcome, Outcome], alphas: list[float],
           means: Line, stds: Line, tracker: Tracker) -> None:
    """Train and test cross-entropy (log scale, left) and accuracy (right) along θ(α), the
    mean over seeds with ±1 std error bars, the two models' positions marked."""
    splits = ("train", "test")
    names = f"α=0: {pair[0].variant.group}, α=1: {pair[1].variant.group}"
    left = {f"{s} cross-entropy": f"{s}_loss" for s in splits}
    right = {f"{s} accuracy": f"{s}_acc" for s in splits}
    fig = plots.twin_axes(
        alphas, {name: means[key] for name, key in left.items()},
        {name: means[key] for name, key in right.items()},
        errors={name: stds[key] for name, key in {**left, **right}.items()}, xlabel="α",
        logy=True, left_label="cross-entropy (log scale)", right_label="accuracy",
        title=f"{config.dataset}: θ(α) = (1−α)θ1 + αθ2, mean ± 1 std over {config.seeds} "
              f"seed pairs\n{names}")
    for a, label in ((0.0, "m1"), (1.0, "m2")):
        fig.axes[0].axvline(a, color="gray", linestyle=":", linewidth=1)
        fig.axes[0].annotate(label, (a, 0.55), xycoords=("data", "axes fraction"),  # mid-height:
                             xytext=(3, 0), textcoords="offset points", color="gray")  # clear of curves
    tracker.figure(fig, "interpolation")

