"""core.curvature timings on the course MLP (784→256→256→256→10 ReLU, 335k parameters, init by
torch.manual_seed(0), then `--train-steps` Adam steps): the Hessian of the mean cross-entropy over the
first `--samples` MNIST training images, in float64, at the final weights. Times, on this CPU, one
Hessian-vector product, λ_max/λ_min by Lanczos to `--tol`, Hutchinson's trace (`--probes`) and the
SLQ density (`--density-probes` × `--steps`). Prints figures; not a test. The load average is
printed with them: on a shared machine wall time also measures the neighbours.

    .venv/bin/python bench/bench_curvature.py [--data DIR] [--samples N] [--probes N]
        [--density-probes N] [--steps N] [--tol T] [--train-steps N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.func import functional_call

from experiments.core.curvature import (
    HessianOperator,
    extreme_eigenvalues,
    hutchinson_trace,
    hvp_operator,
    spectral_density,
)

T = TypeVar("T")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load() -> str:
    """The machine's 1, 5 and 15 minute load averages, as text."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def mnist(root: str, samples: int) -> tuple[Tensor, Tensor]:
    """The first `samples` MNIST training images, scaled to [0, 1] and flattened, and their labels."""
    data = torchvision.datasets.MNIST(root=root, train=True, download=False)
    return data.data[:samples].reshape(samples, -1).float() / 255.0, data.targets[:samples]


def course_mlp() -> nn.Module:
    """The course MLP 784→256→256→256→10 with ReLU, PyTorch's default init after manual_seed(0)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def train(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> None:
    """`steps` Adam steps (lr 1e-3) on mini-batches of 128 drawn from (x, y), seeded."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (128,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()


def timed(label: str, measure: Callable[[], T], op: HessianOperator) -> T:
    """Run `measure`, print `label` with its wall seconds and the Hessian-vector products of `op` it
    used, and return its result."""
    start, products = time.perf_counter(), op.matvecs
    result = measure()
    print(f"{label}: {time.perf_counter() - start:.1f} s, {op.matvecs - products} Hessian-vector products "
          f"({load()})")
    return result


def main() -> None:
    """Parse the flags, train the MLP briefly, then time and print each measure."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("PHENOLAB_DATA_DIR", str(DEFAULT_DATA)))
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=20, help="Hutchinson probes")
    parser.add_argument("--density-probes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="Lanczos steps per density probe")
    parser.add_argument("--tol", type=float, default=1e-4, help="Lanczos tolerance of λ_max, λ_min")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cpu_count {os.cpu_count()}, torch threads {torch.get_num_threads()}, {load()}")

    x, y = mnist(args.data, args.samples)
    model = course_mlp()
    start = time.perf_counter()
    train(model, x, y, args.train_steps)
    x64 = x.double()
    params = dict(model.named_parameters())

    def loss(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(functional_call(model, p, (x64,)), y)

    op = hvp_operator(loss, params)
    with torch.no_grad():
        value = loss(op.params).item()
    print(f"MLP 784-256-256-256-10, {op.shape[0]} parameters, {args.train_steps} Adam steps "
          f"({time.perf_counter() - start:.1f} s); mean cross-entropy over {args.samples} training samples "
          f"{value:.4f} (float64)")

    first = time.perf_counter()
    op.matvec(np.ones(op.shape[0]))
    print(f"first Hessian-vector product (loads torch's jvp decompositions): "
          f"{time.perf_counter() - first:.1f} s")
    timed("one Hessian-vector product", lambda: op.matvec(np.ones(op.shape[0])), op)

    extremes = timed(f"λ_max, λ_min (eigsh, tol {args.tol:g})",
                     lambda: extreme_eigenvalues(op, tol=args.tol), op)
    print(f"  λ_max {extremes.lambda_max:.6g} (residual {extremes.residual_max:.2g}), "
          f"λ_min {extremes.lambda_min:.6g} (residual {extremes.residual_min:.2g}), "
          f"{extremes.matvecs} products, converged {extremes.converged}")

    trace = timed(f"Hutchinson trace ({args.probes} probes)",
                  lambda: hutchinson_trace(op, probes=args.probes, seed=0), op)
    print(f"  tr(H) {trace.mean:.6g} ± {trace.stderr:.2g} (standard error)")

    density = timed(f"SLQ density ({args.density_probes} probes × {args.steps} steps)",
                    lambda: spectral_density(op, probes=args.density_probes, steps=args.steps, seed=0), op)
    nodes, weights = np.concatenate(density.nodes), np.concatenate(density.weights) / len(density.nodes)
    print(f"  nodes in [{nodes.min():.6g}, {nodes.max():.6g}]; "
          f"weight of negative nodes {weights[nodes < 0].sum():.3g}; "
          f"SLQ trace n·Σ wθ {op.shape[0] * (weights * nodes).sum():.6g}")


if __name__ == "__main__":
    main()
