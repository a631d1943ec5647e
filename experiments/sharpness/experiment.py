"""HW1-3 Flatness vs generalization: sharpness vs batch size.

The models of the batch-size study measured at their final weights, on the training loss (the
mean cross-entropy over the first `measure_subset` training examples): its 1-D profile along the
normalized gradient direction (seed 002's bonus), Keskar et al.'s ε-sharpness (the worst loss in
a small box around the weights), and the Hessian's spectrum (`core.curvature`, float64): λ_max,
the curvature of the sharpest direction, and λ_min — algebraic, by Lanczos, not the eigenvalue of
largest magnitude that power iteration finds: these nets have negative eigenvalues almost as
large as the top one — with the trace and the eigenvalue density. Large-batch models are
expected to sit in sharper minima (Keskar et al. 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from experiments.core import measures, plots
from experiments.core.batch_study import budget_spent, by_batch_size, rows, train_batch_sizes
from experiments.core.context import RunContext
from experiments.core.curvature import (
    Density,
    Params,
    extreme_eigenvalues,
    hutchinson_trace,
    hvp_operator,
    spectral_density,
)
from experiments.core.data import Dataset, Split
from experiments.core.findings import Finding, correlation, log_findings
from experiments.core.variants import Outcome, summarize
from experiments.sharpness.config import Config
from experiments.tracking import Tracker

MEASURES = {"profile_sharpness": "profile sharpness: L(t=r) − L(0)",
            "profile_sharpness_back": "seed 002's sharpness: L(t=−r) − L(0)",
            "epsilon_sharpness": "ε-sharpness (%)",
            "lambda_max": "Hessian λ_max",
            "lambda_min": "Hessian λ_min",
            "hessian_trace": "Hessian trace (Hutchinson)"}
DENSITY_FLOOR = 1e-9  # each density panel's log axis starts this far below its highest peak


def float64_loss(outcome: Outcome, split: Split) -> Callable[[Params], Tensor]:
    """θ ↦ the mean cross-entropy over `split` of the model with parameters θ, for float64 θ
    (the inputs cast to float64 too)."""
    return measures.split_loss(outcome.model, Split(split.x.double(), split.y))


def spectrum(config: Config, outcome: Outcome, split: Split) -> tuple[dict[str, float], Density, bool]:
    """The Hessian of the training loss on `split` at the model's final weights, in float64:
    λ_max and λ_min (Lanczos to `eigen_tol`) with their residuals ‖Hv − λv‖₂, Hutchinson's
    trace and its standard error, the SLQ density, the Hessian-vector products each took;
    and whether Lanczos converged at both ends. Random starts and probes from the model's seed."""
    seed = outcome.variant.seed
    op = hvp_operator(float64_loss(outcome, split), dict(outcome.model.named_parameters()))
    ends = extreme_eigenvalues(op, tol=config.eigen_tol, max_iter=config.eigen_restarts, seed=seed)
    trace = hutchinson_trace(op, config.trace_probes, seed)
    density = spectral_density(op, config.density_probes, config.density_steps, seed)
    values = {"lambda_max": ends.lambda_max, "lambda_min": ends.lambda_min,
              "lambda_max_residual": ends.residual_max, "lambda_min_residual": ends.residual_min,
              "lanczos_matvecs": ends.matvecs, "hessian_trace": trace.mean,
              "hessian_trace_stderr": trace.stderr, "hessian_matvecs": op.matvecs}
    return values, density, ends.converged


def measure(config: Config, data: Dataset, outcome: Outcome, ts: torch.Tensor) -> tuple[
        dict[str, float], list[float], Density, bool]:
    """Every measure of one model at its final weights (see the config) and the budget it got
    (`budget_spent`), its loss profile at `ts`, its Hessian density, and whether Lanczos
    converged (also its child's tag `lanczos_converged`)."""
    split = data.train.head(config.measure_subset)
    model = outcome.model
    profile_of = measures.input_profile if config.profile_space == "inputs" else measures.weight_profile
    profile = profile_of(model, split, ts)
    k = config.profile_steps
    epsilon = measures.epsilon_sharpness(measures.split_loss(model, split),
                                         dict(model.named_parameters()), config.epsilon,
                                         config.ascent_steps)
    curvature, density, converged = spectrum(config, outcome, split)
    outcome.run.tags({"lanczos_converged": str(converged).lower()})
    values = {"profile_sharpness": (profile[-1] - profile[k]).item(),  # uphill: t = +r
              "profile_sharpness_back": (profile[0] - profile[k]).item(),  # seed 002's t = −r
              "epsilon_sharpness": epsilon.item(), **curvature,
              **budget_spent(outcome, len(data.train), config.budget)}
    return values, profile.tolist(), density, converged


