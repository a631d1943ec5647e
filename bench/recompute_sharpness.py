"""Recompute a sharpness run's λ_max and λ_min from its saved final weights, independently of
`experiments.core.curvature`: each child's weights downloaded through MlflowClient, the net
rebuilt with plain torch (architecture JSON + safetensors) in float64, the Hessian of the mean
cross-entropy over the run's first `measure_subset` training examples applied by its own
`torch.func` Hessian-vector product (forward-over-reverse), and scipy's ARPACK `eigsh` run to a
tolerance 10⁴ times tighter than the run's `eigen_tol`. Prints, per child, the logged and the
recomputed values and their relative difference; exits 1 when one differs by more than 1e-4 or
a logged λ_max is not positive. `--max-only` recomputes λ_max alone (λ_min at a tight tolerance
can take thousands of products on a 10,000-example Hessian).

    MLFLOW_TRACKING_URI=... .venv/bin/python bench/recompute_sharpness.py RUN_ID [--max-only]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from safetensors.torch import load_file
from scipy.sparse.linalg import LinearOperator, eigsh

from experiments.core.data import load_dataset

LIMIT = 1e-4


def rebuild(client: MlflowClient, run_id: str, tmp: Path) -> torch.nn.Module:
    """The child's saved net, float64."""
    (weights,) = Path(client.download_artifacts(run_id, "weights", str(tmp))).glob("*.safetensors")
    layers = json.loads(weights.with_suffix(".json").read_text())["architecture"]
    model = torch.nn.Sequential(*(getattr(torch.nn, d.pop("type"))(**d) for d in layers))
    model.load_state_dict(load_file(weights))
    return model.double().eval()


def hessian_operator(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> LinearOperator:
    """v ↦ ∇²L(θ)v for L = mean cross-entropy over (x, y) at the model's weights θ."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [s.numel() for s in shapes]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = {n: part.view(s) for n, s, part in zip(names, shapes, flat.split(sizes))}
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    grad = torch.func.grad(loss)

    def matvec(v: np.ndarray) -> np.ndarray:
        tangent = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        return torch.func.jvp(grad, (theta,), (tangent,))[1].numpy()

    return LinearOperator((theta.numel(), theta.numel()), matvec=matvec, dtype=np.float64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--max-only", action="store_true", help="recompute λ_max only")
    args = parser.parse_args()
    client = MlflowClient()
    parent = client.get_run(args.run_id)
    params = parent.data.params
    subset = lambda key: None if params.get(key) in (None, "None") else int(params[key])  # noqa: E731
    data = load_dataset(params.get("dataset", "mnist"), "cpu", train_subset=subset("train_subset"),
                        test_subset=subset("test_subset")).train.head(int(params["measure_subset"]))
    x, y = data.x.double(), data.y
    tol = float(params["eigen_tol"]) * 1e-4
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{args.run_id}'")
    worst = 0.0
    print(f"{len(children)} children, {len(x)} examples, eigsh tol {tol:g}")
    print(f"{'child':<28} {'logged λ_max':>14} {'recomputed':>14} {'rel':>9} "
          f"{'logged λ_min':>14} {'recomputed':>14} {'rel':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for child in sorted(children, key=lambda c: c.data.tags.get("mlflow.runName", "")):
            op = hessian_operator(rebuild(client, child.info.run_id, Path(tmp) / child.info.run_id), x, y)
            top = eigsh(op, k=1, which="LA", tol=tol, return_eigenvectors=False)[0]
            bottom = (math.nan if args.max_only else
                      eigsh(op, k=1, which="SA", tol=tol, return_eigenvectors=False)[0])
            logged = child.data.metrics
            rel = [abs(logged["lambda_max"] - top) / abs(top),
                   abs(logged["lambda_min"] - bottom) / abs(bottom)]  # nan with --max-only
            worst = max(worst, *(r for r in rel if not math.isnan(r)),
                        0.0 if logged["lambda_max"] > 0 else np.inf)
            print(f"{child.data.tags.get('mlflow.runName', child.info.run_id):<28} "
                  f"{logged['lambda_max']:>14.8g} {top:>14.8g} {rel[0]:>9.2e} "
                  f"{logged['lambda_min']:>14.8g} {bottom:>14.8g} {rel[1]:>9.2e}")
    print(f"largest relative difference {worst:.2e} (limit {LIMIT:g})")
    return 0 if worst <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
