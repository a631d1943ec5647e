"""HW1-2 timings (issue acceptance): (a) `weight-trajectory`'s training events trained as one
vmap ensemble vs one after the other (`together=false`), same config otherwise — the wall
seconds of the training itself (the run's `train_seconds`) and of the whole run, and the
speed-up; (b) `minimal-ratio` at its defaults (100 repetitions), wall seconds of the whole run
and its per-method summaries and findings (phase-2 steps, ratios, Spearman with its interval).
Each run goes to a throw-away MLflow store. CPU seconds and the load average are printed too:
on a shared machine wall time also measures the neighbours.

    PHENOLAB_DATA_DIR=../shared/data .venv/bin/python bench/bench_optimization.py \
        [--epochs N] [--train-subset N] [--events N] [--hidden W ...] [--repeats N]
        [--threads N]
        [--skip-trajectory] [--skip-minimal-ratio] [--figures DIR]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from timing import timed


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def trajectory(args: argparse.Namespace) -> None:
    config: dict[str, Any] = {"events": args.events}
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.train_subset is not None:
        config["train_subset"] = args.train_subset
    if args.hidden is not None:
        config["hidden"] = args.hidden
    print(f"weight-trajectory, defaults but {config or 'nothing'} ({load()})")
    # a tiny run first pays the one-time costs (imports, first store, first ops) for neither mode
    timed("weight-trajectory", {"events": 2, "epochs": 1, "train_subset": 100,
                                "test_subset": 100, "hidden": [4]})
    results = {}
    for together in (True, False):
        runs = [timed("weight-trajectory", {**config, "together": together},
                      args.figures if together else None) for _ in range(args.repeats)]
        wall, cpu, metrics = min(runs, key=lambda r: r[2]["train_seconds"])  # least disturbed
        results[together] = (metrics["train_seconds"], wall)
        label = "one ensemble" if together else "one by one  "
        print(f"  {label}: training {metrics['train_seconds']:7.1f} s, whole run {wall:7.1f} s "
              f"wall, {cpu:7.1f} s CPU; mean final test acc {metrics['mean_final_test_acc']:.4f}")
    print(f"  speed-up of the ensemble: training {results[False][0] / results[True][0]:.2f}x, "
          f"whole run {results[False][1] / results[True][1]:.2f}x  ({load()})")


def minimal_ratio(args: argparse.Namespace) -> None:
    print(f"minimal-ratio at its defaults ({load()})")
    wall, cpu, metrics = timed("minimal-ratio", {}, args.figures)
    print(f"  100 repetitions: {wall:.1f} s wall, {cpu:.1f} s CPU ({load()})")
    for key in sorted(metrics):
        if "." in key or key.endswith("_seconds") or key.startswith("finding/"):
            print(f"  {key} = {metrics[key]:.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="weight-trajectory epochs")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--events", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1,
                        help="weight-trajectory runs per mode; the fastest training is kept")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="weight-trajectory hidden widths (default: the config's 128 128)")
    parser.add_argument("--skip-trajectory", action="store_true")
    parser.add_argument("--skip-minimal-ratio", action="store_true")
    parser.add_argument("--figures", default=None, help="copy the runs' figures here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for the whole bench (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if not args.skip_trajectory:
        trajectory(args)
    if not args.skip_minimal_ratio:
        minimal_ratio(args)


if __name__ == "__main__":
    main()
