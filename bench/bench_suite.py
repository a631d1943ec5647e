"""What the whole of HW1 costs on this machine, for planning a run of it.

Suite (`--modes`, default all three): `phenolab run hw1 --preset quick` — the command a user
types, in a subprocess — in fresh stores: `cold` with `reuse=false` (every model trained),
`models` as is (a model that an earlier experiment of the suite trained with the same training
key is loaded instead: sharpness loads sensitivity's), then `job`, the identical command again
on the `models` store (the finished job answers at once). Per experiment from its nested run's
start and end, the total as the command's wall time (start-up included).

Course defaults (`--defaults`): each experiment alone at its defaults (`reuse=false`, in a
fresh store, in a subprocess killed after `--limit` seconds), timed; then, when it finished,
once more under torch's FlopCounterMode for its FLOP count (matmuls and convolutions, vmap'd
ones included: the work that bounds it), and its compute bound = FLOPs / the fp32 matmul rate
measured here. A run stops starting experiments when `--budget` seconds are spent.

The cores, torch's threads and the load average (before and after) are printed with the figures.

    PHENOLAB_DATA_DIR=../shared/data .venv/bin/python bench/bench_suite.py [--preset quick]
        [--modes cold,models,job] [--defaults] [--device cpu|cuda] [--limit 3600]
        [--budget SECONDS] [--experiments a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# mode → (the store it runs in, extra `phenolab run` arguments); run in this order
MODES = {"cold": ("cold", ["--set", "reuse=false"]), "models": ("warm", []), "job": ("warm", [])}
LABELS = {"cold": "cold (reuse=false)", "models": "models reused", "job": "identical again"}


def phenolab(home: Path, args: list[str], timeout: float | None = None) -> tuple[float, int]:
    """`phenolab ARGS` in the store under `home`: (wall seconds, exit code; 124 when killed)."""
    env = {**os.environ, "PHENOLAB_HOME": str(home),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = 124
    return time.perf_counter() - start, code


def nested_times(home: Path) -> dict[str, tuple[float, str]]:
    """{experiment: (seconds, status)} of the newest hw1 run in the store."""
    from mlflow.tracking import MlflowClient

    from service.report import runs_under

    mlflow = MlflowClient(f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    found = mlflow.get_experiment_by_name("hw1")
    if found is None:
        return {}
    [suite] = mlflow.search_runs([found.experiment_id], "tags.`phenolab.kind` = 'job'",
                                 max_results=1, order_by=["attributes.start_time DESC"])
    return {run.data.tags["phenolab.experiment"]:
            (((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000, run.info.status)
            for run in runs_under(mlflow, suite)}


def suite_table(preset: str, modes: list[str], experiments: list[str], root: Path) -> None:
    args = ["run", "hw1", "--preset", preset,
            *(["--set", f"experiments={json.dumps(experiments)}"] if experiments else [])]
    columns: dict[str, dict[str, tuple[float, str]]] = {}
    totals: dict[str, tuple[float, int]] = {}
    for mode in modes:
        store, extra = MODES[mode]
        (root / store / "mlruns").mkdir(parents=True, exist_ok=True)
        totals[mode] = phenolab(root / store, [*args, *extra])
        columns[mode] = nested_times(root / store) if mode != "job" else {}
    names = list(next((c for c in columns.values() if c), {}))
    print(f"\nhw1 --preset {preset}: seconds per experiment (its nested run), status if not FINISHED")
    print(f"{'experiment':20s}" + "".join(f"{LABELS[m]:>22s}" for m in modes))
    for name in names:
        cells = []
        for mode in modes:
            seconds, status = columns[mode].get(name, (None, ""))
            cells.append("—" if seconds is None else
                         f"{seconds:.1f}" + ("" if status == "FINISHED" else f" {status}"))
        print(f"{name:20s}" + "".join(f"{c:>22s}" for c in cells))
    ends = [f"{seconds:.1f}" + ("" if code == 0 else f" exit {code}") for seconds, code in totals.values()]
    print(f"{'total (wall)':20s}" + "".join(f"{e:>22s}" for e in ends))
    print("(total: the command's wall time, Python's start-up and the report included)")


def matmul_rate(device: str, n: int = 2048, repeats: int = 10) -> float:
    """fp32 FLOP/s of an n×n matmul on `device`, the best of `repeats` (after a warm-up)."""
    import torch

    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def count(name: str, device: str) -> None:
    """(In a subprocess) run `name` at its defaults under FlopCounterMode; print JSON."""
    from torch.utils.flop_counter import FlopCounterMode

    import experiments

    with tempfile.TemporaryDirectory() as home:
        os.makedirs(f"{home}/mlruns")
        os.environ.update(PHENOLAB_HOME=home, MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlruns/mlflow.db")
        with FlopCounterMode(display=False) as counter:
            experiments.run(name, {"reuse": False, "device": device})
    print(json.dumps({"flops": counter.get_total_flops()}))


def defaults_table(names: list[str], device: str, limit: float, budget: float, root: Path) -> None:
    rate = matmul_rate(device)
    print(f"\ncourse defaults on {device}: fp32 matmul rate {rate / 1e9:.1f} GFLOP/s (2048², best of 10)")
    print(f"{'experiment':20s}{'GFLOP':>12s}{'bound s':>10s}{'measured s':>12s}{'ratio':>8s}")
    spent = time.monotonic()
    for name in names:
        if time.monotonic() - spent > budget:
            print(f"{name:20s}   not started: the budget of {budget:.0f} s is spent")
            continue
        home = root / f"defaults-{name}"
        (home / "mlruns").mkdir(parents=True)
        seconds, code = phenolab(home, ["run", name, "--set", "reuse=false", "--set",
                                        f"device={device}"], timeout=limit)
        if code != 0:
            measured = f"> {limit:.0f}" if code == 124 else f"exit {code}"
            print(f"{name:20s}{'—':>12s}{'—':>10s}{measured:>12s}")
            continue
        try:
            counted = subprocess.run([sys.executable, __file__, "--count", name, "--device", device],
                                     capture_output=True, text=True, timeout=limit, cwd=ROOT, check=True)
            flops = json.loads(counted.stdout.strip().splitlines()[-1])["flops"]
        except (subprocess.SubprocessError, ValueError, IndexError):
            print(f"{name:20s}{'?':>12s}{'?':>10s}{seconds:>12.1f}  (FLOP count not finished)")
            continue
        bound = flops / rate
        print(f"{name:20s}{flops / 1e9:>12.1f}{bound:>10.1f}{seconds:>12.1f}{seconds / bound:>7.0f}×")
    print("(bound: its FLOPs at that rate; measured: its run in a subprocess, start-up included)")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick")
    p.add_argument("--modes", default="cold,models,job", help="of: cold, models, job; 'none'")
    p.add_argument("--defaults", action="store_true", help="also each experiment at the defaults")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=float, default=3600, help="seconds one default run may take")
    p.add_argument("--budget", type=float, default=float("inf"), help="seconds for all of them")
    p.add_argument("--experiments", default="", help="a subset, comma-separated")
    p.add_argument("--count", help=argparse.SUPPRESS)  # internal: one FLOP count, in a subprocess
    args = p.parse_args()
    if args.count:
        return count(args.count, args.device)
    import torch

    from experiments.suite import HW1_EXPERIMENTS

    names = [n for n in args.experiments.split(",") if n] or list(HW1_EXPERIMENTS)
    print(f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"load average {load()} (1 / 5 / 15 min) at the start")
    with tempfile.TemporaryDirectory() as tmp:
        modes = [m for m in args.modes.split(",") if m in MODES]
        if modes:
            suite_table(args.preset, modes, [n for n in args.experiments.split(",") if n], Path(tmp))
        if args.defaults:
            defaults_table(names, args.device, args.limit, args.budget, Path(tmp))
    print(f"load average {load()} at the end")


if __name__ == "__main__":
    main()
