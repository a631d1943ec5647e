"""The flatness and sensitivity measures on cases with known answers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from experiments.core import measures
from experiments.core.data import Split


def softmax_regression(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).double()
    x = torch.randn(32, 1, 2, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (32,))
    return model, x, y


def test_sensitivity_of_softmax_regression_is_the_closed_form() -> None:
    model, x, y = softmax_regression()
    w, b = model[1].weight.detach(), model[1].bias.detach()
    p = (x.flatten(1) @ w.T + b).softmax(-1)
    analytic = (p - F.one_hot(y, 4)) @ w  # ∂ℓ_i/∂x_i = Wᵀ(p_i − e_{y_i}), per sample
    grads = measures.per_sample_input_gradients(model, x, y, chunk=5)
    assert grads.shape == x.shape
    torch.testing.assert_close(grads.flatten(1), analytic)
    expected = analytic.norm(dim=1).mean()
    torch.testing.assert_close(measures.sensitivity(model, x, y, chunk=7), expected)
    # not the input-gradient of the batch-mean loss, which is 1/B of it
    batch = x.clone().requires_grad_()
    F.cross_entropy(model(batch), y).backward()
    assert batch.grad.flatten(1).norm(dim=1).mean() < expected / 10


def test_input_gradients_of_an_mlp_are_each_samples_own() -> None:
    """The one-backward-pass gradient of the summed loss gives, row by row, the gradient each
    sample would get alone (a nonlinear model, so rows could only mix if samples interacted)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(5, 2, 3, dtype=torch.float64), torch.randint(0, 3, (5,))
    grads = measures.per_sample_input_gradients(model, x, y, chunk=4)
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_()
        F.cross_entropy(model(xi), y[i:i + 1]).backward()
        torch.testing.assert_close(grads[i], xi.grad[0])


def test_jacobian_sensitivity_of_softmax_regression() -> None:
    model, x, _ = softmax_regression(1)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    p = (x.flatten(1) @ w.T + b).softmax(-1)
    jac = (torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)) @ w  # [B, C, D]
    expected = jac.flatten(1).norm(dim=1).mean()
    torch.testing.assert_close(measures.jacobian_sensitivity(model, x, chunk=6), expected)


def test_epsilon_sharpness_of_a_quadratic_reaches_the_box_corner() -> None:
    a = 4.0
    params = {"w": torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return 0.5 * a * (p["w"] ** 2).sum()

    eps = 1e-2
    theta = params["w"]
    corner = theta + eps * (theta.abs() + 1) * theta.sign()  # the max over the box
    base, top = loss(params), loss({"w": corner})
    expected = 100 * (top - base) / (1 + base)
    torch.testing.assert_close(measures.epsilon_sharpness(loss, params, eps=eps, steps=5), expected)


def test_interpolation_endpoints_are_exact() -> None:
    torch.manual_seed(0)
    first = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    second = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    alphas = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0])
    line = measures.interpolate(first, second, alphas)
    for k in first:
        assert line[k].shape == (5, *first[k].shape)
        assert torch.equal(line[k][1], first[k]) and torch.equal(line[k][3], second[k])
        torch.testing.assert_close(line[k][2], (first[k] + second[k]) / 2)
        torch.testing.assert_close(line[k][0], 2 * first[k] - second[k])


def test_evaluate_stacked_and_profiles() -> None:
    model, x, y = softmax_regression(2)
    model = model.float()
    split = Split(x.float(), y)
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, 2 * v]) for k, v in params.items()}
    losses, accs = measures.evaluate_stacked(model, stacked, split)
    with torch.no_grad():
        own = F.cross_entropy(model(split.x), y)
        torch.testing.assert_close(losses[0], own)
        for p in model.parameters():
            p.mul_(2)
        torch.testing.assert_close(losses[1], F.cross_entropy(model(split.x), y))
        for p in model.parameters():
            p.div_(2)
    ts = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    profile = measures.weight_profile(model, split, ts)
    torch.testing.assert_close(profile[1], own)
    assert profile[3] > profile[1] > profile[0]  # the gradient direction goes uphill
    inputs = measures.input_profile(model, split, ts, chunk=10)
    torch.testing.assert_close(inputs[1], own)
    assert inputs[3] > inputs[2] > inputs[1] > inputs[0]


def test_profile_slopes_at_zero_are_the_gradient_norms() -> None:
    """Along a normalized gradient the loss rises at the gradient's norm: the weight profile's
    slope at t=0 is ‖∇_θ L‖₂ (L the mean cross-entropy), the input profile's is the mean over
    samples of ‖∂ℓ_i/∂x_i‖ — exactly the sensitivity."""
    model, x, y = softmax_regression(3)
    model = model.float()
    split = Split(x.float(), y)
    h = 1e-2
    ts = torch.tensor([-h, 0.0, h])
    params = {k: v.detach() for k, v in model.named_parameters()}
    grad = torch.func.grad(measures.split_loss(model, split))(params)
    grad_norm = torch.cat([g.flatten() for g in grad.values()]).norm()
    weights = measures.weight_profile(model, split, ts)
    torch.testing.assert_close((weights[2] - weights[0]) / (2 * h), grad_norm, rtol=1e-3, atol=1e-4)
    inputs = measures.input_profile(model, split, ts, chunk=10)
    torch.testing.assert_close((inputs[2] - inputs[0]) / (2 * h),
                               measures.sensitivity(model, split.x, split.y), rtol=1e-3, atol=1e-4)


def test_weight_pca_of_points_in_a_known_plane() -> None:
    """Points c + t_i·u + s_i·v with u ⊥ v unit vectors and t ⊥ s zero-mean: the components are
    ±u, ±v, the coordinates ±t, ±s, and the explained variance ratio Σt² : Σs² = 20 : 4."""
    t = torch.tensor([-3.0, -1.0, 1.0, 3.0], dtype=torch.float64)
    s = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    u = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64) / 3
    v = torch.tensor([2.0, 1.0, -2.0], dtype=torch.float64) / 3
    points = torch.tensor([5.0, -1.0, 0.5], dtype=torch.float64) + t[:, None] * u + s[:, None] * v
    coords, explained = measures.weight_pca(points.float())
    torch.testing.assert_close(explained, torch.tensor([5 / 6, 1 / 6], dtype=torch.float64))
    signs = (coords * torch.stack([t, s], 1)).sum(0).sign()  # each component up to its sign
    torch.testing.assert_close(coords * signs, torch.stack([t, s], 1), rtol=1e-5, atol=1e-5)