def findings(config: Config, outcomes: Sequence[Outcome]) -> list[Finding]:
    """Keskar et al.'s claim over every model (batch size × seed) with a finite value:
    ρ(batch size, ε-sharpness) > 0 and ρ(batch size, λ_max) > 0."""
    found = []
    for key, what in (("epsilon_sharpness", "ε-sharpness"), ("lambda_max", "Hessian λ_max")):
        pairs = [(float(o.variant.params["batch_size"]), o.measures[key]) for o in outcomes
                 if math.isfinite(o.measures[key])]
        found.append(correlation(
            f"batch_size_{key}", f"{what} rises with the batch size (Keskar et al. 2017)",
            [p[0] for p in pairs], [p[1] for p in pairs], expect="above", seed=config.seed,
            what=f"batch size, {key}"))
    return found


def _span(density: Density) -> tuple[float, float]:
    """The lowest and highest SLQ node over a density's probes (Ritz values: inside the spectrum,
    close to λ_min and λ_max)."""
    return min(float(n.min()) for n in density.nodes), max(float(n.max()) for n in density.nodes)


def density_panels(config: Config, outcomes: Sequence[Outcome],
                   densities: Sequence[Density]) -> dict[str, plots.Series]:
    """{batch size: {label: (grid, density)}}: each model's SLQ density smoothed with Gaussians
    of width `density_width` × the span of its nodes (≈ λ_max − λ_min), averaged over the seeds
    of its batch size on a grid over their nodes ± 5 widths; clipped below at `DENSITY_FLOOR` ×
    its highest value, for a log axis on which the outliers (weight ≈ 1/n each) still show."""
    groups: dict[int, list[tuple[Density, tuple[float, float]]]] = {}
    for outcome, density in zip(outcomes, densities):
        groups.setdefault(outcome.variant.params["batch_size"], []).append((density, _span(density)))
    panels = {}
    for size in sorted(groups):
        low = min(span[0] for _, span in groups[size])
        high = max(span[1] for _, span in groups[size])
        margin = 5 * config.density_width * (high - low)
        grid = np.linspace(low - margin, high + margin, 2001)
        mean = np.mean([d.on_grid(grid, config.density_width * (span[1] - span[0]))
                        for d, span in groups[size]], axis=0)
        clipped = np.maximum(mean, DENSITY_FLOOR * mean.max())
        label = f"mean of {len(groups[size])} seed(s)"
        panels[f"batch size {size}"] = {label: (grid.tolist(), clipped.tolist())}
    return panels


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data, outcomes = train_batch_sizes(config, tracker, ctx)
    k = config.profile_steps
    ts = config.profile_radius * torch.arange(-k, k + 1, device=ctx.device) / k  # t=0 exact
    profiles, densities, stuck = {}, [], []
    for index, outcome in enumerate(outcomes):
        ctx.begin(f"sharpness of {outcome.variant.name}", index, len(outcomes))
        values, profile, density, converged = measure(config, data, outcome, ts)
        outcome.record(values)
        outcome.run.log_series("profile_loss", profile, [round(100 * t) for t in ts.tolist()])
        profiles[outcome.variant.name] = (ts.tolist(), profile)
        densities.append(density)
        stuck += [] if converged else [outcome.variant.name]
    tracker.tags({"lanczos_not_converged": ", ".join(stuck) or "none"})
    tracker.table("sharpness", rows(outcomes, [o.measures for o in outcomes]))
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, outcomes))
    figures(config, outcomes, tracker, profiles, densities)


def figures(config: Config, outcomes: Sequence[Outcome], tracker: Tracker,
            profiles: plots.Series, densities: Sequence[Density]) -> None:
    """The loss profiles, the Hessian densities (one panel per batch size, each its own λ range),
    and every measure's mean over seeds vs batch size (also the parent series
    `<measure>_by_batch_size`)."""
    space = "input" if config.profile_space == "inputs" else "weight"
    tracker.figure(plots.lines(profiles, xlabel=f"t: distance along the normalized {space} gradient",
                               ylabel="train cross-entropy", logy=True,
                               title=f"{config.dataset}: loss profiles per batch size"), "profiles")
    tracker.figure(plots.panels(
        density_panels(config, outcomes, densities), xlabel="Hessian eigenvalue λ", ylabel="density",
        logy=True, columns=3, sharey=True,
        title=f"{config.dataset}: Hessian eigenvalue density per batch size (train cross-entropy, "
              f"{config.measure_subset} examples)\nSLQ {config.density_probes}×{config.density_steps} "
              f"Lanczos steps, Gaussian width {config.density_width:g} × spectrum span"),
        "hessian_density")
    grid = {}
    for key, label in MEASURES.items():
        sizes, means = by_batch_size(outcomes, [o.measures[key] for o in outcomes])
        tracker.log_series(f"{key}_by_batch_size", means, sizes)  # step = batch size
        grid[label] = {f"mean of {config.seeds} seed(s)": (sizes, means)}
    tracker.figure(plots.panels(
        grid, xlabel="batch size", ylabel="", columns=3, logx=True, marker="o",
        title=f"{config.dataset}: sharpness vs batch size (ε={config.epsilon:g}, "
              f"r={config.profile_radius:g}, λ to {config.eigen_tol:g} relative)"), "sharpness_vs_batch_size")
