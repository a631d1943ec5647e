"""HW1-2 Optimization, part 3: what happens when the gradient is almost zero.

Many small networks fit a 1-D function with their loss (phase 1) until their gradient norm is
below `handover`; then each is driven further, below `grad_threshold` (phase 2: minimizing
‖∇L‖², Newton, or Levenberg–Marquardt), every method from the same phase-1 weights. There the
exact Hessian of the training loss says what kind of point it is. Its eigenvalues are
classified against an explicit tolerance, 100·n·ε·max|λ| (`curvature.classify`): below it an
eigenvalue cannot be told from 0 in float64, so it counts as flat. The significant ratio
(positive among the non-flat eigenvalues) is the main number — 1 at a minimum, lower at a
saddle; the course's minimal ratio (fraction of eigenvalues > 0) sits beside it, and its
conclusion can flip with the ~25 rounding-size eigenvalues of either sign it counts. Dauphin
et al. (2014) expect lower loss with a higher ratio near critical points: the finding is
Spearman ρ(loss, significant ratio) < 0. Every network of a phase trains at once, as one vmap
ensemble, in float64; each method's start and end points are saved, stacked, so every number
can be recomputed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import torch
from safetensors.torch import save
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.curvature import EIGEN_SAFETY, classify
from experiments.core.data import Split, target_function
from experiments.core.findings import Finding, bootstrap, correlation, log_findings, spearman, withheld
from experiments.core.measures import (
    FlatLayout,
    eigenvalues,
    flat_loss,
    gradient_norm,
    hessian,
    per_model,
    sampling_minimal_ratio,
)
from experiments.core.models import architecture, count_params, mlp
from experiments.core.train import (
    EvalEvent,
    Hook,
    Status,
    TrainSpec,
    grad_norms,
    intra_op_threads,
    seeded,
    train,
)
from experiments.minimal_ratio.config import HANDOVER_EVERY, Config
from experiments.tracking import Run, Tracker

Flat = Callable[[Tensor], Tensor]  # a function of the flat parameters θ [P]
# (θ of the models still moving [M, P], their indices [M]) → (next θ, ‖∇L(θ)‖ [M]); the
# indices let an update keep per-model state (Adam moments, LM damping) across steps
Update = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
LABELS = {"grad_norm": "min ‖∇L‖²", "newton": "Newton", "levenberg_marquardt": "Levenberg–Marquardt"}


def repetition_seeds(seed: int, count: int) -> list[int]:
    """One seed per repetition, drawn from the config's seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**31 - 1, (count,), generator=generator).tolist()


def minimize_grad_norm(loss: Flat, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                       eps: float = 1e-8) -> Update:
    """Adam steps (per model, as `torch.optim.Adam` computes them) on ‖∇L(θ)‖², whose gradient
    2·H·∇L comes by double backprop; every model still moving at once."""
    def objective(theta: Tensor) -> tuple[Tensor, Tensor]:
        square = torch.func.grad(loss)(theta).pow(2).sum()
        return square, square.sqrt()

    direction = torch.vmap(torch.func.grad(objective, has_aux=True))
    state: dict[str, Tensor] = {}

    def update(theta: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        if not state:
            n = int(rows.max()) + 1
            state.update(m=theta.new_zeros(n, theta.shape[1]), v=theta.new_zeros(n, theta.shape[1]),
                         t=theta.new_zeros(n, 1))
        g, norm = direction(theta)
        t = state["t"][rows] + 1
        m = betas[0] * state["m"][rows] + (1 - betas[0]) * g
        v = betas[1] * state["v"][rows] + (1 - betas[1]) * g * g
        state["t"][rows], state["m"][rows], state["v"][rows] = t, m, v
        step = lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)
        return theta - step, norm

    return update


