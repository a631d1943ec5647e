"""HW1-3 Flatness vs generalization: sharpness vs batch size.

The models of the batch-size study measured three ways at their final weights, on the training
loss: its 1-D profile along the normalized gradient direction (seed 002's bonus), Keskar et
al.'s ε-sharpness (the worst loss in a small box around the weights), and the curvature of its
sharpest direction (the Hessian's top eigenvalue). Large-batch models are expected to sit in
sharper minima.
"""

from __future__ import annotations

import torch

from experiments.core import measures, plots
from experiments.core.batch_study import by_batch_size, rows, train_batch_sizes
from experiments.core.context import RunContext
from experiments.sharpness.config import Config
from experiments.tracking import Tracker

MEASURES = {"profile_sharpness": "profile sharpness: L(t=r) − L(0)",
            "profile_sharpness_back": "seed 002's sharpness: L(t=−r) − L(0)",
            "epsilon_sharpness": "ε-sharpness (%)",
            "top_eigenvalue": "Hessian top eigenvalue"}


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data, outcomes = train_batch_sizes(config, tracker, ctx)
    split = data.train.head(config.measure_subset)
    k = config.profile_steps
    ts = config.profile_radius * torch.arange(-k, k + 1, device=ctx.device) / k  # t=0 exact
    profile_of = measures.input_profile if config.profile_space == "inputs" else measures.weight_profile
    profiles, results = {}, []
    for index, outcome in enumerate(outcomes):
        ctx.begin(f"sharpness of {outcome.variant.name}", index, len(outcomes))
        model = outcome.model
        params = dict(model.named_parameters())  # the measures detach them
        loss = measures.split_loss(model, split)
        profile = profile_of(model, split, ts)
        values = {"profile_sharpness": profile[-1] - profile[k],  # uphill: t = +r
                  "profile_sharpness_back": profile[0] - profile[k],  # seed 002's t = −r
                  "epsilon_sharpness": measures.epsilon_sharpness(loss, params, config.epsilon,
                                                                  config.ascent_steps),
                  "top_eigenvalue": measures.top_hessian_eigenvalue(loss, params,
                                                                    config.power_iters,
                                                                    config.seed)}
        host = {key: v.item() for key, v in values.items()}
        outcome.run.summary(host)
        outcome.run.log_series("profile_loss", profile.tolist(), [round(100 * t) for t in ts.tolist()])
        profiles[outcome.variant.name] = (ts.tolist(), profile.tolist())
        results.append(host)

    tracker.table("sharpness", rows(outcomes, results))
    space = "input" if config.profile_space == "inputs" else "weight"
    tracker.figure(plots.lines(profiles, xlabel=f"t: distance along the normalized {space} gradient",
                               ylabel="train cross-entropy", logy=True,
                               title=f"{config.dataset}: loss profiles per batch size"), "profiles")
    grid = {}
    for key, label in MEASURES.items():
        sizes, means = by_batch_size(outcomes, [r[key] for r in results])
        tracker.log_series(f"{key}_by_batch_size", means, sizes)  # step = batch size
        grid[label] = {f"mean of {config.seeds} seed(s)": (sizes, means)}
    tracker.figure(plots.panels(
        grid, xlabel="batch size", ylabel="", columns=2, logx=True, marker="o",
        title=f"{config.dataset}: sharpness vs batch size (ε={config.epsilon:g}, "
              f"r={config.profile_radius:g})"), "sharpness_vs_batch_size")
