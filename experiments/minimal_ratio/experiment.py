"""HW1-2 Optimization, part 3: what happens when the gradient is almost zero.

Many small networks fit a 1-D function with their loss (phase 1); then each is driven to a
point where the gradient norm is below a threshold (phase 2: minimizing ‖∇L‖², Newton, or
Levenberg–Marquardt). There the exact Hessian says what kind of point it is: the minimal ratio
(fraction of positive eigenvalues) is 1 at a minimum and lower at a saddle. Every network of a
phase trains at once, as one vmap ensemble; everything runs in float64, because the point of
the experiment is gradients near 1e-3 and eigenvalues near 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split, target_function
from experiments.core.measures import (
    FlatLayout,
    eigenvalues,
    flat_loss,
    gradient_norm,
    hessian,
    minimal_ratio,
    per_model,
    sampling_minimal_ratio,
)
from experiments.core.models import count_params, mlp
from experiments.core.train import TrainSpec, intra_op_threads, seeded, train
from experiments.minimal_ratio.config import Config
from experiments.tracking import Tracker

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


def examine(loss: Flat, theta: Tensor, config: Config) -> dict[str, Tensor]:
    """Everything the experiment says about the points θ [N, P] reached."""
    eigs = eigenvalues(hessian(loss, theta))
    grad = gradient_norm(loss, theta)
    return {
        "loss": per_model(loss, theta),
        "grad_norm": grad,
        "reached": (grad < config.grad_threshold).double(),
        "minimal_ratio": minimal_ratio(eigs, config.eigen_tol),
        "sampling_minimal_ratio": sampling_minimal_ratio(loss, theta, config.samples,
                                                         config.sample_radius, config.seed),
        "min_eigenvalue": eigs[:, 0],
        "max_eigenvalue": eigs[:, -1],
        "eigenvalues": eigs,
    }


def log_method(tracker: Tracker, method: str, found: dict[str, Tensor], seeds: list[int],
               n_params: int) -> None:
    """One child run per method: per-repetition metrics (step = repetition), a CSV table of
    the repetitions, the eigenvalues of every Hessian, and summaries."""
    run = tracker.child(method, {"method": method, "n_params": n_params,
                                 "repetitions": len(seeds)})
    columns = {k: v.tolist() for k, v in found.items() if k != "eigenvalues"}
    reps = range(len(seeds))
    for key, values in columns.items():
        run.log_series(key, values, reps)
    rows = [{"repetition": i, "seed": seeds[i], **{k: v[i] for k, v in columns.items()}}
            for i in reps]
    eig_rows = [{"repetition": i, **{f"eig_{j}": e for j, e in enumerate(eigs)}}
                for i, eigs in enumerate(found["eigenvalues"].tolist())]
    run.table("repetitions", rows)
    run.table("eigenvalues", eig_rows)
    reached = found["reached"].bool()
    log_loss = found["loss"].clamp_min(1e-30).log10()
    correlation = torch.corrcoef(torch.stack([log_loss, found["minimal_ratio"]]))[0, 1]
    summary = {"n_reached": int(reached.sum()), "fraction_reached": float(reached.double().mean()),
               "median_loss": float(found["loss"].median()),
               "mean_minimal_ratio": float(found["minimal_ratio"].mean()),
               "mean_sampling_minimal_ratio": float(found["sampling_minimal_ratio"].mean()),
               "corr_log_loss_minimal_ratio": float(correlation.nan_to_num())}
    run.summary(summary)
    tracker.summary({f"{method}.{k}": v for k, v in summary.items()})


def scatter_series(points: dict[str, dict[str, Tensor]], key: str) -> plots.Series:
    """(`key`, loss) of every repetition, per method, the points that reached the gradient
    threshold apart from those that did not."""
    series = {}
    for method, found in points.items():
        reached = found["reached"].bool()
        for mask, note in ((reached, "reached"), (~reached, "not reached")):
            if bool(mask.any()):
                series[f"{LABELS[method]} ({note})"] = (found[key][mask].tolist(),
                                                         found["loss"][mask].tolist())
    return series


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    with intra_op_threads(1):  # every op here is tiny: one CPU thread is much faster
        study(config, tracker, ctx)


def study(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    raw = target_function(config.target, config.n_points, (0.0, 1.0), ctx.device)
    data = Split(raw.x.double(), raw.y.double())
    seeds = repetition_seeds(config.seed, config.repetitions)
    models = [m.double() for m in seeded(lambda: mlp(1, config.hidden, 1, config.activation),
                                         seeds, ctx.device)]
    stages = 1 + len(config.methods)

    ctx.begin("phase 1: loss", 0, stages)
    clock = time.perf_counter()
    train(models, data, TrainSpec.of(config, loss="mse", eval_every=max(1, config.epochs // 20)),
          seeds=seeds, ctx=ctx)
    seconds = {"phase1_seconds": time.perf_counter() - clock}
    layout = FlatLayout(models[0])
    start = layout.flatten(stack_module_state(models)[0]).detach()
    loss = flat_loss(models[0], data, "mse")

    residuals = residual_functions(models[0], data)
    tracker.log_series("phase1_loss", per_model(loss, start).tolist(), range(len(seeds)))
    points: dict[str, dict[str, Tensor]] = {}
    for index, method in enumerate(config.methods):
        ctx.begin(f"phase 2: {method}", index + 1, stages)
        clock = time.perf_counter()
        update, max_steps = phase_two(method, config, loss, residuals)
        theta, steps = descend(update, start.clone(), max_steps, config.grad_threshold, ctx)
        seconds[f"{method}.phase2_seconds"] = time.perf_counter() - clock
        points[method] = {**examine(loss, theta, config), "phase2_steps": steps.double()}
        seconds[f"{method}.measure_seconds"] = time.perf_counter() - clock - seconds[
            f"{method}.phase2_seconds"]
        log_method(tracker, method, points[method], seeds, count_params(models[0]))
    tracker.summary(seconds)  # where the time goes: the defaults are sized for 2 CPU cores

    panels = {"minimal ratio (fraction of positive Hessian eigenvalues)": "minimal_ratio",
              f"sampling minimal ratio (radius {config.sample_radius:g})": "sampling_minimal_ratio"}
    tracker.figure(plots.scatter_panels(
        {label: scatter_series(points, key) for label, key in panels.items()},
        ylabel="training loss (MSE)", logy=True,
        title=f"{config.target}: {len(seeds)} networks, threshold ‖∇L‖ < {config.grad_threshold:g}"),
        "minimal_ratio_vs_loss")
