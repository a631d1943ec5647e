"""One MNIST epoch of a 784-256-256-256-10 MLP through Phenolab's loop vs a plain torchvision
DataLoader loop (same process, same model, plain SGD), against the compute bound
6 × parameters × samples FLOP at the fp32 matmul rate measured here; then the wall time of
`function-fit` and `task-fit` at their default sizes.

Each loop runs a short warm-up first (first-call allocations and kernel selection are not an
epoch's cost), and each epoch time is the best of `--repeats`: the DataLoader loop's per-sample
PIL transforms swing with machine load far more than tensor slicing does. The "matrix products
alone" line times just the epoch's 11 GEMMs per step at their real shapes (forward, weight
gradients, input gradients past the first layer): no loop can beat it in fp32.

    PHENOLAB_DATA_DIR=../shared/data .venv/bin/python bench/bench_loop.py [--skip-experiments]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import timed
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from experiments.core.data import data_dir, load_dataset
from experiments.core.models import count_params, mlp
from experiments.core.train import TrainSpec, seeded, train

HIDDEN = [256, 256, 256]
LR = 0.01


def matmul_rate(n: int = 2048, repeats: int = 20) -> float:
    """fp32 FLOP/s of an n×n by n×n matmul on this machine (best of a few rounds)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best


def project_epoch(batch: int, max_steps: int | None = None) -> float:
    data = load_dataset("mnist", "cpu").train
    models = seeded(lambda: mlp(784, HIDDEN, 10), [0], "cpu")
    spec = TrainSpec(optimizer="sgd", lr=LR, batch_size=batch, epochs=1, max_steps=max_steps)
    start = time.perf_counter()
    train(models, data, spec, seeds=[0])
    return time.perf_counter() - start


def dataloader_epoch(batch: int, max_steps: int | None = None) -> float:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = DataLoader(datasets.MNIST(data_dir(), train=True, transform=transform),
                        batch_size=batch, shuffle=True)
    torch.manual_seed(0)
    model = mlp(784, HIDDEN, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step == max_steps:
            break
    return time.perf_counter() - start


def best_epoch(loop: Callable[..., float], batch: int, repeats: int) -> float:
    """Best of `repeats` epochs, after a 20-step warm-up."""
    loop(batch, max_steps=20)
    return min(loop(batch) for _ in range(repeats))


def gemm_epoch(batch: int, n: int = 60_000) -> float:
    """Seconds for one epoch's matrix products alone, at the MLP's shapes: per step the forward
    x·Wᵀ, the weight gradients gᵀ·x, and the input gradients g·W except the first layer's."""
    dims = [784, *HIDDEN, 10]
    weights = [torch.randn(o, i) for i, o in zip(dims, dims[1:])]
    inputs = [torch.randn(batch, i) for i in dims[:-1]]
    grads = [torch.randn(batch, o) for o in dims[1:]]

    def step() -> None:
        for x, w, g in zip(inputs, weights, grads):
            torch.mm(x, w.t())
            torch.mm(g.t(), x)
        for w, g in zip(weights[1:], grads[1:]):
            torch.mm(g, w)

    step()
    start = time.perf_counter()
    for _ in range(math.ceil(n / batch)):
        step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-experiments", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per loop; the best counts")
    args = parser.parse_args()
    load_dataset("mnist", "cpu")  # read once, outside the timings
    params = count_params(mlp(784, HIDDEN, 10))
    rate = matmul_rate()
    bound = 6 * params * 60_000 / rate
    print(f"threads {torch.get_num_threads()}, params {params:,}, fp32 matmul {rate / 1e9:.1f} GFLOP/s, "
          f"compute bound for one epoch {bound:.3f} s")
    for batch in (64, 1024):
        ours = best_epoch(project_epoch, batch, args.repeats)
        plain = best_epoch(dataloader_epoch, batch, args.repeats)
        print(f"batch {batch:5d}: phenolab {ours:.3f} s  DataLoader {plain:.3f} s  "
              f"speed-up {plain / ours:.1f}x  phenolab / compute bound {ours / bound:.2f}x  "
              f"matrix products alone {gemm_epoch(batch):.3f} s")
    if not args.skip_experiments:
        for name in ("function-fit", "task-fit"):
            print(f"{name} at defaults: {timed(name, {})[0]:.1f} s wall")


if __name__ == "__main__":
    main()
