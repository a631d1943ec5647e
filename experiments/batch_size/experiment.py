"""Training dynamics: batch size (seed 003, part 4).

The same MLP, from the same initial weights, is trained with mini-batches of several sizes up to
the full batch, for the same budget: a number of optimizer steps (as in the course) or of
epochs. A small batch estimates the gradient from few examples, so its loss fluctuates from step
to step; a large one averages the noise away and each step is closer to gradient descent, but
sees the data more slowly per step. We log train/test loss and accuracy per evaluation, the loss
of every mini-batch (the noise itself), and the final accuracy per batch size.
"""

from __future__ import annotations

import math

from experiments.batch_size.config import Config
from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Dataset, dataset_for
from experiments.core.models import classifier
from experiments.core.train import StepRecords, TrainSpec
from experiments.core.variants import Outcome, Variant, log_train_test_figures, run_variants
from experiments.tracking import Tracker


def label(batch: int | str) -> str:
    return "full batch" if batch == "full" else f"batch {batch}"


def schedule(config: Config, batch: int | None) -> TrainSpec:
    """The budget of one batch size (None = full): `steps` optimizer steps, or `epochs` passes
    over the data, evaluated every `eval_every` steps (or epochs)."""
    if config.budget == "steps":
        return TrainSpec.of(config, batch_size=batch)
    return TrainSpec.of(config, batch_size=batch, epochs=config.epochs, max_steps=None,
                        eval_unit="epoch")


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


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    # "train" is evaluated on the whole training set at the current weights (not the running
    # mean of the mini-batches), so every batch size is measured the same way
    outcomes = run_variants(tracker, ctx, variants(config, data), data.train,
                            evals={"train": data.train, "test": data.test}, together=True,
                            hooks=lambda group: [StepRecords(("step_loss",))])
    for outcome in outcomes:  # every mini-batch loss: the noise of the gradient estimate
        losses = outcome.result.steps.get("step_loss", [])
        outcome.run.log_series("step_loss", losses, range(1, len(losses) + 1))
    figures(config, outcomes, tracker)
    rows = [{"batch_size": o.variant.params["batch_size"], "full_batch": o.variant.params["full_batch"],
             "steps": o.result.stop_step, "status": o.result.status,
             **{k: o.final.get(k, math.nan) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}}
            for o in outcomes]
    tracker.table("final", rows)
    best = max(outcomes, key=lambda o: o.final.get("test_acc", -1.0))
    tracker.summary({"best_batch_size": best.variant.params["batch_size"],
                     "best_test_acc": best.final.get("test_acc", math.nan)})


def figures(config: Config, outcomes: list[Outcome], tracker: Tracker) -> None:
    """Curves per batch size, the mini-batch loss of every step, final accuracy vs batch size."""
    unit = "step" if config.budget == "steps" else "epoch"
    names = {o.variant.name: o.variant.name.replace("-", " ") for o in outcomes}
    log_train_test_figures(
        tracker, outcomes, xlabel=unit, label=lambda o: names[o.variant.name],
        title=f"{{metric}} per batch size (budget: {getattr(config, config.budget)} {config.budget})")
    noise = {names[o.variant.name]: {"mini-batch loss": (
        list(range(1, len(o.result.steps.get("step_loss", [])) + 1)), o.result.steps.get("step_loss", []))}
        for o in outcomes}
    tracker.figure(plots.panels(noise, xlabel="step", ylabel="cross-entropy of the step's batch",
                                logy=True, columns=2,
                                title="loss of each mini-batch: the noise of the gradient estimate"),
                   "batch_loss")
    sizes = [o.variant.params["batch_size"] for o in outcomes]
    finals = {f"final {s} acc": (sizes, [o.final.get(f"{s}_acc", math.nan) for o in outcomes])
              for s in ("train", "test")}
    tracker.figure(plots.lines(finals, xlabel="batch size (log; the largest = full batch)",
                               ylabel="accuracy", logx=True, title="final accuracy per batch size"),
                   "final_accuracy")