def newton(loss: Flat) -> Update:
    """Full Newton steps θ ← θ − H⁺∇L towards the nearest critical point of any kind (minimum,
    saddle, maximum), with the pseudo-inverse H⁺ where H is singular; no damping, so a step
    may overshoot — the instability the seed 002 report describes."""
    grads = torch.vmap(torch.func.grad(loss))

    def update(theta: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        g = grads(theta)
        step = torch.linalg.pinv(hessian(loss, theta), hermitian=True) @ g.unsqueeze(-1)
        return theta - step.squeeze(-1), g.norm(dim=-1)

    return update


def residual_functions(module: nn.Module, data: Split) -> tuple[Flat, Flat]:
    """r(θ) = f(x_i; θ) − y_i over every training point ([n], the MSE loss is mean(r²)) and its
    Jacobian ∂r/∂θ ([n, P]), both at the flat parameters θ [P]. The Jacobian is taken one
    point at a time (per-point gradients, vmapped over the points): output i depends on θ only
    through point i, so this costs about one batched backward pass, where `jacrev` of r would
    take n full-batch backward passes and `jacfwd` P forward ones."""
    layout = FlatLayout(module)

    def one(theta: Tensor, x: Tensor) -> Tensor:
        return functional_call(module, layout.unflatten(theta), (x.unsqueeze(0),)).reshape(())

    def values(theta: Tensor) -> Tensor:
        return torch.vmap(one, in_dims=(None, 0))(theta, data.x) - data.y.reshape(-1)

    def jacobian(theta: Tensor) -> Tensor:
        return torch.vmap(torch.func.grad(one), in_dims=(None, 0))(theta, data.x)

    return values, jacobian


def levenberg_marquardt(residuals: Flat, jacobian: Flat, damping: float) -> Update:
    """Levenberg–Marquardt on L = mean(r²), r = `residuals`(θ) with Jacobian J =
    `jacobian`(θ): δ = −(JᵀJ + λI)⁻¹Jᵀr; a step is kept only where it lowers L (then
    λ ← λ/10, else λ ← 10·λ), so each model descends towards a minimum. λ is per model."""
    values = torch.vmap(residuals)
    jacobians = torch.vmap(jacobian)
    state: dict[str, Tensor] = {}

    def update(theta: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        r, j = values(theta), jacobians(theta)
        jt_r = (j.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
        if not state:
            state["lam"] = theta.new_full((int(rows.max()) + 1,), damping)
        lam = state["lam"][rows]
        eye = torch.eye(theta.shape[1], dtype=theta.dtype, device=theta.device)
        system = j.transpose(1, 2) @ j + lam.view(-1, 1, 1) * eye
        candidate = theta - torch.linalg.solve_ex(system, jt_r).result  # no host sync on CUDA
        new_loss = values(candidate).pow(2).mean(-1)
        better = torch.isfinite(new_loss) & (new_loss < r.pow(2).mean(-1))
        state["lam"][rows] = torch.where(better, lam / 10, lam * 10).clamp(1e-12, 1e12)
        return torch.where(better.unsqueeze(-1), candidate, theta), 2 * jt_r.norm(dim=-1) / r.shape[1]

    return update


def descend(update: Update, theta: Tensor, max_steps: int, threshold: float,
            ctx: RunContext, check_every: int = 25) -> tuple[Tensor, Tensor]:
    """Apply `update` until every model's gradient norm is below `threshold` (or `max_steps`);
    a model that got there stays where it is, and a non-finite step is not taken. Returns the
    points reached and the steps each model took. The host learns the state only every
    `check_every` steps; then the models that got there leave the batch, so the last few
    stragglers cost little."""
    theta = theta.clone()
    reached = torch.zeros(theta.shape[0], dtype=torch.bool, device=theta.device)
    steps = torch.zeros(theta.shape[0], dtype=torch.long, device=theta.device)
    rows = torch.arange(theta.shape[0], device=theta.device)
    for i in range(1, max_steps + 1):
        current = theta[rows]
        following, norm = update(current, rows)
        stop = reached[rows] | (norm < threshold)
        reached[rows] = stop
        move = ~stop & torch.isfinite(following).all(-1)
        theta[rows] = torch.where(move.unsqueeze(-1), following, current)
        steps[rows] += (~stop).long()
        if i % check_every == 0 or i == max_steps:
            ctx.advance(i, max_steps)
            rows = rows[~reached[rows]]
            if len(rows) == 0:
                break
    return theta, steps


def phase_two(method: str, config: Config, loss: Flat,
              residuals: tuple[Flat, Flat]) -> tuple[Update, int]:
    """The update of phase-2 `method` and its step budget."""
    if method == "grad_norm":
        return minimize_grad_norm(loss, config.grad_norm_lr), config.grad_norm_steps
    if method == "newton":
        return newton(loss), config.second_order_steps
    return levenberg_marquardt(*residuals, config.damping), config.second_order_steps


class HandOver(Hook):
    """Phase 1's stopping rule: a network leaves phase 1 (status `stopped`) at the first check,
    every `HANDOVER_EVERY` steps, where the 2-norm over all its parameters of the gradient of
    its last step — the full-batch training loss, at the weights before that step — is below
    `level`."""

    def __init__(self, level: float) -> None:
        self.level = level

    def on_eval(self, event: EvalEvent) -> dict[int, Status]:
        norms = grad_norms(event.stack.params).tolist()  # the gradient the last step took
        return {model: "stopped" for model, norm in zip(event.active, norms) if norm < self.level}


def phase_one(config: Config, data: Split, seeds: list[int],
              ctx: RunContext) -> tuple[nn.Module, Tensor, Tensor]:
    """Train one float64 MLP per seed on the full-batch loss until `HandOver(config.handover)`
    stops it or `epochs` run out: (one of the models, as the architecture; every model's
    flat parameters [R, P]; the steps each took [R])."""
    models = [m.double() for m in seeded(lambda: mlp(1, config.hidden, 1, config.activation),
                                         seeds, ctx.device)]
    results = train(models, data, TrainSpec.of(config, loss="mse", eval_every=HANDOVER_EVERY),
                    seeds=seeds, ctx=ctx, hooks=[HandOver(config.handover)])
    theta = FlatLayout(models[0]).flatten(stack_module_state(models)[0]).detach()
    steps = torch.tensor([float(r.stop_step or 0) for r in results], dtype=torch.float64)
    return models[0], theta, steps


def examine(loss: Flat, start: Tensor, theta: Tensor, steps: Tensor,
            config: Config) -> dict[str, Tensor]:
    """Everything the experiment says about each repetition's phase-2 path from `start` [R, P]
    to the point reached `theta` [R, P] in `steps` [R] (see the glossary for each name);
    `eigenvalues` [R, P] are the exact Hessian's, ascending."""
    eigs = eigenvalues(hessian(loss, theta))
    kinds = classify(eigs)
    grad = gradient_norm(loss, theta)
    return {
        "point_loss": per_model(loss, theta),
        "grad_norm": grad,
        "start_grad_norm": gradient_norm(loss, start),
        "reached": (grad < config.grad_threshold).double(),
        "phase2_steps": steps.double(),
        "phase2_distance": (theta - start).norm(dim=1),
        "positive_eigenvalues": kinds.positive.double(),
        "negative_eigenvalues": kinds.negative.double(),
        "flat_eigenvalues": kinds.flat.double(),
        "eigen_tolerance": kinds.tolerance,
        "significant_ratio": kinds.significant_ratio,
        "minimal_ratio": kinds.strict_ratio,
        "sampling_minimal_ratio": sampling_minimal_ratio(loss, theta, config.samples,
                                                         config.sample_radius, config.seed),
        "min_eigenvalue": eigs[:, 0],
        "max_eigenvalue": eigs[:, -1],
        "eigenvalues": eigs,
    }


def _finite(x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
    """The pairs (x_i, y_i) where both are finite (a spectrum that is all flat has no
    significant ratio)."""
    keep = torch.isfinite(x) & torch.isfinite(y)
    return x[keep].tolist(), y[keep].tolist()


def rank_correlations(found: Mapping[str, Tensor], seed: int) -> dict[str, float]:
    """Spearman ρ(`point_loss`, ratio) over every repetition, for the significant and for the
    course's strict ratio, each with its 95 % percentile bootstrap interval (`_low`, `_high`)."""
    out = {}
    for ratio in ("significant_ratio", "minimal_ratio"):
        x, y = _finite(found["point_loss"], found[ratio])
        low, high = bootstrap(spearman, (x, y), seed)
        out.update({f"spearman_loss_{ratio}": spearman(x, y), f"spearman_loss_{ratio}_low": low,
                    f"spearman_loss_{ratio}_high": high})
    return out


def summary(found: Mapping[str, Tensor], seed: int) -> dict[str, float]:
    """The method's numbers over its repetitions (see the glossary)."""
    moved = found["phase2_steps"] > 0
    return {"n_reached": float(found["reached"].sum()),
            "fraction_reached": float(found["reached"].mean()),
            "median_point_loss": float(found["point_loss"].median()),
            "mean_significant_ratio": float(found["significant_ratio"].nanmean()),
            "mean_minimal_ratio": float(found["minimal_ratio"].mean()),
            "mean_sampling_minimal_ratio": float(found["sampling_minimal_ratio"].mean()),
            "median_phase2_steps": float(found["phase2_steps"].median()),
            "fraction_moved": float(moved.double().mean()),
            "median_phase2_distance": float(found["phase2_distance"].median()),
            "median_start_grad_norm": float(found["start_grad_norm"].median()),
            "median_grad_norm": float(found["grad_norm"].median()),
            **rank_correlations(found, seed)}


def finding(method: str, found: Mapping[str, Tensor], seed: int) -> Finding:
    """Dauphin et al.'s expectation for the points `method` reached (‖∇L‖ below the
    threshold): Spearman ρ(point_loss, significant_ratio) < 0, bootstrap over those
    repetitions; withheld (inconclusive, the reason in its details) when fewer than 3 reached it."""
    reached = found["reached"].bool()
    x, y = _finite(found["point_loss"][reached], found["significant_ratio"][reached])
    result = correlation(
        f"loss_ratio_{method}", "near points of near-zero gradient, a lower loss goes with a higher "
        "minimal ratio (more positive curvature) (Dauphin et al. 2014)", x, y, expect="below",
        seed=seed, what=f"point_loss, significant_ratio over the points {method} brought below the "
                        "gradient threshold")
    return withheld(result, f"only {len(x)} repetitions reached the threshold") if len(x) < 3 else result


def save_points(run: Run, model: nn.Module, data: Split, start: Tensor, theta: Tensor,
                seeds: list[int]) -> None:
    """`weights/points.safetensors`: `start` and `final` [R, P] (float64, the flat parameters at
    the start and end of phase 2, in the layout of its metadata and of `weights/points.json`),
    and the training data `x`, `y` [n, 1]; `weights/points.json`: the architecture (rebuilds the
    net with plain torch, see `models.architecture`), the layout [(name, shape)], the seeds."""
    layout = FlatLayout(model)
    described = {"architecture": architecture(model), "dtype": "float64", "seeds": seeds,
                 "layout": [[name, list(shape)] for name, shape in zip(layout.names, layout.shapes)],
                 "loss": "mean over the points of (f(x) − y)²"}
    tensors = {"start": start, "final": theta, "x": data.x, "y": data.y}
    files = {"points.safetensors": save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                                        metadata={"layout": json.dumps(described["layout"])}),
             "points.json": json.dumps(described, indent=1)}
    run.artifacts(files, "weights")


def tolerance_rule(n: int) -> str:
    """The classification tolerance in words, with its n and float64's ε."""
    return (f"{EIGEN_SAFETY:g}·n·ε·max|λ| of each spectrum, n = {n}, "
            f"ε = {torch.finfo(torch.float64).eps:.4g} (float64)")


def log_method(tracker: Tracker, method: str, found: dict[str, Tensor], seeds: list[int],
               seed: int) -> Run:
    """One child run per method: per-repetition metrics (step = repetition), a CSV table of
    the repetitions, the eigenvalues of every Hessian, and its summary (also on the parent as
    `<method>.<name>`)."""
    run = tracker.child(method, {"method": method, "n_params": found["eigenvalues"].shape[1],
                                 "repetitions": len(seeds)})
    columns = {k: v.tolist() for k, v in found.items() if k != "eigenvalues"}
    reps = range(len(seeds))
    for key, values in columns.items():
        run.log_series(key, values, reps)
    run.table("repetitions", [{"repetition": i, "seed": seeds[i], **{k: v[i] for k, v in columns.items()}}
                              for i in reps])
    run.table("eigenvalues", [{"repetition": i, **{f"eig_{j}": e for j, e in enumerate(eigs)}}
                              for i, eigs in enumerate(found["eigenvalues"].tolist())])
    numbers = summary(found, seed)
    run.summary(numbers)
    tracker.summary({f"{method}.{k}": v for k, v in numbers.items()})
    return run


def scatter_series(points: dict[str, dict[str, Tensor]], key: str) -> plots.Series:
    """(`key`, point_loss) of every repetition, per method, the points that reached the
    gradient threshold apart from those that did not."""
    series = {}
    for method, found in points.items():
        reached = found["reached"].bool()
        for mask, note in ((reached, "reached"), (~reached, "not reached")):
            if bool(mask.any()):
                series[f"{LABELS[method]} ({note})"] = (found[key][mask].tolist(),
                                                         found["point_loss"][mask].tolist())
    return series


def figure(tracker: Tracker, config: Config, points: dict[str, dict[str, Tensor]],
           findings: list[Finding]) -> None:
    """`minimal_ratio_vs_loss`: the significant ratio, the course's minimal ratio and the
    sampling ratio of every repetition against its point loss (log), per method; the title
    carries each method's finding."""
    panels = {"significant ratio: λ > tol among |λ| > tol, tol = 100·n·ε·max|λ|": "significant_ratio",
              "minimal ratio (course): fraction of λ > 0": "minimal_ratio",
              f"sampling minimal ratio (radius {config.sample_radius:g})": "sampling_minimal_ratio"}
    verdicts = "; ".join(f"{LABELS[f.key.removeprefix('loss_ratio_')]}: " + (
        f.details["reason"] if "reason" in f.details else
        f"ρ = {f.value:.2f} [{f.interval[0]:.2f}, {f.interval[1]:.2f}] {f.verdict}") for f in findings)
    tracker.figure(plots.scatter_panels(
        {label: scatter_series(points, key) for label, key in panels.items()},
        ylabel="training loss (MSE) at the point", logy=True,
        title=f"{config.target}: {config.repetitions} networks, phase 2 until ‖∇L‖ < "
              f"{config.grad_threshold:g}\nρ(loss, significant ratio) over the points reached "
              f"(expected < 0): {verdicts}"), "minimal_ratio_vs_loss")


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    with intra_op_threads(1):  # every op here is tiny: one CPU thread is much faster
        study(config, tracker, ctx)


def study(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    raw = target_function(config.target, config.n_points, (0.0, 1.0), ctx.device)
    data = Split(raw.x.double(), raw.y.double())
    seeds = repetition_seeds(config.seed, config.repetitions)
    stages = 1 + len(config.methods)

    ctx.begin("phase 1: loss", 0, stages)
    clock = time.perf_counter()
    model, start, phase1_steps = phase_one(config, data, seeds, ctx)
    seconds = {"phase1_seconds": time.perf_counter() - clock}
    loss = flat_loss(model, data, "mse")
    residuals = residual_functions(model, data)
    reps = range(len(seeds))
    tracker.log_series("phase1_loss", per_model(loss, start).tolist(), reps)
    tracker.log_series("phase1_steps", phase1_steps.tolist(), reps)
    tracker.tags({"eigen_tolerance_rule": tolerance_rule(count_params(model))})
    points: dict[str, dict[str, Tensor]] = {}
    for index, method in enumerate(config.methods):
        ctx.begin(f"phase 2: {method}", index + 1, stages)
        clock = time.perf_counter()
        update, max_steps = phase_two(method, config, loss, residuals)
        theta, steps = descend(update, start.clone(), max_steps, config.grad_threshold, ctx)
        seconds[f"{method}.phase2_seconds"] = time.perf_counter() - clock
        points[method] = examine(loss, start, theta, steps, config)
        seconds[f"{method}.measure_seconds"] = time.perf_counter() - clock - seconds[
            f"{method}.phase2_seconds"]
        child = log_method(tracker, method, points[method], seeds, config.seed)
        save_points(child, model, data, start, theta, seeds)
    tracker.summary(seconds)  # where the time goes: the defaults are sized for 2 CPU cores
    findings = [finding(method, found, config.seed) for method, found in points.items()]
    log_findings(tracker, findings)
    figure(tracker, config, points, findings)
