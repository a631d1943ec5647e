"""Training dynamics: batch size (seed 003, part 4).

The same MLP, from the same initial weights per seed, is trained with mini-batches of several
sizes up to the full batch, for the same budget: a number of optimizer steps (as in the
course), of epochs, or until the training loss reaches a target. A small batch estimates the
gradient from few examples, so its loss fluctuates from step to step; a large one averages the
noise away and each step is closer to gradient descent, but sees the data more slowly per step.
We log train/test loss and accuracy per evaluation, the loss of every mini-batch (the noise
itself), and the final accuracy per batch size, each over `seeds` seeds.

The default budget is the course's: equal steps. It compares what one step buys, but gives the
full batch far more passes over the data than a batch of 50 (5000 steps are 5000 epochs of the
full batch and 5000·50/n epochs of batch 50), so it cannot test the claim made at equal epochs;
budget=epochs does (and gives the full batch only `epochs` steps), budget=target_loss compares
batch sizes at a comparable training loss (Keskar et al.).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from experiments.batch_size.config import Config
from experiments.core import plots
from experiments.core.batch_study import budget_spent, spread_by_batch_size
from experiments.core.context import RunContext
from experiments.core.data import Dataset, dataset_for
from experiments.core.findings import Finding, correlation, difference, log_findings, withheld
from experiments.core.models import classifier
from experiments.core.train import Hook, StepRecords, TrainSpec, UntilLoss
from experiments.core.variants import (
    Outcome,
    Variant,
    by_group,
    log_train_test_figures,
    run_variants,
    summarize,
)
from experiments.tracking import Tracker


def label(batch: int | str) -> str:
    return "full batch" if batch == "full" else f"batch {batch}"


def schedule(config: Config, batch: int | None) -> TrainSpec:
    """The budget of one batch size (None = full): `steps` optimizer steps (the cap, with
    budget=target_loss), or `epochs` passes over the data, evaluated every `eval_every` steps
    (or epochs)."""
    if config.budget == "epochs":
        return TrainSpec.of(config, batch_size=batch, epochs=config.epochs, max_steps=None,
                            eval_unit="epoch")
    return TrainSpec.of(config, batch_size=batch)


def hooks(config: Config) -> list[Hook]:
    """Every step's mini-batch loss kept; with budget=target_loss, a model stops as `reached`
    at the first evaluation whose full-pass `train_loss` is at most `target_loss`."""
    until = [UntilLoss(config.target_loss, "train_loss")] if config.budget == "target_loss" else []
    return [StepRecords(("step_loss",)), *until]


def variants(config: Config, data: Dataset) -> list[Variant]:
    """One variant per batch size, all from the same seed, hence the same initial weights."""
    n = len(data.train)
    out = []
    for batch in config.batch_sizes:
        size = None if batch == "full" else min(batch, n)
        out.append(Variant(
            label(batch).replace(" ", "-"),
            lambda: classifier(data, config.hidden, config.activation), config.seed,
            {"batch_size": size or n, "full_batch": size is None, "lr": config.lr,
             "activation": config.activation, "hidden": config.hidden, "budget": config.budget},
            spec=schedule(config, size)))
    return out


def step_loss_noise(losses: Sequence[float]) -> float:
    """The noise of a model's per-step losses: the sample standard deviation (ddof 1) of the
    differences ℓ_{t+1} − ℓ_t of consecutive mini-batch losses over all its steps (differences,
    so the downward trend of training does not count as noise); nan with fewer than 3 steps."""
    return float(np.std(np.diff(losses), ddof=1)) if len(losses) > 2 else math.nan


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    # "train" is evaluated on the whole training set at the current weights (not the running
    # mean of the mini-batches), so every batch size is measured the same way
    outcomes = run_variants(tracker, ctx, variants(config, data), data.train, seeds=config.seeds,
                            evals={"train": data.train, "test": data.test}, together=True,
                            hooks=lambda group: hooks(config))
    for outcome in outcomes:  # every mini-batch loss: the noise of the gradient estimate
        losses = outcome.result.steps.get("step_loss", [])
        outcome.run.log_series("step_loss", losses, range(1, len(losses) + 1))
        outcome.record({"step_loss_noise": step_loss_noise(losses),
                        **budget_spent(outcome, len(data.train), config.budget)})
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, outcomes))
    figures(config, outcomes, tracker)
    tracker.table("final", [
        {"batch_size": o.variant.params["batch_size"], "full_batch": o.variant.params["full_batch"],
         "seed": o.variant.seed, "steps": o.result.stop_step, "status": o.result.status,
         **{k: o.final.get(k, math.nan) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
         **o.measures} for o in outcomes])
    accuracy = {name: float(np.mean([o.final.get("test_acc", math.nan) for o in seeds]))
                for name, seeds in by_group(outcomes).items()}
    best = max(accuracy, key=lambda name: np.nan_to_num(accuracy[name], nan=-1.0))
    tracker.summary({"best_batch_size": by_group(outcomes)[best][0].variant.params["batch_size"],
                     "best_test_acc": accuracy[best]})


def findings(config: Config, outcomes: Sequence[Outcome]) -> list[Finding]:
    """Seed 003's two claims over every model: ρ(batch size, `step_loss_noise`) < 0; and, at
    an equal number of epochs only, mean final test accuracy of the smallest batch − of the
    full batch ≥ 0 (tested as > 0: an interval on 0 is inconclusive)."""
    noisy = [o for o in outcomes if math.isfinite(o.measures["step_loss_noise"])]
    noise = correlation(
        "smaller_batches_noisier", "smaller batches give noisier per-step losses (seed 003)",
        [float(o.variant.params["batch_size"]) for o in noisy],
        [o.measures["step_loss_noise"] for o in noisy], expect="below", seed=config.seed,
        what="batch size, std of consecutive mini-batch loss differences")
    groups = by_group(outcomes)
    smallest = min(groups.values(), key=lambda seeds: seeds[0].variant.params["batch_size"])
    full = next((seeds for seeds in groups.values() if seeds[0].variant.params["full_batch"]), None)
    claim = "at an equal number of epochs smaller batches reach at least the accuracy of full batch"
    if full is None or full is smallest:
        return [noise, Finding("small_batch_at_least_full", claim, "no statistic", math.nan,
                               (math.nan, math.nan), "above",
                               details={"reason": "no full batch and smaller batch to compare"})]
    accuracy = difference(
        "small_batch_at_least_full", f"{claim} (seed 003)",
        [o.final.get("test_acc", math.nan) for o in smallest],
        [o.final.get("test_acc", math.nan) for o in full], expect="above", seed=config.seed,
        what=f"final_test_acc of {smallest[0].variant.group} − {full[0].variant.group}")
    if config.budget != "epochs":
        return [noise, withheld(accuracy, f"the claim is at equal epochs; budget={config.budget} "
                                          "gives the batch sizes different numbers of epochs")]
    return [noise, accuracy]


def figures(config: Config, outcomes: list[Outcome], tracker: Tracker) -> None:
    """Curves per batch size (mean ± std over seeds), the mini-batch loss of every step (the
    first seed's), the step-loss noise and the final accuracy vs batch size (mean ± std)."""
    unit = "epoch" if config.budget == "epochs" else "step"
    cap = {"steps": f"{config.steps} steps", "epochs": f"{config.epochs} epochs",
           "target_loss": f"train loss {config.target_loss:g}, at most {config.steps} steps"}
    log_train_test_figures(
        tracker, outcomes, xlabel=unit, label=lambda o: o.variant.group.replace("-", " "),
        title=f"{{metric}} per batch size (budget: {cap[config.budget]}; mean ± std over "
              f"{config.seeds} seeds)")
    noise = {}
    for name, seeds in by_group(outcomes).items():
        losses = seeds[0].result.steps.get("step_loss", [])
        noise[name.replace("-", " ")] = {"mini-batch loss": (list(range(1, len(losses) + 1)), losses)}
    tracker.figure(plots.panels(noise, xlabel="step", ylabel="cross-entropy of the step's batch",
                                logy=True, columns=2,
                                title=f"loss of each mini-batch, first seed (seed {config.seed}): "
                                      "the noise of the gradient estimate"), "batch_loss")
    xlabel = "batch size (log; the largest = full batch)"
    spread = spread_by_batch_size(outcomes, [o.measures["step_loss_noise"] for o in outcomes])
    tracker.figure(plots.lines({"step_loss_noise": spread}, xlabel=xlabel, logx=True, logy=True,
                               marker="o", ylabel="std of ℓ(t+1) − ℓ(t)",
                               title=f"noise of the per-step losses (mean ± std over "
                                     f"{config.seeds} seeds)"), "step_loss_noise")
    finals = {f"final {s} acc": spread_by_batch_size(
        outcomes, [o.final.get(f"{s}_acc", math.nan) for o in outcomes]) for s in ("train", "test")}
    tracker.figure(plots.lines(finals, xlabel=xlabel, ylabel="accuracy", logx=True, marker="o",
                               title=f"final accuracy per batch size (mean ± std over "
                                     f"{config.seeds} seeds)"), "final_accuracy")
