"""Measures of trained networks. Each docstring says exactly what is measured: of which loss,
at which weights, per sample or batch-averaged, and which norm."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from experiments.data import Split
from experiments.train import ModelStack, Params

# --- Flatness and sensitivity (HW1-3) -------------------------------------------------------

def _weights(model: nn.Module) -> tuple[Params, Params]:
    """The model's current parameters and buffers, detached, for `functional_call`."""
    return ({k: v.detach() for k, v in model.named_parameters()},
            {k: v.detach() for k, v in model.named_buffers()})


def per_sample_input_gradients(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 1024) -> Tensor:
    """∂ℓ_i/∂x_i for every sample i, where ℓ_i is the cross-entropy of sample i's own logits
    against its own label, at the model's current weights. Same shape as `x`. Computed with
    `vmap(grad(...))` over chunks of samples — not the input-gradient of a batch-mean loss,
    which would be 1/B times smaller."""
    params, buffers = _weights(model)

    def loss_one(xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (params, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = torch.vmap(torch.func.grad(loss_one))
    return torch.cat([per_sample(x[s:s + chunk], y[s:s + chunk]) for s in range(0, len(x), chunk)])


def sensitivity(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 1024) -> Tensor:
    """Course definition: the Frobenius (2-)norm of ∂ℓ_i/∂x_i (per-sample cross-entropy
    gradient w.r.t. that sample's input, see `per_sample_input_gradients`), averaged over the
    samples given, at the model's current weights. A 0-d tensor."""
    grads = per_sample_input_gradients(model, x, y, chunk)
    return grads.flatten(1).norm(dim=1).mean()


def jacobian_sensitivity(model: nn.Module, x: Tensor, chunk: int = 256) -> Tensor:
    """Novak et al. (2018): the Frobenius norm of the Jacobian ∂softmax(f(x_i))/∂x_i of the
    class probabilities w.r.t. the input, per sample, averaged over the samples given, at the
    model's current weights. A 0-d tensor."""
    params, buffers = _weights(model)

    def probs_one(xi: Tensor) -> Tensor:
        return functional_call(model, (params, buffers), (xi.unsqueeze(0),)).softmax(-1)[0]

    per_sample = torch.vmap(torch.func.jacrev(probs_one))
    norms = [per_sample(x[s:s + chunk]).flatten(1).norm(dim=1) for s in range(0, len(x), chunk)]
    return torch.cat(norms).mean()


def split_loss(model: nn.Module, split: Split) -> Callable[[Params], Tensor]:
    """θ ↦ mean cross-entropy of `model` with parameters θ over the whole `split` — the
    training loss as a function of the weights, for Hessian-vector products and ascent."""
    _, buffers = _weights(model)
    return lambda params: F.cross_entropy(functional_call(model, (params, buffers), (split.x,)),
                                          split.y)


def _dot(a: Params, b: Params) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def normalized(tree: Params) -> Params:
    """`tree` divided by its 2-norm over all tensors together (a unit direction in weight space)."""
    norm = _dot(tree, tree).sqrt()
    return {k: v / norm for k, v in tree.items()}


def hvp(loss: Callable[[Params], Tensor], params: Params, v: Params) -> Params:
    """Hessian-vector product H(θ)·v of `loss` at θ = `params`, forward-over-reverse
    (`jvp` of `grad`): exact, without forming H."""
    return torch.func.jvp(torch.func.grad(loss), (params,), (v,))[1]


def top_hessian_eigenvalue(loss: Callable[[Params], Tensor], params: Params, iters: int = 20,
                           seed: int = 0) -> Tensor:
    """Power iteration on Hessian-vector products of `loss` at `params`: the Rayleigh quotient
    vᵀHv of the last iterate, i.e. the eigenvalue of largest magnitude (the top one at a
    minimum, where H is nearly positive semi-definite). Start vector seeded. A 0-d tensor."""
    params = {k: p.detach() for k, p in params.items()}
    generator = torch.Generator(device=next(iter(params.values())).device).manual_seed(seed)
    v = normalized({k: torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                    for k, p in params.items()})
    value = torch.zeros(())
    for _ in range(iters):
        hv = hvp(loss, params, v)
        value = _dot(v, hv)
        v = normalized(hv)
    return value


def epsilon_sharpness(loss: Callable[[Params], Tensor], params: Params, eps: float = 1e-3,
                      steps: int = 10) -> Tensor:
    """Keskar et al. (2017): 100·(max_δ L(θ+δ) − L(θ)) / (1 + L(θ)) over the box
    |δ_i| ≤ ε(|θ_i| + 1), in percent, with L = `loss`. The max is found by `steps` projected
    sign-gradient ascent steps from δ = 0 (step 2.5·bound/steps, so the box's faces are
    reachable); the largest loss seen is kept, so the value is a lower bound of the true max."""
    params = {k: p.detach() for k, p in params.items()}
    bound = {k: eps * (p.abs() + 1) for k, p in params.items()}
    delta = {k: torch.zeros_like(p) for k, p in params.items()}
    ascent = torch.func.grad_and_value(lambda d: loss({k: params[k] + d[k] for k in params}))
    base = best = None
    for _ in range(steps):
        g, value = ascent(delta)
        base = value if base is None else base
        best = value if best is None else torch.maximum(best, value)
        delta = {k: (delta[k] + 2.5 * bound[k] / steps * g[k].sign()).clamp(-bound[k], bound[k])
                 for k in params}
    with torch.no_grad():
        final = loss({k: params[k] + delta[k] for k in params})
    best = final if best is None else torch.maximum(best, final)
    base = final if base is None else base
    return 100 * (best - base) / (1 + base)


def interpolate(first: Params, second: Params, alphas: Tensor) -> Params:
    """Stacked parameters θ(α) = (1−α)·θ1 + α·θ2 for every α (leading dimension = len(alphas)).
    At α = 0 and α = 1 the rows equal θ1 and θ2 exactly."""
    def line(a: Tensor, b: Tensor) -> Tensor:
        alpha = alphas.to(a.dtype).view(-1, *[1] * a.dim())
        return (1 - alpha) * a + alpha * b

    return {k: line(first[k], second[k]) for k in first}


def evaluate_stacked(model: nn.Module, params: Params, split: Split,
                     chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy on `split` for every row of stacked `params` (models of
    `model`'s architecture), all rows at once through `vmap`: ([N], [N])."""
    stack = ModelStack([model])
    n = next(iter(params.values())).shape[0]
    stack.params = params
    stack.buffers = {k: v.expand(n, *v.shape[1:]) for k, v in stack.buffers.items()}
    return stack.evaluate(split, "cross_entropy", chunk)


def weight_profile(model: nn.Module, split: Split, ts: Tensor, chunk: int = 8192) -> Tensor:
    """1-D loss profile in weight space: mean cross-entropy over `split` at θ + t·d for every t,
    where θ are the model's weights and d the gradient of that same loss at θ, normalized to
    unit 2-norm over all parameters. [len(ts)]."""
    params, _ = _weights(model)
    direction = normalized(torch.func.grad(split_loss(model, split))(params))
    stacked = {k: p + ts.view(-1, *[1] * p.dim()) * direction[k] for k, p in params.items()}
    return evaluate_stacked(model, stacked, split, chunk)[0]


@torch.no_grad()
def _profile_chunk(model: nn.Module, x: Tensor, y: Tensor, d: Tensor, ts: Tensor) -> Tensor:
    moved = x.unsqueeze(0) + ts.view(-1, *[1] * x.dim()) * d.unsqueeze(0)  # [T, B, ...]
    out = model(moved.flatten(0, 1))
    return F.cross_entropy(out, y.repeat(len(ts)), reduction="none").view(len(ts), -1).sum(1)


def input_profile(model: nn.Module, split: Split, ts: Tensor, chunk: int = 1024) -> Tensor:
    """1-D loss profile in input space (seed 002's bonus): mean cross-entropy over `split`
    after moving every input x_i by t along its own normalized loss gradient
    ∂ℓ_i/∂x_i / ‖∂ℓ_i/∂x_i‖_F (a distance t in input space), at the model's current weights.
    [len(ts)]."""
    total = torch.zeros(len(ts), device=split.x.device)
    for s in range(0, len(split), chunk):
        x, y = split.x[s:s + chunk], split.y[s:s + chunk]
        g = per_sample_input_gradients(model, x, y, chunk)
        d = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
        total += _profile_chunk(model, x, y, d, ts)
    return total / len(split)
