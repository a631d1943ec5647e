"""HW1-2 Optimization, part 2: observe the gradient norm during training.

At every iteration the training loop records the loss of the mini-batch it descends and the
2-norm of that loss's gradient over all parameters. On a 1-D function fitted full batch both
fall together, the gradient norm with bumps where the fit finds a new feature; on MNIST with
mini-batches the loss falls while the gradient norm stays noisy — each batch pulls its own way.
Each task trains from `seeds` seeds as one ensemble; the figures draw the mean over the seeds
with a ±1 std band, and the finding counts, per seed, the orders of magnitude the gradient
norm fell from the start of training to its end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split, load_dataset, target_function
from experiments.core.findings import Finding, average, log_findings
from experiments.core.models import classifier, mlp
from experiments.core.train import StepRecords, TrainSpec
from experiments.core.variants import Outcome, Variant, mean_std, run_variants, summarize
from experiments.gradient_norm.config import Config
from experiments.tracking import Tracker

EVALUATIONS = 50  # per task: how often the recorded steps are read back and progress is shown
WINDOW = 20  # the start and the end of training: the first and the last 1/WINDOW of the iterations
CLAIM = "the gradient norm falls by orders of magnitude over training (at least one)"


@dataclass
class Task:
    """One training whose every iteration is recorded; `key` names its figure and summaries."""

    key: str
    variant: Variant
    data: Split
    spec: TrainSpec
    evals: dict[str, Split]


def recorded_spec(config: Config, loss: str, steps: int, batch: int | None) -> TrainSpec:
    """`steps` iterations of `batch` (None: full batch), evaluated ~`EVALUATIONS` times."""
    return TrainSpec.of(config, batch_size=batch, epochs=None, max_steps=steps, loss=loss,
                        eval_unit="step", eval_every=max(1, steps // EVALUATIONS))


def tasks(config: Config, device: str) -> list[Task]:
    """The 1-D fit, and MNIST unless switched off."""
    fit = target_function(config.target, config.n_points, (0.0, 1.0), device)
    found = [Task("function",
                  Variant(f"function: {config.target}",
                          lambda: mlp(1, config.function_hidden, 1), config.seed,
                          {"task": config.target, "hidden": config.function_hidden,
                           "batch_size": config.function_batch_size or config.n_points}),
                  fit, recorded_spec(config, "mse", config.function_steps,
                                     config.function_batch_size),
                  {"train": fit})]  # the fit's few points: its full-pass loss at each evaluation
    if config.mnist:
        mnist = load_dataset("mnist", device, config.train_subset)
        found.append(Task("mnist", Variant("mnist", lambda: classifier(mnist, config.mnist_hidden),
                                           config.seed, {"task": "mnist",
                                                         "hidden": config.mnist_hidden,
                                                         "batch_size": config.batch_size}),
                          mnist.train, recorded_spec(config, "cross_entropy", config.mnist_steps,
                                                     config.batch_size), {}))
    return found


def orders_fallen(norms: list[float]) -> float:
    """log10 of the median gradient norm over the first 1/WINDOW of the iterations (at least
    one) over the median over the last 1/WINDOW: the orders of magnitude it fell (medians,
    since a mini-batch gradient norm is noisy from one step to the next)."""
    window = max(1, len(norms) // WINDOW)
    return float(np.log10(np.median(norms[:window]) / np.median(norms[-window:])))


def log_steps(outcome: Outcome) -> tuple[list[float], list[float]]:
    """Log the per-iteration series on the seed's child run (in batches of 1000 values, MLflow
    step = iteration, from 1), record its summary measures and return (loss, gradient norm)."""
    losses = outcome.result.steps["step_loss"]
    norms = outcome.result.steps["grad_norm"]
    steps = list(range(1, len(losses) + 1))
    outcome.run.log_series("step_loss", losses, steps)
    outcome.run.log_series("grad_norm", norms, steps)
    outcome.record({"first_grad_norm": norms[0], "last_grad_norm": norms[-1],
                    "max_grad_norm": max(norms), "last_step_loss": losses[-1],
                    "min_step_loss": min(losses), "grad_norm_orders_fallen": orders_fallen(norms)})
    return losses, norms


def seed_mean(curves: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per iteration, the mean and the std over the seeds' curves (cut to the shortest)."""
    stats = [mean_std(values) for values in zip(*curves)]
    return [m for m, _ in stats], [s for _, s in stats]


def run_task(config: Config, tracker: Tracker, ctx: RunContext,
             task: Task) -> tuple[list[Outcome], Finding]:
    """Train one task from `seeds` seeds, log its figure; its outcomes and its finding."""
    outcomes = run_variants(tracker, ctx, [task.variant], task.data, task.spec, evals=task.evals,
                            seeds=config.seeds,
                            hooks=lambda group: [StepRecords(("step_loss", "grad_norm"))])
    losses, norms = zip(*(log_steps(o) for o in outcomes))
    kind = "MSE" if task.spec.loss == "mse" else "cross-entropy"
    batch = "full batch" if task.spec.batch_size is None else f"batch {task.spec.batch_size}"
    curves = {f"loss ({kind})": seed_mean(list(losses)), "gradient 2-norm": seed_mean(list(norms))}
    tracker.figure(plots.shared_x(list(range(1, len(curves["gradient 2-norm"][0]) + 1)),
                                  {label: mean for label, (mean, _) in curves.items()},
                                  bands={label: std for label, (_, std) in curves.items()},
                                  xlabel="iteration", logy=True,
                                  title=f"{task.variant.name}: loss and gradient norm at every "
                                        f"iteration\n({config.optimizer}, {batch}; mean ± std over "
                                        f"{len(outcomes)} seeds)"),
                   f"{task.key}_grad_norm")
    fallen = [orders_fallen(n) for n in norms]
    return outcomes, average(f"grad_norm_falls_{task.key}", CLAIM, fallen, expect="above", null=1.0,
                             seed=config.seed,
                             what=f"{task.key}: log10(median gradient norm of the first / of the "
                                  f"last 1/{WINDOW} of the iterations)")


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    results = [run_task(config, tracker, ctx, task) for task in tasks(config, ctx.device)]
    summarize(tracker, [o for outcomes, _ in results for o in outcomes])
    log_findings(tracker, [finding for _, finding in results])
