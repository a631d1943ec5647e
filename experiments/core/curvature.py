"""The Hessian spectrum of a loss at given weights, without forming the Hessian.

Everything here is measured on H = ∇²L(θ), the Hessian of a loss L given as a function of a dict of
parameter tensors (e.g. the mean cross-entropy over a whole data split, or a stated subset of it:
the caller decides the data) at the weights θ = `params`, cast to float64 unless said otherwise:

- `hvp_operator`: H as a scipy `LinearOperator` whose products are exact Hessian-vector products
  (`torch.func`, forward-over-reverse), counted;
- `extreme_eigenvalues`: the algebraically largest and smallest eigenvalues λ_max, λ_min by Lanczos
  (ARPACK's `eigsh`) to a stated tolerance, with their residuals and whether they converged;
- `hutchinson_trace`: tr(H) by Hutchinson's estimator, with its standard error;
- `spectral_density`: the eigenvalue density by stochastic Lanczos quadrature;
- `classify` / `eigen_tolerance`: positive / negative / flat counts of an exactly computed (dense)
  spectrum, with a tolerance tied to floating-point precision.

Only torch, numpy and scipy are imported: no other module of the project.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor

Params = dict[str, Tensor]

EIGEN_SAFETY = 100.0
"""C in `eigen_tolerance`'s C·n·ε·max|λ|. The backward error of a symmetric eigensolver (Householder
tridiagonalization, then QR or divide and conquer) is ‖E‖₂ ≤ p(n)·ε·‖H‖₂ with p(n) a modest multiple
of n: one factor of 10 covers that constant; a second covers the rounding in forming H itself (each
entry a sum over samples and layers, off by a few ε of its terms' size), which the solver's bound
does not include. Fixed once from these two arguments, not tuned to any result."""


# --- Hessian-vector products --------------------------------------------------------------------

class HessianOperator(LinearOperator):
    """H = ∇²L(θ) of `loss` L at θ = `params` cast to `dtype`, as a symmetric LinearOperator over
    the parameters flattened in the dict's order (numpy float64 vectors in and out). Each product
    is one exact Hessian-vector product, `torch.func.jvp` of `torch.func.grad` (forward-over-
    reverse), on the parameters' device; `matvecs` counts them."""

    def __init__(self, loss: Callable[[Params], Tensor], params: Params,
                 dtype: torch.dtype = torch.float64) -> None:
        self.params = {name: p.detach().to(dtype) for name, p in params.items()}
        self.matvecs = 0
        self._grad = torch.func.grad(loss)
        first = next(iter(self.params.values()))
        self._device, self._dtype = first.device, dtype
        n = sum(p.numel() for p in self.params.values())
        super().__init__(dtype=np.float64, shape=(n, n))

    def to_params(self, x: np.ndarray) -> Params:
        """A flat vector `x` [n] in this operator's layout as {name: tensor} of the parameters'
        shapes, `dtype` and device (e.g. an eigenvector as a direction in weight space)."""
        flat = torch.as_tensor(np.asarray(x, dtype=np.float64).ravel()).to(self._device, self._dtype)
        sizes = [p.numel() for p in self.params.values()]
        return {name: part.view(p.shape) for (name, p), part in zip(self.params.items(), flat.split(sizes))}

    def to_vector(self, tree: Params) -> np.ndarray:
        """{name: tensor} in this operator's layout as one flat numpy float64 vector [n]."""
        return torch.cat([tree[name].reshape(-1) for name in self.params]).to(torch.float64).cpu().numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        _, hv = torch.func.jvp(self._grad, (self.params,), (self.to_params(x),))
        self.matvecs += 1
        return self.to_vector(hv)

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matvec(x)

    def _adjoint(self) -> HessianOperator:
        return self


def hvp_operator(loss: Callable[[Params], Tensor], params: Params,
                 dtype: torch.dtype = torch.float64) -> HessianOperator:
    """H = ∇²L(θ) of `loss` L at θ = `params` as a LinearOperator of exact, counted Hessian-vector
    products. The parameters are cast to `dtype` first, so H is the Hessian of L evaluated in that
    precision (for a float32 model, of its float64 cast: `loss` must accept `dtype` parameters, e.g.
    with its data in `dtype` too). The device is the parameters'."""
    return HessianOperator(loss, params, dtype)


# --- Extreme eigenvalues by Lanczos --------------------------------------------------------------

@dataclass(frozen=True)
class Extremes:
    """λ_max, λ_min of H (algebraic, not by magnitude) and what they cost.

    `top`: the `top_k` algebraically largest eigenvalues, descending (λ_max first); `top_residuals`
    and `residual_min`: ‖Hv − λv‖₂ of each unit eigenvector v (one extra product each). When ARPACK
    did not converge (`converged` False) the values are its converged ones, descending, NaN where it
    had none (so `top[0]` is then the largest converged one, not necessarily λ_max).
    `matvecs`: Hessian-vector products used, residual checks included; `tol`: ARPACK's tolerance."""

    top: tuple[float, ...]
    top_residuals: tuple[float, ...]
    lambda_min: float
    residual_min: float
    matvecs: int
    converged: bool
    tol: float

    @property
    def lambda_max(self) -> float:
        """The algebraically largest eigenvalue."""
        return self.top[0]

    @property
    def residual_max(self) -> float:
        """‖Hv − λ_max·v‖₂ of its unit eigenvector v."""
        return self.top_residuals[0]


def _lanczos_end(op: LinearOperator, which: str, k: int, tol: float, max_iter: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """`eigsh` for the k eigenvalues at one end ('LA' or 'SA'), sorted descending with their
    eigenvectors [n, k]; on no convergence the converged ones, padded with NaN."""
    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    try:
        values, vectors = eigsh(op, k=k, which=which, tol=tol, maxiter=max_iter, v0=v0)
        converged = True
    except ArpackNoConvergence as partial:
        values, vectors, converged = partial.eigenvalues, partial.eigenvectors, False
    order = np.argsort(-values)
    padded = np.full(k, np.nan)
    padded[:len(values)] = values[order]
    return padded, vectors[:, order], converged


def _residuals(op: LinearOperator, values: np.ndarray, vectors: np.ndarray) -> tuple[float, ...]:
    """‖Hv − λv‖₂ for each eigenpair with v normalized to unit norm; NaN where λ is NaN."""
    units = vectors / np.linalg.norm(vectors, axis=0)
    found = [float(np.linalg.norm(op.matvec(v) - lam * v)) for lam, v in zip(values, units.T)]
    return tuple(found + [math.nan] * (len(values) - len(found)))


def _lanczos_both_ends(op: LinearOperator, tol: float, max_iter: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`eigsh` for λ_max and λ_min at once (which='BE', k=2: one Krylov space serves both ends,
    about a third fewer products than one run per end): the two eigenvalues descending and their
    eigenvectors [n, 2]; None when ARPACK did not converge (a partial 'BE' result does not say
    which end a converged value belongs to)."""
    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    try:
        values, vectors = eigsh(op, k=2, which="BE", tol=tol, maxiter=max_iter, v0=v0)
    except ArpackNoConvergence:
        return None
    order = np.argsort(-values)
    return values[order], vectors[:, order]


def extreme_eigenvalues(op: LinearOperator, tol: float = 1e-6, max_iter: int = 500, top_k: int = 1,
                        seed: int = 0) -> Extremes:
    """The algebraically largest (`top_k` of them) and the smallest eigenvalue of the symmetric `op`
    (e.g. `hvp_operator`'s H) by implicitly restarted Lanczos: scipy's `eigsh`, start vector
    v0 ~ N(0, I) from `seed` — with `top_k` = 1 one run for both ends (which='BE'), else (or when
    that run does not converge) which='LA' then 'SA'. ARPACK accepts a Ritz value θ when its
    residual estimate is ≤ `tol`·max(|θ|, ε^⅔), so some eigenvalue λ has |λ − θ| ≤ `tol`·|θ|; the
    returned residual r, recomputed, gives the same bound |λ − θ| ≤ r. `max_iter` caps ARPACK's
    restarts (each at most ncv = min(n, max(2k+1, 20)) products). Never raises on
    non-convergence: `converged` is then False and the values are the partial ones of the
    one-end runs. `matvecs` counts every product, a failed 'BE' run's included. Needs
    `top_k` < n (and n > 2 for 'BE')."""
    start = op.matvecs
    both = _lanczos_both_ends(op, tol, max_iter, seed) if top_k == 1 and op.shape[0] > 2 else None
    if both is not None:
        values, vectors = both
        top, top_vectors, bottom, bottom_vectors = values[:1], vectors[:, :1], values[1:], vectors[:, 1:]
        converged = True
    else:
        top, top_vectors, top_ok = _lanczos_end(op, "LA", top_k, tol, max_iter, seed)
        bottom, bottom_vectors, bottom_ok = _lanczos_end(op, "SA", 1, tol, max_iter, seed)
        converged = top_ok and bottom_ok
    return Extremes(top=tuple(float(v) for v in top), top_residuals=_residuals(op, top, top_vectors),
                    lambda_min=float(bottom[0]), residual_min=_residuals(op, bottom, bottom_vectors)[0],
                    matvecs=op.matvecs - start, converged=converged, tol=tol)


# --- Trace by Hutchinson -------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate: the mean over `probes` samples and its standard error std/√probes
    (std with Bessel's correction)."""

    mean: float
    stderr: float
    probes: int


def _rademacher(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, n).astype(np.float64) * 2.0 - 1.0


def hutchinson_trace(op: LinearOperator, probes: int = 100, seed: int = 0) -> Estimate:
    """tr(H) of `op` by Hutchinson's estimator: the mean of zᵀHz over `probes` (≥ 2) independent
    Rademacher vectors z (entries ±1, drawn from `seed`), unbiased, with its standard error; one
    product per probe."""
    if probes < 2:
        raise ValueError("hutchinson_trace needs at least 2 probes for a standard error")
    rng = np.random.default_rng(seed)
    samples = np.array([z @ op.matvec(z) for z in (_rademacher(rng, op.shape[0]) for _ in range(probes))])
    return Estimate(mean=float(samples.mean()), stderr=float(samples.std(ddof=1) / math.sqrt(probes)),
                    probes=probes)


# --- Spectral density by stochastic Lanczos quadrature -------------------------------------------

def lanczos(op: LinearOperator, v0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """`steps` Lanczos steps on the symmetric `op` from `v0` (normalized), with full
    reorthogonalization (classical Gram-Schmidt against every earlier basis vector, twice): the
    tridiagonal T's diagonal α [m] and off-diagonal β [m−1], m ≤ `steps`, one product per step.
    It stops early (m < `steps`) when the Krylov space is invariant: β ≤ n·ε·max‖Hq‖."""
    n = op.shape[0]
    basis = np.empty((steps, n))
    basis[0] = v0 / np.linalg.norm(v0)
    alpha: list[float] = []
    beta: list[float] = []
    scale = 0.0
    for j in range(steps):
        w = op.matvec(basis[j])
        scale = max(scale, float(np.linalg.norm(w)))
        alpha.append(float(basis[j] @ w))
        if j == steps - 1:
            break
        for _ in range(2):
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        b = float(np.linalg.norm(w))
        if b <= n * np.finfo(np.float64).eps * scale:
            break
        beta.append(b)
        basis[j + 1] = w / b
    return np.array(alpha), np.array(beta)


@dataclass(frozen=True)
class Density:
    """The eigenvalue density (1/n)·Σᵢ δ(t − λᵢ) of H, by stochastic Lanczos quadrature (Ghorbani et
    al. 2019, as in PyHessian): per probe the Ritz values of its Lanczos tridiagonal as `nodes` and
    the squared first components of their eigenvectors as `weights` (summing to 1), raw."""

    nodes: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]

    def on_grid(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """The density at the points `grid`, each node a Gaussian of standard deviation `sigma`
        (in eigenvalue units) times its weight, averaged over probes: integrates to 1 over a
        grid that covers the nodes ± several `sigma`, finer than `sigma`."""
        grid = np.asarray(grid, dtype=np.float64)
        norm = sigma * math.sqrt(2.0 * math.pi)
        per_probe = [np.exp(-0.5 * ((grid[:, None] - nodes) / sigma) ** 2) @ weights / norm
                     for nodes, weights in zip(self.nodes, self.weights)]
        return np.mean(per_probe, axis=0)


def _quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature nodes (T's eigenvalues) and weights (squared first eigenvector entries)."""
    nodes, vectors = eigh_tridiagonal(alpha, beta)
    return nodes, vectors[0] ** 2


def spectral_density(op: LinearOperator, probes: int = 3, steps: int = 40, seed: int = 0) -> Density:
    """The eigenvalue density of the symmetric `op` by stochastic Lanczos quadrature: for each of
    `probes` Rademacher vectors (from `seed`, normalized) `steps` Lanczos steps with full
    reorthogonalization (`lanczos`), its Gauss quadrature as nodes and weights. probes·steps
    products."""
    rng = np.random.default_rng(seed)
    rules = [_quadrature(*lanczos(op, _rademacher(rng, op.shape[0]), steps)) for _ in range(probes)]
    return Density(nodes=tuple(nodes for nodes, _ in rules), weights=tuple(weights for _, weights in rules))


# --- Classification of an exact spectrum ----------------------------------------------------------

def eigen_tolerance(eigenvalues: Tensor | np.ndarray, n: int | None = None,
                    dtype: torch.dtype | None = None) -> Tensor:
    """C·n·ε·max|λ| with C = `EIGEN_SAFETY` (100): the size below which an eigenvalue of a symmetric
    n×n matrix computed in `dtype` (ε its machine epsilon; default: the eigenvalues' dtype) cannot
    be told from 0, since the eigensolver's backward error is about n·ε·‖H‖₂ and ‖H‖₂ = max|λ|.
    `eigenvalues` [..., n] (a batch of spectra gives one tolerance each, shape [...]); `n` defaults
    to their count."""
    eigenvalues = torch.as_tensor(eigenvalues)
    n = eigenvalues.shape[-1] if n is None else n
    eps = torch.finfo(eigenvalues.dtype if dtype is None else dtype).eps
    return EIGEN_SAFETY * n * eps * eigenvalues.abs().amax(-1)


@dataclass(frozen=True)
class Classification:
    """Counts of eigenvalues λ > `tolerance` (`positive`), λ < −`tolerance` (`negative`) and the rest
    (`flat`); `strict_ratio`: the fraction with λ > 0 (the course's minimal ratio); `significant_ratio`:
    positive / (positive + negative), over the eigenvalues with |λ| > `tolerance` (NaN if none).
    Tensors of the batch shape [...] (0-d for one spectrum)."""

    positive: Tensor
    negative: Tensor
    flat: Tensor
    tolerance: Tensor
    strict_ratio: Tensor
    significant_ratio: Tensor


def classify(eigenvalues: Tensor | np.ndarray, tolerance: float | Tensor | None = None) -> Classification:
    """Classify the eigenvalues [..., n] of exactly computed (dense) Hessians into positive, negative
    and flat with the explicit `tolerance` (a float, or one per spectrum [...]; default:
    `eigen_tolerance` of each spectrum, i.e. 100·n·ε·max|λ|). Vectorized over the batch."""
    eigenvalues = torch.as_tensor(eigenvalues)
    if tolerance is None:
        tolerance = eigen_tolerance(eigenvalues)
    tol = torch.as_tensor(tolerance, dtype=eigenvalues.dtype, device=eigenvalues.device)
    tol = tol.expand(eigenvalues.shape[:-1])
    positive = (eigenvalues > tol[..., None]).sum(-1)
    negative = (eigenvalues < -tol[..., None]).sum(-1)
    significant = positive + negative
    ratio = torch.where(significant > 0, positive.to(torch.float64) / significant.clamp(min=1), torch.nan)
    return Classification(positive=positive, negative=negative, flat=eigenvalues.shape[-1] - significant,
                          tolerance=tol, strict_ratio=(eigenvalues > 0).to(torch.float64).mean(-1),
                          significant_ratio=ratio)
