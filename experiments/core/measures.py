"""Measures of trained networks. Each docstring says exactly what is measured: of which loss,
at which weights, per sample or batch-averaged, and which norm."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from experiments.core.data import Split
from experiments.core.models import ACTIVATIONS
from experiments.core.train import ModelStack, Params, per_model_loss

# --- Flatness and sensitivity (HW1-3) -------------------------------------------------------

def _weights(model: nn.Module) -> tuple[Params, Params]:
    """The model's current parameters and buffers, detached, for `functional_call`."""
    return ({k: v.detach() for k, v in model.named_parameters()},
            {k: v.detach() for k, v in model.named_buffers()})


def per_sample_input_gradients(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 1024) -> Tensor:
    """∂ℓ_i/∂x_i for every sample i, where ℓ_i is the cross-entropy of sample i's own logits
    against its own label, at the model's current weights. Same shape as `x`.

    One backward pass per chunk of samples, no per-sample loop: the gradient of the SUM
    Σ_i ℓ_i w.r.t. the whole batch of inputs, whose row i is exactly ∂ℓ_i/∂x_i because ℓ_i
    depends on x_i alone (the model treats samples independently — no batch statistics).
    Not the input-gradient of the batch-MEAN loss, which would be 1/B times smaller."""
    params, buffers = _weights(model)

    def summed(xb: Tensor, yb: Tensor) -> Tensor:
        out = functional_call(model, (params, buffers), (xb,))
        return F.cross_entropy(out, yb, reduction="sum")

    grad = torch.func.grad(summed)
    return torch.cat([grad(x[s:s + chunk], y[s:s + chunk]) for s in range(0, len(x), chunk)])


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


def epsilon_sharpness(loss: Callable[[Params], Tensor], params: Params, eps: float = 1e-3,
                      steps: int = 10) -> Tensor:
    """Keskar et al. (2017): 100·(max_δ L(θ+δ) − L(θ)) / (1 + L(θ)) over the box
    |δ_i| ≤ ε(|θ_i| + 1), in percent, with L = `loss` (whatever it averages, e.g. `split_loss`:
    the mean cross-entropy of a split), θ = `params`. The max is found by `steps` projected
    sign-gradient ascent steps from δ = 0 (step 2.5·bound/steps, so the box's faces are
    reachable); the largest loss seen is kept, so the value is a lower bound of the true max.
    `steps` gradients and one more loss (at the last δ, whose gradient nothing would use)."""
    params = {k: p.detach() for k, p in params.items()}
    bound = {k: eps * (p.abs() + 1) for k, p in params.items()}
    delta = {k: torch.zeros_like(p) for k, p in params.items()}

    def moved(d: Params) -> Tensor:
        return loss({k: params[k] + d[k] for k in params})

    ascent = torch.func.grad_and_value(moved)
    seen = []  # L(θ + δ) at δ = 0, then after each step
    for _ in range(steps):
        g, value = ascent(delta)
        seen.append(value)
        delta = {k: (delta[k] + 2.5 * bound[k] / steps * g[k].sign()).clamp(-bound[k], bound[k])
                 for k in params}
    seen.append(moved(delta))
    base = seen[0]
    return 100 * (torch.stack(seen).max() - base) / (1 + base)


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


# --- Training dynamics: per-layer statistics (weight-init) ----------------------------------

