"""HW1-1 Deep vs shallow, part 1: simulate a function.

Train DNNs with (about) the same number of parameters but different depths on a 1-D target
until they converge, then compare the loss per epoch and the fitted curves with the truth.
Narrow deep ReLU nets sometimes die on the way (a whole hidden layer outputs 0 on every input,
the net predicts a constant); each ReLU model logs its dead units per layer and a `collapsed`
tag, so a flat curve reads as that, not as a bug.
"""

from __future__ import annotations

import torch

from experiments.core import measures, plots
from experiments.core.context import RunContext
from experiments.core.data import target_function
from experiments.core.models import mlp, widths_for_budget
from experiments.core.train import Convergence, TrainSpec
from experiments.core.variants import Outcome, Variant, run_variants, series
from experiments.function_fit.config import Config
from experiments.tracking import Tracker


def hidden_widths(config: Config) -> list[list[int]]:
    if config.param_budget is None:
        return [list(widths) for widths in config.models]
    return [widths_for_budget(config.param_budget, depth) for depth in config.depths]


def log_dead_units(outcome: Outcome, x: torch.Tensor) -> bool:
    """Log `dead_units/layer<k>` (see `measures.dead_units`, on the training inputs at the
    final weights) and the tag `collapsed` (some layer entirely dead); return that flag."""
    state = dict(outcome.model.state_dict())
    dead = [measures.dead_units(a).item()
            for a in measures.activations(outcome.model, state, x).values()]
    outcome.run.summary({f"dead_units/layer{k}": d for k, d in enumerate(dead, 1)})
    collapsed = any(d == 1.0 for d in dead)
    outcome.run.tags({"collapsed": str(collapsed).lower()})
    return collapsed


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = target_function(config.target, config.n_points, config.domain, ctx.device)
    variants = [
        Variant(name=f"1-{'-'.join(map(str, widths))}-1",
                build=lambda widths=widths: mlp(1, widths, 1, config.activation),
                seed=config.seed, params={"depth": len(widths), "widths": widths})
        for widths in hidden_widths(config)
    ]
    spec = TrainSpec.of(config, loss="mse", eval_every=config.eval_every)
    outcomes = run_variants(tracker, ctx, variants, data, spec, hooks=lambda group: [
        Convergence(config.converge_tol, config.converge_patience, len(group))])

    tracker.figure(plots.lines(series(outcomes, "running_loss"), xlabel="epoch",
                               ylabel="MSE (mean of the full-batch steps since the last point)",
                               title=f"{config.target}: training loss", logy=True), "loss")
    collapsed = {o.variant.name: log_dead_units(o, data.x) for o in outcomes
                 if config.activation == "relu"}
    with torch.no_grad():
        predicted = {f"{o.variant.name} (dead layer: constant)" if collapsed.get(o.variant.name)
                     else o.variant.name: o.model(data.x).squeeze(1).tolist() for o in outcomes}
    tracker.figure(plots.predictions(data.x.squeeze(1).tolist(), data.y.squeeze(1).tolist(),
                                     predicted, title=f"{config.target}: ground truth vs models"),
                   "predictions")
