"""What seeds cost: k seeds of one model trained as one vmap ensemble (what every experiment does)
vs the same k trainings one after the other, through the project's loop, on two shapes — the
1-D fit of function-fit (1-190-1, full batch) and the MNIST MLP of task-fit/param-count
(784-256-10, batch 128). Each timing is the best of `--repeats`; the cores, the threads and
the load average are printed with the figures.

    PHENOLAB_DATA_DIR=../shared/data .venv/bin/python bench/bench_seeds.py [--seeds 3]
        [--function-epochs 2000] [--mnist-epochs 1] [--train-subset 10000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from experiments.core.data import Split, load_dataset, target_function
from experiments.core.models import mlp
from experiments.core.train import TrainSpec, seeded, train


def best_of(repeats: int, work: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def compare(label: str, build: Callable[[], nn.Module], data: Split, spec: TrainSpec, seeds: int,
            repeats: int) -> None:
    ids = list(range(seeds))

    def together() -> None:
        train(seeded(build, ids, "cpu"), data, spec, seeds=ids)

    def one_by_one() -> None:
        for seed in ids:
            train(seeded(build, [seed], "cpu"), data, spec, seeds=[seed])

    joint, apart = best_of(repeats, together), best_of(repeats, one_by_one)
    print(f"{label}: {seeds} seeds as one ensemble {joint:6.2f} s, one after the other {apart:6.2f} s, "
          f"speed-up {apart / joint:.2f}x  (load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--function-epochs", type=int, default=2000)
    p.add_argument("--mnist-epochs", type=int, default=1)
    p.add_argument("--train-subset", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    fit = target_function("sinc", 256, (0.0, 1.0))
    compare("function-fit 1-190-1, full batch", lambda: mlp(1, [190], 1), fit,
            TrainSpec(optimizer="adam", lr=1e-3, epochs=args.function_epochs, loss="mse", eval_every=100),
            args.seeds, args.repeats)
    mnist = load_dataset("mnist", "cpu", args.train_subset).train
    compare("MNIST 784-256-10, batch 128", lambda: mlp(784, [256], 10), mnist,
            TrainSpec(optimizer="adam", lr=1e-3, batch_size=128, epochs=args.mnist_epochs),
            args.seeds, args.repeats)


if __name__ == "__main__":
    main()
