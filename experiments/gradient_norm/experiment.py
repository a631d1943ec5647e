"""HW1-2 Optimization, part 2: observe the gradient norm during training.

At every iteration the training loop records the loss of the mini-batch it descends and the
2-norm of that loss's gradient over all parameters. On a 1-D function fitted full batch both
fall together, the gradient norm with bumps where the fit finds a new feature; on MNIST with
mini-batches the loss falls while the gradient norm stays noisy — each batch pulls its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split, load_dataset, target_function
from experiments.core.models import classifier, mlp
from experiments.core.train import StepRecords, TrainSpec
from experiments.core.variants import Outcome, Variant, run_variants
from experiments.gradient_norm.config import Config
from experiments.tracking import Tracker

EVALUATIONS = 50  # per task: how often the recorded steps are read back and progress is shown


@dataclass
class Task:
    """One training whose every iteration is recorded; `key` names its figure and summaries."""

    key: str
    variant: Variant
    data: Split
    spec: TrainSpec


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
                                     config.function_batch_size))]
    if config.mnist:
        mnist = load_dataset("mnist", device, config.train_subset)
        found.append(Task("mnist", Variant("mnist", lambda: classifier(mnist, config.mnist_hidden),
                                           config.seed, {"task": "mnist",
                                                         "hidden": config.mnist_hidden,
                                                         "batch_size": config.batch_size}),
                          mnist.train, recorded_spec(config, "cross_entropy", config.mnist_steps,
                                                     config.batch_size)))
    return found


def log_steps(outcome: Outcome) -> tuple[list[int], list[float], list[float]]:
    """Log the per-iteration series on the task's child run (in batches of 1000 values, MLflow
    step = iteration, from 1) and return (iterations, loss, gradient norm)."""
    losses = outcome.result.steps["step_loss"]
    norms = outcome.result.steps["grad_norm"]
    steps = list(range(1, len(losses) + 1))
    outcome.run.log_series("step_loss", losses, steps)
    outcome.run.log_series("grad_norm", norms, steps)
    outcome.run.summary({"first_grad_norm": norms[0], "last_grad_norm": norms[-1],
                         "max_grad_norm": max(norms), "last_step_loss": losses[-1],
                         "min_step_loss": min(losses)})
    return steps, losses, norms


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    for task in tasks(config, ctx.device):
        (outcome,) = run_variants(tracker, ctx, [task.variant], task.data, task.spec,
                                  hooks=lambda group: [StepRecords(("step_loss", "grad_norm"))])
        steps, losses, norms = log_steps(outcome)
        kind = "MSE" if task.spec.loss == "mse" else "cross-entropy"
        batch = "full batch" if task.spec.batch_size is None else f"batch {task.spec.batch_size}"
        tracker.figure(plots.shared_x(steps, {f"loss ({kind})": losses, "gradient 2-norm": norms},
                                      xlabel="iteration", logy=True,
                                      title=f"{task.variant.name}: loss and gradient norm at "
                                            f"every iteration ({config.optimizer}, {batch})"),
                       f"{task.key}_grad_norm")
        tracker.summary({f"{task.key}.last_grad_norm": norms[-1],
                         f"{task.key}.last_step_loss": losses[-1]})
