"""core.curvature on closed forms: quadratics ½θᵀAθ whose Hessian A has chosen eigenvalues, and a
small MLP whose exact Hessian (`torch.func.hessian`) is diagonalized densely for comparison."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.core.curvature import (
    EIGEN_SAFETY,
    classify,
    eigen_tolerance,
    extreme_eigenvalues,
    hutchinson_trace,
    hvp_operator,
    lanczos,
    spectral_density,
)

Loss = Callable[[dict[str, Tensor]], Tensor]


def quadratic(eigenvalues: list[float] | Tensor, seed: int = 0) -> tuple[Loss, dict[str, Tensor], Tensor]:
    """L(θ) = ½θᵀAθ with A = Q·diag(eigenvalues)·Qᵀ, Q a random orthogonal basis: (L, θ, A)."""
    eigenvalues = torch.as_tensor(eigenvalues, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    a = q @ torch.diag(eigenvalues) @ q.T
    a = (a + a.T) / 2
    theta = torch.randn(n, generator=generator, dtype=torch.float64)
    return (lambda p: 0.5 * p["theta"] @ a @ p["theta"]), {"theta": theta}, a


def mlp(device: str = "cpu") -> tuple[Loss, dict[str, Tensor], Tensor]:
    """A tanh MLP 4-8-3, mean cross-entropy over 64 random points, float64, on `device`:
    (L, θ, exact Hessian)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator, dtype=torch.float64).to(device)
    y = torch.randint(0, 3, (64,), generator=generator).to(device)
    shapes = {"w1": (8, 4), "b1": (8,), "w2": (3, 8), "b2": (3,)}
    params = {name: torch.randn(shape, generator=generator, dtype=torch.float64).to(device)
              for name, shape in shapes.items()}

    def loss(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(torch.tanh(x @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"], y)

    sizes = [p.numel() for p in params.values()]

    def flat_loss(theta: Tensor) -> Tensor:
        return loss({name: part.view(shapes[name]) for name, part in zip(shapes, theta.split(sizes))})

    theta = torch.cat([p.reshape(-1) for p in params.values()])
    return loss, params, torch.func.hessian(flat_loss)(theta)


def test_hvp_operator_gives_exact_counted_hessian_products_in_float64() -> None:
    loss, params, a = quadratic([3.0, -1.0, 0.5, 2.0])
    op = hvp_operator(loss, {"theta": params["theta"].float()})
    v = np.random.default_rng(0).standard_normal(4)
    hv = op.matvec(v)
    assert hv.dtype == np.float64 and op.params["theta"].dtype == torch.float64
    np.testing.assert_allclose(hv, a.numpy() @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(v), hv)
    assert op.matvecs == 2
    np.testing.assert_array_equal(op.to_vector(op.to_params(v)), v)


@pytest.mark.parametrize("top_k", [1, 3], ids=["both-ends-in-one-run", "one-run-per-end"])
@pytest.mark.parametrize("eigenvalues", [np.linspace(0.1, 2.0, 40), np.linspace(-5.0, 2.0, 40)],
                         ids=["positive-definite", "indefinite"])
def test_extremes_of_quadratics_are_the_algebraic_ones(eigenvalues: np.ndarray, top_k: int) -> None:
    loss, params, _ = quadratic(eigenvalues.tolist())
    op = hvp_operator(loss, params)
    result = extreme_eigenvalues(op, tol=1e-10, top_k=top_k)
    assert result.converged and result.matvecs == op.matvecs
    assert result.lambda_max == pytest.approx(eigenvalues.max(), rel=1e-8)
    assert result.lambda_min == pytest.approx(eigenvalues.min(), rel=1e-8)
    np.testing.assert_allclose(result.top, np.sort(eigenvalues)[::-1][:top_k], rtol=1e-8)
    scale = np.abs(eigenvalues).max()
    assert max(result.top_residuals) < 1e-8 * scale and result.residual_min < 1e-8 * scale
    assert result.residual_max == result.top_residuals[0] and result.tol == 1e-10


def test_extremes_match_dense_hessian_of_mlp() -> None:
    loss, params, hessian = mlp()
    exact = torch.linalg.eigvalsh(hessian)
    assert exact[0] < 0 < exact[-1]
    result = extreme_eigenvalues(hvp_operator(loss, params))
    assert result.converged and result.tol == 1e-6
    assert result.lambda_max == pytest.approx(exact[-1].item(), rel=1e-6)
    assert result.lambda_min == pytest.approx(exact[0].item(), rel=1e-6)
    assert result.matvecs > 2
    # softmax ignores a shift of all logits: b2 + c·1 and each column of w2 + c·1, 9 exactly flat directions
    assert classify(exact).flat.item() == 9


def test_non_convergence_is_reported_not_raised() -> None:
    loss, params, _ = quadratic(np.linspace(0.0, 1.0, 300).tolist())
    result = extreme_eigenvalues(hvp_operator(loss, params), tol=1e-14, max_iter=1)
    assert not result.converged
    assert result.matvecs > 0
    for value in (result.lambda_max, result.lambda_min):
        assert np.isnan(value) or -1e-9 <= value <= 1.0 + 1e-9


def test_non_convergence_keeps_the_converged_values() -> None:
    eigenvalues = np.concatenate([[-5.0, 4.0, 3.5], np.linspace(0.0, 1.0, 297)])
    loss, params, _ = quadratic(eigenvalues.tolist())
    result = extreme_eigenvalues(hvp_operator(loss, params), tol=1e-12, max_iter=1, top_k=4)
    assert not result.converged
    found = [value for value in (*result.top, result.lambda_min) if not np.isnan(value)]
    assert found and all(np.abs(eigenvalues - value).min() < 1e-8 for value in found)
    converged = [value for value in result.top if not np.isnan(value)]
    assert list(result.top[:len(converged)]) == sorted(converged, reverse=True)
    assert np.isnan(result.top).tolist() == np.isnan(result.top_residuals).tolist() == \
        [False] * len(converged) + [True] * (4 - len(converged))


def test_hutchinson_trace_within_four_standard_errors() -> None:
    eigenvalues = np.random.default_rng(1).uniform(-3.0, 5.0, 40)
    loss, params, _ = quadratic(eigenvalues.tolist())
    op = hvp_operator(loss, params)
    few, many = hutchinson_trace(op, probes=25, seed=0), hutchinson_trace(op, probes=400, seed=1)
    for estimate in (few, many):
        assert abs(estimate.mean - eigenvalues.sum()) <= 4 * estimate.stderr
    assert (few.probes, many.probes) == (25, 400)
    assert many.stderr < few.stderr / 2
    assert op.matvecs == 425
    with pytest.raises(ValueError):
        hutchinson_trace(op, probes=1)


def test_density_integrates_to_one_with_nodes_inside_the_spectrum() -> None:
    loss, params, hessian = mlp()
    exact = torch.linalg.eigvalsh(hessian).numpy()
    density = spectral_density(hvp_operator(loss, params), probes=3, steps=20, seed=0)
    assert len(density.nodes) == len(density.weights) == 3
    slack = 1e-10 * np.abs(exact).max()
    for nodes, weights in zip(density.nodes, density.weights):
        assert len(nodes) == len(weights) == 20
        assert exact[0] - slack <= nodes.min() and nodes.max() <= exact[-1] + slack
        assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    sigma = (exact[-1] - exact[0]) / 100
    grid = np.linspace(exact[0] - 8 * sigma, exact[-1] + 8 * sigma, 5001)
    values = density.on_grid(grid, sigma)
    assert values.min() >= 0
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-6)


def test_own_lanczos_with_n_steps_reproduces_the_spectrum() -> None:
    eigenvalues = np.random.default_rng(2).uniform(-2.0, 3.0, 30)
    loss, params, a = quadratic(eigenvalues.tolist())
    op = hvp_operator(loss, params)
    alpha, beta = lanczos(op, np.random.default_rng(0).standard_normal(30), steps=30)
    assert (len(alpha), len(beta)) == (30, 29) and op.matvecs == 30
    tridiagonal = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    np.testing.assert_allclose(np.linalg.eigvalsh(tridiagonal), np.linalg.eigvalsh(a.numpy()), atol=1e-10)


def test_lanczos_stops_when_the_krylov_space_is_invariant() -> None:
    loss, params, _ = quadratic([1.0, 1.0, 1.0, 2.0, 2.0, 3.0])
    alpha, beta = lanczos(hvp_operator(loss, params), np.ones(6), steps=6)
    assert (len(alpha), len(beta)) == (3, 2)
    tridiagonal = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    np.testing.assert_allclose(np.linalg.eigvalsh(tridiagonal), [1.0, 2.0, 3.0], atol=1e-12)


PLANTED = [-2.0, -1e-3, 1e-3, 1.0, 3.0, 1e-17, -1e-17, 3e-17, -2e-17, 0.0, 5e-18, -4e-18]


def test_eigen_tolerance_is_c_n_eps_times_spectral_norm() -> None:
    eps64, eps32 = torch.finfo(torch.float64).eps, torch.finfo(torch.float32).eps
    spectrum = torch.tensor(PLANTED, dtype=torch.float64)
    assert EIGEN_SAFETY == 100.0
    assert eigen_tolerance(spectrum).item() == pytest.approx(100.0 * 12 * eps64 * 3.0, rel=1e-15)
    assert eigen_tolerance(spectrum, 500, torch.float32).item() == pytest.approx(100.0 * 500 * eps32 * 3.0)
    assert eigen_tolerance(spectrum.float()).item() == pytest.approx(100.0 * 12 * eps32 * 3.0)


def test_planted_spectrum_classified_exactly() -> None:
    result = classify(torch.tensor(PLANTED, dtype=torch.float64))
    assert (result.positive.item(), result.negative.item(), result.flat.item()) == (3, 2, 7)
    assert result.strict_ratio.item() == 6 / 12
    assert result.significant_ratio.item() == 3 / 5


def test_dense_eigensolver_noise_is_flat_and_genuine_small_eigenvalues_are_not() -> None:
    _, _, a = quadratic(PLANTED, seed=3)
    computed = torch.linalg.eigvalsh(a)
    result = classify(computed)
    assert (result.positive.item(), result.negative.item(), result.flat.item()) == (3, 2, 7)
    assert result.significant_ratio.item() == 3 / 5
    assert result.strict_ratio.item() == (computed > 0).sum().item() / 12
    tiny = computed[computed.abs() < 1e-6]
    assert len(tiny) == 7 and tiny.abs().max() > 1e-17
    assert tiny.abs().max() < result.tolerance < 1e-3


def test_classify_batch_uses_each_spectrums_own_scale() -> None:
    spectrum = torch.tensor(PLANTED, dtype=torch.float64)
    batch = torch.stack([spectrum, 1e6 * spectrum, torch.zeros(12, dtype=torch.float64)])
    result = classify(batch)
    assert result.positive.tolist() == [3, 3, 0] and result.negative.tolist() == [2, 2, 0]
    assert result.flat.tolist() == [7, 7, 12]
    assert result.strict_ratio.tolist() == [0.5, 0.5, 0.0]
    assert result.significant_ratio[:2].tolist() == [0.6, 0.6] and result.significant_ratio[2].isnan()
    np.testing.assert_allclose(result.tolerance, eigen_tolerance(batch))
    fixed = classify(batch[:2], tolerance=1e-2)
    assert fixed.positive.tolist() == [2, 3] and fixed.flat.tolist() == [9, 7]
    assert fixed.tolerance.tolist() == [1e-2, 1e-2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_hvp_operator_on_cuda_matches_cpu() -> None:
    loss, params, hessian = mlp("cuda")
    op = hvp_operator(loss, params)
    v = np.random.default_rng(0).standard_normal(hessian.shape[0])
    np.testing.assert_allclose(op.matvec(v), hessian.cpu().numpy() @ v, rtol=1e-10, atol=1e-12)
    assert extreme_eigenvalues(op).converged
