"""Training dynamics: early stopping (seed 003, part 6).

Hold out part of the training set as a validation set. Train, and every `eval_every` steps
measure the validation loss: while the network still learns the pattern it falls; once it starts
memorising the training set it rises again. Stop when it has not improved for `patience`
validations, put back the weights of the best validation (not the last ones) and save them as the
snapshot; the test set, never looked at before, then measures the restored model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split, dataset_for
from experiments.core.findings import Finding, average, log_findings, maximum
from experiments.core.models import classifier
from experiments.core.train import EvalEvent, ModelStack, Params, TrainSpec
from experiments.core.variants import Outcome, Variant, run_variants, seed_series, summarize
from experiments.early_stopping.config import Config
from experiments.tracking import Tracker

TOLERANCE = 1e-6  # restored − lowest validation loss within this counts as equal (float32 rounding)


def holdout(train: Split, size: int, seed: int) -> tuple[Split, Split]:
    """(fit, validation): a seeded random `size` examples of `train` for validation, the rest
    to fit on; disjoint, together all of `train`."""
    if not 0 < size < len(train):
        raise ValueError(f"validation: {size} examples cannot be held out of {len(train)}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    order = order.to(train.x.device)
    val, fit = order[:size], order[size:]
    return Split(train.x[fit], train.y[fit]), Split(train.x[val], train.y[val])


@dataclass
class Best:
    """One model's early-stopping state: its lowest validation loss so far (`inf` before any),
    the step and weights it was at, and the evaluations since it last improved."""

    loss: float = math.inf
    step: int | None = None
    state: Params | None = None
    stale: int = 0


class EarlyStopping:
    """The `on_eval` callback of any number of models, each with its own state (`best[model]`,
    by the model's index in the variant list): keeps the weights of the model's lowest
    validation loss seen (`val_loss` at the evaluation's weights, lower by more than
    `min_delta` to count) and asks to stop it after `patience` evaluations without such an
    improvement."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best: dict[int, Best] = defaultdict(Best)

    def __call__(self, event: EvalEvent) -> list[int]:
        stop = []
        for model, metrics in zip(event.active, event.metrics):
            best = self.best[model]
            loss = metrics.get("val_loss", math.inf)  # missing = not finite
            if loss < best.loss - self.min_delta:
                best.loss, best.step, best.state, best.stale = (loss, event.step,
                                                                event.state_dict(model), 0)
            else:
                best.stale += 1
            if best.stale >= self.patience:
                stop.append(model)
        return stop


def evaluate(model: nn.Module, splits: dict[str, Split]) -> dict[str, float]:
    """Loss and accuracy of `model` on each split, through the training loop's own evaluation
    (so the restored model's validation loss reproduces the recorded best one bit for bit when
    it trained alone; in an ensemble of seeds, the vmap-ed evaluation may differ by rounding)."""
    stack = ModelStack([model])
    out: dict[str, float] = {}
    for name, split in splits.items():
        loss, acc = stack.evaluate(split, "cross_entropy")
        out[f"{name}_loss"], out[f"{name}_acc"] = loss.item(), acc.item()
    return out


def restore(outcome: Outcome, best: Best, splits: dict[str, Split]) -> dict[str, float]:
    """Put one model's best weights back, save them on its child (`snapshots/best.safetensors`;
    its last weights are `weights/<child>.safetensors`), and measure them: what it records."""
    if best.state is None:
        raise RuntimeError(f"{outcome.variant.name}: no finite validation loss was ever measured: "
                           f"nothing to restore (status {outcome.result.status}); lower the "
                           "learning rate")
    outcome.model.load_state_dict(best.state)
    outcome.run.snapshots({"best": best.state})
    outcome.run.tags({"stopped_early": outcome.result.status == "stopped"})
    restored = evaluate(outcome.model, splits)
    return {"best_step": best.step, "best_val_loss": best.loss,
            "stop_step": outcome.result.stop_step or 0,
            **{f"restored_{k}": v for k, v in restored.items()}}


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
    outcomes = run_variants(tracker, ctx, [variant], fit, TrainSpec.of(config), seeds=config.seeds,
                            evals={"val": val, "test": data.test}, on_eval=stopper)
    for index, outcome in enumerate(outcomes):
        outcome.record(restore(outcome, stopper.best[index],
                               {"fit": fit, "val": val, "test": data.test}))
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, outcomes))
    figures(config, outcomes, tracker)


def findings(config: Config, outcomes: list[Outcome]) -> list[Finding]:
    """Seed 003's claims per seed: the restored weights' validation loss minus the lowest
    `val_loss` of the seed's history (the largest over seeds, expected ≤ 0 up to float
    rounding: below `TOLERANCE`), and the restored weights' test loss minus the last weights'
    `final_test_loss` (mean over seeds, expected below 0: the null is 0, "no worse" being shown
    only when the whole interval is below it)."""
    lowest = [min(o.series("val_loss")[1]) for o in outcomes]
    return [
        maximum("restored_is_lowest_val", "the restored weights have the lowest validation loss "
                "seen (seed 003)", [o.measures["restored_val_loss"] - v for o, v in zip(outcomes, lowest)],
                expect="below", null=TOLERANCE, seed=config.seed,
                what="over seeds of restored_val_loss − min(val_loss over the evaluations)"),
        average("restored_test_no_worse", "the restored weights' test loss is no worse than the "
                "last weights' (seed 003)",
                [o.measures["restored_test_loss"] - o.final["test_loss"] for o in outcomes],
                expect="below", null=0.0, seed=config.seed,
                what="restored_test_loss − final_test_loss (the last weights')"),
    ]


def figures(config: Config, outcomes: list[Outcome], tracker: Tracker) -> None:
    """Train (mini-batches) / validation / test loss and accuracy, the mean over seeds with a
    ±1 std band up to the step every seed reached; each seed's restored point marked (`s<seed>`
    at its best validation loss) and the step it stopped at (a dashed line)."""
    lines = {f"seed {o.variant.seed} {'stopped' if o.result.status == 'stopped' else 'budget spent'}"
             f" at {o.result.stop_step or 0} (best {o.measures['best_step']:g})":
             float(o.result.stop_step or 0) for o in outcomes}
    for metric, ylabel in (("loss", "cross-entropy"), ("acc", "accuracy")):
        curves = {name: seed_series(outcomes, f"{key}_{metric}")
                  for name, key in (("train (mini-batches)", "running"), ("validation", "val"),
                                    ("test", "test"))}
        markers = {f"s{o.variant.seed}": (o.measures["best_step"], o.measures["best_val_loss"])
                   for o in outcomes} if metric == "loss" else {}
        tracker.figure(plots.lines(curves, xlabel="step", ylabel=ylabel, logy=metric == "loss",
                                   markers=markers, vlines=lines,
                                   title=f"early stopping: patience {config.patience}, mean ± std "
                                         f"over {config.seeds} seeds\n× s<seed>: that seed's "
                                         "restored best"),
                       metric)
