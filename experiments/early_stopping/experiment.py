"""Training dynamics: early stopping (seed 003, part 6).

Hold out part of the training set as a validation set. Train, and every `eval_every` steps
measure the validation loss: while the network still learns the pattern it falls; once it starts
memorising the training set it rises again. Stop when it has not improved for `patience`
validations, put back the weights of the best validation (not the last ones) and save them as the
snapshot; the test set, never looked at before, then measures the restored model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split, dataset_for
from experiments.core.models import classifier
from experiments.core.train import EvalEvent, ModelStack, Params, TrainSpec
from experiments.core.variants import Outcome, Variant, run_variants
from experiments.early_stopping.config import Config
from experiments.tracking import Tracker


def holdout(train: Split, size: int, seed: int) -> tuple[Split, Split]:
    """(fit, validation): a seeded random `size` examples of `train` for validation, the rest
    to fit on; disjoint, together all of `train`."""
    if not 0 < size < len(train):
        raise ValueError(f"validation: {size} examples cannot be held out of {len(train)}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    order = order.to(train.x.device)
    val, fit = order[:size], order[size:]
    return Split(train.x[fit], train.y[fit]), Split(train.x[val], train.y[val])


class EarlyStopping:
    """The `on_eval` hook of one model: keeps the weights of the lowest validation loss seen
    (`val_loss` at the evaluation's weights, lower by more than `min_delta` to count) and asks
    to stop after `patience` evaluations without such an improvement."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best_loss = math.inf
        self.best_step: int | None = None
        self.best_state: Params | None = None
        self.stale = 0

    def __call__(self, event: EvalEvent) -> list[int]:
        (model,), (metrics,) = event.active, event.metrics
        loss = metrics.get("val_loss", math.inf)  # missing = not finite
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step = loss, event.step
            self.best_state = event.state_dict(model)
            self.stale = 0
        else:
            self.stale += 1
        return [model] if self.stale >= self.patience else []


def evaluate(model: nn.Module, splits: dict[str, Split]) -> dict[str, float]:
    """Loss and accuracy of `model` on each split, through the training loop's own evaluation
    (so the restored model's validation loss reproduces the recorded best one bit for bit)."""
    stack = ModelStack([model])
    out: dict[str, float] = {}
    for name, split in splits.items():
        loss, acc = stack.evaluate(split, "cross_entropy")
        out[f"{name}_loss"], out[f"{name}_acc"] = loss.item(), acc.item()
    return out


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    fit, val = holdout(data.train, config.validation, config.seed)
    variant = Variant(f"mlp-{'x'.join(map(str, config.hidden))}",
                      lambda: classifier(data, config.hidden, config.activation),
                      config.seed, {"hidden": config.hidden, "activation": config.activation,
                                    "lr": config.lr, "batch_size": config.batch_size,
                                    "optimizer": config.optimizer, "patience": config.patience,
                                    "eval_every": config.eval_every, "fit_size": len(fit),
                                    "validation_size": len(val)})
    stopper = EarlyStopping(config.patience, config.min_delta)
    (outcome,) = run_variants(tracker, ctx, [variant], fit, TrainSpec.of(config),
                              evals={"val": val, "test": data.test}, on_eval=stopper)
    if stopper.best_state is None:
        raise RuntimeError("no finite validation loss was ever measured: nothing to restore "
                           f"(status {outcome.result.status}); lower the learning rate")
    last = {k: v.detach().clone() for k, v in outcome.model.state_dict().items()}
    outcome.model.load_state_dict(stopper.best_state)
    restored = evaluate(outcome.model, {"fit": fit, "val": val, "test": data.test})
    tracker.snapshots({"best": stopper.best_state, "last": last})
    facts = {"best_step": stopper.best_step, "best_val_loss": stopper.best_loss,
             "stop_step": outcome.result.stop_step or 0,
             **{f"restored_{k}": v for k, v in restored.items()}}
    outcome.run.summary(facts)
    tracker.summary(facts)
    tracker.tags({"stopped_early": outcome.result.status == "stopped"})
    figures(outcome, stopper, tracker)


def figures(outcome: Outcome, stopper: EarlyStopping, tracker: Tracker) -> None:
    """Train / validation (/ test) loss and accuracy with the restored step and the stop."""
    stop = outcome.result.stop_step or 0
    stopped = outcome.result.status == "stopped"
    lines = {"best validation (restored)": float(stopper.best_step or 0),
             "stopped" if stopped else "budget spent": float(stop)}
    for metric, ylabel in (("loss", "cross-entropy"), ("acc", "accuracy")):
        curves = {name: outcome.series(f"{key}_{metric}")
                  for name, key in (("train (mini-batches)", "running"), ("validation", "val"),
                                    ("test", "test"))}
        x, values = curves["validation"]
        best = values[x.index(stopper.best_step)] if stopper.best_step in x else math.nan
        tracker.figure(plots.lines(curves, xlabel="step", ylabel=ylabel, logy=metric == "loss",
                                   markers={f"best, step {stopper.best_step}": (stopper.best_step, best)},
                                   vlines=lines,
                                   title=f"early stopping: patience {stopper.patience}, "
                                         f"{'stopped' if stopped else 'not stopped'} at step {stop}"),
                       metric)
