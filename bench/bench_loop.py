"""One MNIST epoch of a 784-256-256-256-10 MLP through Phenolab's loop vs a plain torchvision
DataLoader loop (same process, same model, plain SGD), against the compute bound
6 × parameters × samples FLOP at the fp32 matmul rate measured here; then the wall time of
`function-fit` and `task-fit` at their default sizes.

    PHENOLAB_DATA_DIR=../shared/data .venv/bin/python bench/bench_loop.py [--skip-experiments]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import experiments
from experiments.data import data_dir, load_dataset
from experiments.models import count_params, mlp
from experiments.train import TrainSpec, seeded, train

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


def project_epoch(batch: int) -> float:
    data = load_dataset("mnist", "cpu").train
    models = seeded(lambda: mlp(784, HIDDEN, 10), [0], "cpu")
    start = time.perf_counter()
    train(models, data, TrainSpec(optimizer="sgd", lr=LR, batch_size=batch, epochs=1), seeds=[0])
    return time.perf_counter() - start


def dataloader_epoch(batch: int) -> float:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = DataLoader(datasets.MNIST(data_dir(), train=True, transform=transform),
                        batch_size=batch, shuffle=True)
    torch.manual_seed(0)
    model = mlp(784, HIDDEN, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def experiment_wall_time(name: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["PHENOLAB_HOME"] = tmp
        start = time.perf_counter()
        experiments.run(name, {})
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-experiments", action="store_true")
    args = parser.parse_args()
    load_dataset("mnist", "cpu")  # read once, outside the timings
    params = count_params(mlp(784, HIDDEN, 10))
    rate = matmul_rate()
    bound = 6 * params * 60_000 / rate
    print(f"threads {torch.get_num_threads()}, params {params:,}, fp32 matmul {rate / 1e9:.1f} GFLOP/s, "
          f"compute bound for one epoch {bound:.3f} s")
    for batch in (64, 1024):
        ours, plain = project_epoch(batch), dataloader_epoch(batch)
        print(f"batch {batch:5d}: phenolab {ours:.3f} s  DataLoader {plain:.3f} s  "
              f"speed-up {plain / ours:.1f}x  phenolab / compute bound {ours / bound:.2f}x")
    if not args.skip_experiments:
        for name in ("function-fit", "task-fit"):
            print(f"{name} at defaults: {experiment_wall_time(name):.1f} s wall")


if __name__ == "__main__":
    main()