def layer_grad_norms(model: nn.Module, state: Params, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """2-norm of ∂L/∂θ_k for every parameter tensor θ_k separately (each layer's weight, each
    bias), L = cross-entropy averaged over the batch (x, y), at the weights `state` (a state
    dict, e.g. `EvalEvent.state_dict(i)`). {name: 0-d tensor}. Vanishing gradients show as
    norms shrinking layer by layer towards the input, exploding ones as norms growing."""
    names = {name for name, _ in model.named_parameters()}
    weights = {k: v for k, v in state.items() if k in names}
    buffers = {k: v for k, v in state.items() if k not in names}

    def loss(w: Params) -> Tensor:
        return F.cross_entropy(functional_call(model, (w, buffers), (x,)), y)

    return {k: g.norm() for k, g in torch.func.grad(loss)(weights).items()}


def activations(model: nn.Module, state: Params, x: Tensor) -> dict[str, Tensor]:
    """The outputs of every activation module (ReLU, Tanh, Sigmoid) of `model` at the weights
    `state` on the inputs `x`, keyed by module name, each [B, units] — what the next layer
    sees. One forward pass with temporary hooks."""
    found: dict[str, Tensor] = {}
    kinds = tuple(ACTIVATIONS.values())
    hooks = [module.register_forward_hook(
        lambda _m, _i, out, name=name: found.__setitem__(name, out.detach().flatten(1)))
        for name, module in model.named_modules() if isinstance(module, kinds)]
    try:
        with torch.no_grad():
            functional_call(model, state, (x,))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def saturation(a: Tensor, activation: str, tol: float = 0.01) -> Tensor:
    """Fraction of the entries of the activation outputs `a` in the activation's flat region,
    where almost no gradient passes back: sigmoid a < tol or a > 1 − tol (σ' < tol), tanh
    |a| > 1 − tol (tanh' < 2·tol), relu a == 0 (a dead unit for that input). A 0-d tensor."""
    if activation == "sigmoid":
        flat = (a < tol) | (a > 1 - tol)
    elif activation == "tanh":
        flat = a.abs() > 1 - tol
    elif activation == "relu":
        flat = a == 0
    else:
        raise ValueError(f"unknown activation {activation!r}")
    return flat.float().mean()


def dead_units(a: Tensor) -> Tensor:
    """Fraction of the units of one ReLU layer that output exactly 0 on every one of the inputs
    (`a` [B, units]: the layer's outputs on B inputs). Such a unit passes no gradient back on
    this data, so gradient descent never revives it; at 1.0 the whole layer is dead and the
    network outputs the same constant for every input. A 0-d tensor."""
    return (a == 0).all(0).float().mean()


def unit_spread(a: Tensor) -> Tensor:
    """How different the units of one layer are: max − min over the units of `a` [B, units],
    averaged over the B inputs. Exactly 0 when every unit outputs the same value on every
    input — the symmetry that zero initialisation never breaks."""
    return (a.amax(1) - a.amin(1)).mean()


# --- Near-zero gradient: Hessian, eigenvalues, sampling minimal ratio (HW1-2) ---------------

class FlatLayout:
    """The parameters of a module as one flat vector θ (in `named_parameters` order), and
    back: what `torch.func.hessian` needs to give the Hessian as one [P, P] matrix."""

    def __init__(self, module: nn.Module) -> None:
        self.names = [name for name, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]

    def flatten(self, params: Params) -> Tensor:
        """{name: tensor} → θ [..., P]; leading dimensions (a stack of models) are kept."""
        parts = []
        for name, shape in zip(self.names, self.shapes):
            p = params[name]
            parts.append(p.reshape(*p.shape[:p.dim() - len(shape)], -1))
        return torch.cat(parts, -1)

    def unflatten(self, theta: Tensor) -> Params:
        """θ [P] → {name: tensor} (views into θ, so gradients flow back to it)."""
        sizes = [shape.numel() for shape in self.shapes]
        return {name: part.view(shape) for name, shape, part
                in zip(self.names, self.shapes, theta.split(sizes))}


def flat_loss(module: nn.Module, data: Split, loss: str = "mse") -> Callable[[Tensor], Tensor]:
    """θ [P] ↦ the whole training loss of `module` with parameters θ: `loss` (mse or
    cross_entropy) averaged over every sample of `data` — one batch, no mini-batches."""
    layout = FlatLayout(module)

    def value(theta: Tensor) -> Tensor:
        out = functional_call(module, layout.unflatten(theta), (data.x,))
        return per_model_loss(loss, out.unsqueeze(0), data.y.unsqueeze(0))[0]

    return value


def per_model(measure: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """`measure` of one θ [P], or of every row of a stack θ [N, P] at once (`vmap`)."""
    return measure(theta) if theta.dim() == 1 else torch.vmap(measure)(theta)


def gradient_norm(loss: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """‖∇L(θ)‖₂: the 2-norm of the gradient of L = `loss` over all parameters together, at θ
    [P] (0-d) or at each row of θ [N, P] ([N])."""
    return per_model(lambda t: torch.func.grad(loss)(t).norm(), theta)


def hessian(loss: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """The exact Hessian ∇²L(θ) of L = `loss` w.r.t. the flat parameters (`torch.func.hessian`,
    forward-over-reverse): [P, P] at θ [P], [N, P, P] at a stack θ [N, P]."""
    return per_model(torch.func.hessian(loss), theta)


def eigenvalues(h: Tensor) -> Tensor:
    """Eigenvalues of the symmetric part (H + Hᵀ)/2 of `h` [..., P, P], ascending: [..., P]."""
    return torch.linalg.eigvalsh((h + h.transpose(-1, -2)) / 2)


def sampling_minimal_ratio(loss: Callable[[Tensor], Tensor], theta: Tensor, samples: int = 1000,
                           radius: float = 1e-2, seed: int = 0, chunk: int = 64) -> Tensor:
    """The sampling definition: the fraction of `samples` points θ + δ with L(θ + δ) > L(θ),
    δ drawn uniformly on the sphere ‖δ‖₂ = `radius` around θ (seeded), L = `loss`. At θ [P] a
    0-d tensor, at each row of θ [N, P] (its own δs) [N]."""
    generator = torch.Generator(device=theta.device).manual_seed(seed)
    stacked = theta.unsqueeze(0) if theta.dim() == 1 else theta
    base = torch.vmap(loss)(stacked)
    higher = torch.zeros_like(base)
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        delta = torch.randn(stacked.shape[0], n, stacked.shape[1], generator=generator,
                            device=theta.device, dtype=theta.dtype)
        delta = radius * delta / delta.norm(dim=-1, keepdim=True)
        moved = torch.vmap(torch.vmap(loss))(stacked.unsqueeze(1) + delta)
        higher += (moved > base.unsqueeze(1)).float().sum(1)
    ratio = higher / samples
    return ratio[0] if theta.dim() == 1 else ratio


def weight_pca(points: Tensor, components: int = 2) -> tuple[Tensor, Tensor]:
    """PCA (scikit-learn, exact SVD) of weight vectors `points` [M, D] fitted over all M of
    them: (their coordinates [M, components], the explained variance ratio [components])."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=components, svd_solver="full")
    coords = pca.fit_transform(points.detach().double().cpu().numpy())
    return torch.from_numpy(coords), torch.from_numpy(pca.explained_variance_ratio_)
