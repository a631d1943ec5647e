"""HW1-1 Deep vs shallow, part 1: simulate a function.

Train DNNs with (about) the same number of parameters but different depths on a 1-D target
until they converge, then compare the loss per epoch and the fitted curves with the truth.
"""

from __future__ import annotations

import torch

from experiments import plots
from experiments.configs.function_fit import Config
from experiments.context import RunContext
from experiments.data import target_function
from experiments.models import mlp, widths_for_budget
from experiments.tracking import Tracker
from experiments.train import TrainSpec
from experiments.variants import Variant, run_variants, series


def hidden_widths(config: Config) -> list[list[int]]:
    if config.param_budget is None:
        return [list(widths) for widths in config.models]
    return [widths_for_budget(config.param_budget, depth) for depth in config.depths]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = target_function(config.target, config.n_points, config.domain, ctx.device)
    variants = [
        Variant(name=f"1-{'-'.join(map(str, widths))}-1",
                build=lambda widths=widths: mlp(1, widths, 1, config.activation),
                seed=config.seed, params={"depth": len(widths), "widths": widths})
        for widths in hidden_widths(config)
    ]
    spec = TrainSpec(optimizer=config.optimizer, lr=config.lr, epochs=config.epochs,
                     loss="mse", eval_every=config.eval_every, converge_tol=config.converge_tol,
                     converge_patience=config.converge_patience)
    outcomes = run_variants(tracker, ctx, variants, data, spec)

    tracker.figure(plots.lines(series(outcomes, "train_loss"), xlabel="epoch", ylabel="MSE",
                               title=f"{config.target}: training loss", logy=True), "loss")
    with torch.no_grad():
        predicted = {o.variant.name: o.model(data.x).squeeze(1).tolist() for o in outcomes}
    tracker.figure(plots.predictions(data.x.squeeze(1).tolist(), data.y.squeeze(1).tolist(),
                                     predicted, title=f"{config.target}: ground truth vs models"),
                   "predictions")
