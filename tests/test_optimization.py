"""HW1-2 Optimization: the measures on cases with known answers (quadratics, a linear fit),
and each experiment end to end on a tiny config, read back from MLflow."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from findings_readback import findings_json
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

import experiments
from experiments.core import measures
from experiments.core.context import RunContext
from experiments.core.curvature import classify
from experiments.core.data import Split
from experiments.core.models import count_params, mlp
from experiments.core.train import StepRecords, TrainSpec, intra_op_threads, seeded, train
from experiments.gradient_norm.experiment import orders_fallen
from experiments.minimal_ratio.config import HANDOVER_EVERY
from experiments.minimal_ratio.experiment import (
    HandOver,
    descend,
    finding,
    levenberg_marquardt,
    minimize_grad_norm,
    newton,
    rank_correlations,
    residual_functions,
)
from experiments.weight_trajectory.experiment import first_layer, separation


def quadratic(a: torch.Tensor, b: torch.Tensor):
    """L(θ) = ½ θᵀAθ + bᵀθ: Hessian A, gradient Aθ + b, critical point −A⁻¹b."""
    return lambda theta: 0.5 * theta @ a @ theta + b @ theta


def rotated(diagonal: list[float], seed: int = 0) -> torch.Tensor:
    """Q diag(d) Qᵀ with a random orthogonal Q: a symmetric matrix with eigenvalues d."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(diagonal), len(diagonal), generator=generator,
                                       dtype=torch.float64))
    return q @ torch.diag(torch.tensor(diagonal, dtype=torch.float64)) @ q.T


def _children(client: MlflowClient, run_id: str) -> dict[str, object]:
    parent = client.get_run(run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return {r.info.run_name: r for r in runs}


def _figures(client: MlflowClient, run_id: str) -> dict[str, int]:
    return {f.path: f.file_size for f in client.list_artifacts(run_id, "figures")}


def _csv(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> list[dict[str, str]]:
    with open(client.download_artifacts(run_id, path, str(tmp_path))) as f:
        return list(csv.DictReader(f))


# --- minimal-ratio: the measures --------------------------------------------------------------

def test_hessian_of_a_quadratic_is_its_matrix_at_every_point() -> None:
    a = rotated([3.0, 1.0, -2.0, 0.5])
    b = torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=torch.float64)
    thetas = torch.randn(3, 4, dtype=torch.float64)
    h = measures.hessian(quadratic(a, b), thetas)
    assert h.shape == (3, 4, 4)
    torch.testing.assert_close(h, a.expand(3, 4, 4))
    torch.testing.assert_close(measures.eigenvalues(h[0]),
                               torch.tensor([-2.0, 0.5, 1.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(measures.gradient_norm(quadratic(a, b), thetas),
                               (thetas @ a + b).norm(dim=1))


@pytest.mark.parametrize(("diagonal", "ratio"), [([1.0, 2.0, 3.0, 4.0], 1.0),
                                                 ([1.0, 2.0, 3.0, -1.0], 0.75),
                                                 ([1.0, -2.0, 3.0, -4.0], 0.5),
                                                 ([-1.0, -2.0, -3.0, -4.0], 0.0)])
def test_minimal_ratio_is_the_fraction_of_positive_hessian_eigenvalues(diagonal: list[float],
                                                                      ratio: float) -> None:
    loss = quadratic(rotated(diagonal), torch.zeros(4, dtype=torch.float64))
    eigs = measures.eigenvalues(measures.hessian(loss, torch.zeros(4, dtype=torch.float64)))
    kinds = classify(eigs)  # no eigenvalue near 0: the strict and the significant ratio agree
    assert kinds.strict_ratio.item() == kinds.significant_ratio.item() == ratio
    assert kinds.flat.item() == 0


def test_a_flat_direction_counts_in_the_course_ratio_only() -> None:
    """diag(2, 1, −1, 0) rotated: its computed 0 is ±rounding, so the strict fraction > 0 is 2/4
    or 3/4 by chance, while 2 of the 3 significant eigenvalues are positive, whatever the sign
    of the noise."""
    loss = quadratic(rotated([2.0, 1.0, -1.0, 0.0], seed=4), torch.zeros(4, dtype=torch.float64))
    eigs = measures.eigenvalues(measures.hessian(loss, torch.zeros(4, dtype=torch.float64)))
    kinds = classify(eigs)
    assert (kinds.positive.item(), kinds.negative.item(), kinds.flat.item()) == (2, 1, 1)
    assert kinds.significant_ratio.item() == 2 / 3
    assert kinds.strict_ratio.item() == (eigs > 0).double().mean().item()


def test_rank_correlations_by_the_closed_form_and_without_all_flat_spectra() -> None:
    """ρ = 1 − 6Σd²/(n(n² − 1)): 12 ranks swapped in pairs (d² = 1 each) give 1 − 72/1716; a NaN
    ratio (every eigenvalue flat) is left out, and the 11 others fall monotonically."""
    loss = torch.logspace(-6, 0, 12, dtype=torch.float64)
    significant = torch.linspace(1.0, 0.5, 12, dtype=torch.float64)
    significant[-1] = float("nan")
    strict = torch.tensor([2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11], dtype=torch.float64) / 12
    found = {"point_loss": loss, "significant_ratio": significant, "minimal_ratio": strict}
    correlations = rank_correlations(found, seed=0)
    assert correlations["spearman_loss_significant_ratio"] == pytest.approx(-1.0)
    assert correlations["spearman_loss_minimal_ratio"] == pytest.approx(1 - 72 / 1716)
    low, high = (correlations[f"spearman_loss_minimal_ratio_{end}"] for end in ("low", "high"))
    assert 0.0 < low <= high <= 1.0


def test_the_dauphin_finding_uses_the_points_that_reached_the_threshold_only() -> None:
    loss = torch.logspace(-6, 0, 12, dtype=torch.float64)
    ratio = torch.linspace(1.0, 0.5, 12, dtype=torch.float64)  # lower loss, higher ratio
    everyone = finding("levenberg_marquardt", {"point_loss": loss, "significant_ratio": ratio,
                                               "reached": torch.ones(12, dtype=torch.float64)}, 0)
    assert everyone.value == pytest.approx(-1.0) and everyone.verdict == "holds"
    assert everyone.key == "loss_ratio_levenberg_marquardt" and everyone.expect == "below"
    reached = torch.zeros(12, dtype=torch.float64)
    reached[:2] = 1.0
    two = finding("grad_norm", {"point_loss": loss, "significant_ratio": ratio, "reached": reached}, 0)
    assert two.verdict == "inconclusive" and "only 2 repetitions" in two.details["reason"]


def test_handover_stops_each_model_at_the_first_check_below_its_level() -> None:
    """Full-batch SGD on a line fit from two seeds: each model leaves at the first multiple of
    HANDOVER_EVERY steps whose last step's gradient norm (recorded beside) is below the level."""
    x = torch.linspace(0, 1, 16, dtype=torch.float64).unsqueeze(1)
    data = Split(x, 2 * x - 1)
    models = [m.double() for m in seeded(lambda: mlp(1, [], 1), [0, 1], "cpu")]
    records = StepRecords(["grad_norm"])
    results = train(models, data, TrainSpec(optimizer="sgd", lr=0.1, epochs=300, loss="mse",
                                            eval_every=HANDOVER_EVERY),
                    seeds=[0, 1], hooks=[records, HandOver(0.05)])
    for result in results:
        norms = result.steps["grad_norm"]
        first = next(step for step in range(HANDOVER_EVERY, 301, HANDOVER_EVERY)
                     if norms[step - 1] < 0.05)
        assert result.status == "stopped" and result.stop_step == first == len(norms)


def test_sampling_minimal_ratio_at_a_minimum_a_maximum_and_a_known_saddle() -> None:
    zero = torch.zeros(3, dtype=torch.float64)
    minimum = quadratic(rotated([1.0, 2.0, 3.0]), zero)
    assert measures.sampling_minimal_ratio(minimum, zero, samples=200).item() == 1.0
    maximum = quadratic(-torch.eye(3, dtype=torch.float64), zero)
    assert measures.sampling_minimal_ratio(maximum, zero, samples=200).item() == 0.0
    # L = ½(x² + y² − z²) rises where z² < x² + y², i.e. |z| < 1/√2 on the unit sphere, where z is
    # uniform on [−1, 1] (Archimedes): a fraction 1/√2 of the directions
    saddle = quadratic(torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)), zero)
    ratio = measures.sampling_minimal_ratio(saddle, zero, samples=20_000, radius=0.1)
    assert abs(ratio.item() - 1 / math.sqrt(2)) < 0.015
    stacked = measures.sampling_minimal_ratio(saddle, torch.zeros(2, 3, dtype=torch.float64),
                                              samples=500)
    assert stacked.shape == (2,)


def test_flat_loss_and_hessian_of_a_line_fit_are_the_closed_form_mse_ones() -> None:
    """y = w·x + b under L = mean((w·x + b − y)²): ∇²L = (2/n)·[[Σx², Σx], [Σx, n]] at every θ."""
    x = torch.linspace(-1, 2, 7, dtype=torch.float64).unsqueeze(1)
    data = Split(x, 3 * x - 1)
    line = mlp(1, [], 1).double()
    layout = measures.FlatLayout(line)
    theta = torch.tensor([0.5, 2.0], dtype=torch.float64)
    assert layout.names == ["1.weight", "1.bias"]  # θ = (w, b)
    torch.testing.assert_close(layout.flatten(layout.unflatten(theta)), theta)
    loss = measures.flat_loss(line, data, "mse")
    torch.testing.assert_close(loss(theta), (0.5 * x + 2.0 - data.y).pow(2).mean())
    n, sx, sxx = len(x), x.sum(), x.pow(2).sum()
    expected = 2 / n * torch.stack([torch.stack([sxx, sx]), torch.stack([sx, x.new_tensor(n)])])
    torch.testing.assert_close(measures.hessian(loss, theta), expected)
    torch.testing.assert_close(measures.gradient_norm(loss, torch.tensor([3.0, -1.0]).double()),
                               torch.tensor(0.0, dtype=torch.float64))  # the exact fit


def test_minimal_ratio_config_rejects_absurd_values() -> None:
    from pydantic import ValidationError

    from experiments.minimal_ratio.config import Config

    for bad in ({"methods": ["newton", "newton"]}, {"methods": []}, {"repetitions": 0},
                {"repetitions": 10**6}, {"grad_threshold": 0.0}, {"samples": 1},
                {"hidden": [6] * 9}, {"hidden": [8192]}, {"hidden": [22, 22], "repetitions": 1000},
                {"grad_norm_steps": 100_001}, {"eigen_tol": 1e-6},
                {"handover": 1e-3, "grad_threshold": 1e-3}):
        with pytest.raises(ValidationError):
            Config(**bad)
    assert Config(methods=["newton", "levenberg_marquardt"]).methods == ["newton",
                                                                          "levenberg_marquardt"]
    for hidden in ([6, 6], [20, 20], [3]):  # the bound counts parameters as torch does
        assert Config(hidden=hidden).n_params == count_params(mlp(1, hidden, 1))


# --- minimal-ratio: reaching a point of zero gradient -----------------------------------------

def test_newton_jumps_to_the_critical_point_of_a_quadratic_even_a_saddle() -> None:
    a = rotated([2.0, -1.0, 0.5])
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    start = torch.randn(4, 3, dtype=torch.float64)
    after, norm = newton(quadratic(a, b))(start, torch.arange(4))
    torch.testing.assert_close(after, (-torch.linalg.solve(a, b)).expand(4, 3))
    torch.testing.assert_close(norm, (start @ a + b).norm(dim=1))


def test_minimizing_the_gradient_norm_drives_it_towards_zero() -> None:
    a = rotated([2.0, -1.0, 0.5])
    loss = quadratic(a, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    theta = torch.randn(2, 3, dtype=torch.float64)
    first = measures.gradient_norm(loss, theta)
    update = minimize_grad_norm(loss, lr=0.05)
    for _ in range(300):
        theta, _ = update(theta, torch.arange(2))
    assert (measures.gradient_norm(loss, theta) < first / 20).all()


def test_gradient_norm_steps_are_torch_adam_steps_per_model() -> None:
    loss = quadratic(rotated([2.0, -1.0, 0.5]), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    start = torch.randn(2, 3, dtype=torch.float64)
    param = start[1].clone().requires_grad_()
    adam = torch.optim.Adam([param], lr=0.05)
    update = minimize_grad_norm(loss, lr=0.05)
    theta = start.clone()
    theta, _ = update(theta, torch.arange(2))
    for _ in range(4):  # model 0 is done: only model 1 (row 1) goes on
        theta[1:], _ = update(theta[1:], torch.tensor([1]))
    for _ in range(5):
        adam.zero_grad()
        torch.func.grad(loss)(param).pow(2).sum().backward()
        adam.step()
    torch.testing.assert_close(theta[1], param.detach())


def test_descend_stops_each_model_once_its_gradient_norm_is_below_the_threshold() -> None:
    a = rotated([2.0, -1.0, 0.5])
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    critical = -torch.linalg.solve(a, b)
    start = torch.stack([critical, critical + 1.0, critical - 2.0])
    theta, steps = descend(newton(quadratic(a, b)), start, 10, 1e-9, RunContext(), check_every=1)
    assert steps.tolist() == [0, 1, 1]  # already there; one Newton step each
    torch.testing.assert_close(theta, critical.expand(3, 3))
    assert torch.equal(theta[0], critical)


def test_levenberg_marquardt_fits_a_line_with_the_exact_jacobian() -> None:
    x = torch.linspace(0, 1, 9, dtype=torch.float64).unsqueeze(1)
    data = Split(x, 2 * x + 1)
    line = mlp(1, [], 1).double()  # y = w·x + b: θ = (w, b)
    residuals, jacobian = residual_functions(line, data)
    theta = torch.tensor([0.5, -1.0], dtype=torch.float64)
    torch.testing.assert_close(residuals(theta), 0.5 * x[:, 0] - 1 - data.y[:, 0])
    torch.testing.assert_close(jacobian(theta), torch.cat([x, torch.ones_like(x)], 1))
    update = levenberg_marquardt(residuals, jacobian, damping=1e-3)
    thetas = theta.expand(2, 2).clone()
    for _ in range(10):
        thetas, norm = update(thetas, torch.arange(2))
    torch.testing.assert_close(thetas, torch.tensor([[2.0, 1.0]] * 2, dtype=torch.float64))
    assert (norm < 1e-6).all()


def test_intra_op_threads_sets_the_count_inside_and_restores_it() -> None:
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(1):
        raise RuntimeError("the count comes back on errors too")
    assert torch.get_num_threads() == before


# --- minimal-ratio: end to end -----------------------------------------------------------------

TINY_RATIO = {"repetitions": 4, "epochs": 100, "n_points": 64, "grad_norm_steps": 20,
              "second_order_steps": 10, "samples": 50}


def _rebuilt(client: MlflowClient, run_id: str, tmp: Path) -> tuple[dict, dict, torch.nn.Module]:
    """A method child's stacked points (safetensors) and their description (JSON), and the net
    rebuilt from it with plain torch, in float64."""
    local = Path(client.download_artifacts(run_id, "weights", str(tmp)))
    described = json.loads((local / "points.json").read_text())
    layers = [dict(d) for d in described["architecture"]]
    model = torch.nn.Sequential(*(getattr(torch.nn, d.pop("type"))(**d) for d in layers)).double()
    return load_file(local / "points.safetensors"), described, model


def _plain_loss(model: torch.nn.Module, layout: list, x: torch.Tensor, y: torch.Tensor):
    """θ [P] ↦ mean((f(x; θ) − y)²), θ cut into the parameters in the saved layout."""
    sizes = [math.prod(shape) for _, shape in layout]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {name: part.view(shape) for (name, shape), part in zip(layout, theta.split(sizes))}
        return (torch.func.functional_call(model, params, (x,)) - y).pow(2).mean()

    return loss


def test_minimal_ratio_logs_every_repetition_per_method(store: str, tmp_path: Path) -> None:
    run_id = experiments.run("minimal-ratio", TINY_RATIO, preset="quick")
    client = MlflowClient(store)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "phase1_loss")) == 4
    assert all(m.value % HANDOVER_EVERY == 0 and 0 < m.value <= 100
               for m in client.get_metric_history(run_id, "phase1_steps"))
    assert "n = 61" in parent.data.tags["eigen_tolerance_rule"]
    children = _children(client, run_id)
    assert children.keys() == {"grad_norm", "levenberg_marquardt"}
    for method, child in children.items():
        child_id = child.info.run_id
        assert child.data.params["n_params"] == "61"  # 1-6-6-1
        rows = _csv(client, child_id, "tables/repetitions.csv", tmp_path / f"{method}-r")
        eig_rows = _csv(client, child_id, "tables/eigenvalues.csv", tmp_path / method)
        assert [int(r["repetition"]) for r in rows] == [int(r["repetition"]) for r in eig_rows]
        assert [int(r["repetition"]) for r in rows] == [0, 1, 2, 3]
        history = {key: {m.step: m.value for m in client.get_metric_history(child_id, key)}
                   for key in ("minimal_ratio", "significant_ratio", "point_loss")}
        for row, eig_row in zip(rows, eig_rows):
            eigs = torch.tensor([float(eig_row[f"eig_{j}"]) for j in range(61)], dtype=torch.float64)
            assert eigs.tolist() == sorted(eigs.tolist())
            tol = float(row["eigen_tolerance"])
            assert tol == pytest.approx(100 * 61 * torch.finfo(torch.float64).eps * eigs.abs().max().item())
            positive, negative = int((eigs > tol).sum()), int((eigs < -tol).sum())
            assert (float(row["positive_eigenvalues"]), float(row["negative_eigenvalues"]),
                    float(row["flat_eigenvalues"])) == (positive, negative, 61 - positive - negative)
            rep = int(row["repetition"])
            assert history["significant_ratio"][rep] == pytest.approx(positive / (positive + negative))
            assert history["minimal_ratio"][rep] == pytest.approx(float((eigs > 0).sum()) / 61)
            assert history["point_loss"][rep] == pytest.approx(float(row["point_loss"]))
        assert parent.data.metrics[f"{method}.n_reached"] == sum(float(r["reached"]) for r in rows)
        assert parent.data.tags[f"finding/loss_ratio_{method}"] in {"holds", "does not hold",
                                                                     "inconclusive"}
        # every number recomputes from the saved points with plain torch
        points, described, model = _rebuilt(client, child_id, tmp_path / f"{method}-w")
        assert points["final"].shape == points["start"].shape == (4, 61)
        assert described["seeds"] == [int(r["seed"]) for r in rows]
        loss = _plain_loss(model, described["layout"], points["x"], points["y"])
        for row, eig_row in zip(rows, eig_rows):
            rep = int(row["repetition"])
            final, start = points["final"][rep], points["start"][rep]
            assert loss(final).item() == pytest.approx(float(row["point_loss"]), rel=1e-10)
            assert torch.func.grad(loss)(final).norm().item() == pytest.approx(float(row["grad_norm"]),
                                                                                rel=1e-8)
            assert (final - start).norm().item() == pytest.approx(float(row["phase2_distance"]), abs=1e-12)
            assert (final != start).any().item() == (float(row["phase2_steps"]) > 0)
            exact = torch.linalg.eigvalsh(torch.func.hessian(loss)(final))
            logged = torch.tensor([float(eig_row[f"eig_{j}"]) for j in range(61)], dtype=torch.float64)
            torch.testing.assert_close(exact, logged, rtol=0, atol=1e-9 * exact.abs().max().item())
    figures = _figures(client, run_id)
    assert figures.keys() == {"figures/minimal_ratio_vs_loss.png"}
    assert min(figures.values()) > 10_000


# --- gradient-norm ------------------------------------------------------------------------------

def test_recorded_gradient_norm_is_that_of_the_mean_batch_loss_by_hand() -> None:
    """One full-batch step of y = w·x + b on MSE: ∂L/∂w = 2·mean(r·x), ∂L/∂b = 2·mean(r) with
    r = w·x + b − y, at the weights before the step; two models trained as one ensemble each
    get their own."""
    x = torch.tensor([[0.0], [1.0], [2.0]])
    data = Split(x, 3 * x - 1)
    models = seeded(lambda: mlp(1, [], 1), [0, 1], "cpu")
    expected = []
    for model in models:
        w, b = model[1].weight.item(), model[1].bias.item()
        r = w * x[:, 0] + b - data.y[:, 0]
        expected.append(math.hypot(2 * (r * x[:, 0]).mean().item(), 2 * r.mean().item()))
        expected_loss = r.pow(2).mean().item()
    results = train(models, data, TrainSpec(optimizer="sgd", lr=0.01, epochs=1, loss="mse"), seeds=[0, 1],
                    hooks=[StepRecords(("step_loss", "grad_norm"))])
    assert [r.steps["grad_norm"][0] for r in results] == pytest.approx(expected, rel=1e-5)
    assert results[1].steps["step_loss"][0] == pytest.approx(expected_loss, rel=1e-5)


def test_orders_fallen_compares_the_median_norms_of_the_first_and_last_twentieth() -> None:
    norms = [100.0] * 20 + [5.0] * 60 + [1.0] * 20  # windows of 100 // 20 = 5 iterations
    assert orders_fallen(norms) == pytest.approx(2.0)
    assert orders_fallen([3.0]) == 0.0  # one iteration: the window is that iteration


def test_gradient_norm_logs_every_iteration_of_both_tasks(store: str, mnist_dir: Path,
                                                          tmp_path: Path) -> None:
    run_id = experiments.run("gradient-norm", {"function_steps": 120, "mnist_steps": 30,
                                               "train_subset": 500, "n_points": 64,
                                               "function_hidden": [16], "mnist_hidden": [16]},
                             preset="quick")
    client = MlflowClient(store)
    children = _children(client, run_id)
    tasks = {"function": ("function: sinc", 120), "mnist": ("mnist", 30)}
    assert children.keys() == {f"{name} seed{s}" for name, _ in tasks.values() for s in (0, 1)}
    parent = client.get_run(run_id).data
    findings = findings_json(client, run_id, tmp_path)
    for key, (name, steps) in tasks.items():
        fallen = []
        for seed in (0, 1):
            child_id = children[f"{name} seed{seed}"].info.run_id
            for metric in ("grad_norm", "step_loss"):
                history = client.get_metric_history(child_id, metric)
                assert sorted(m.step for m in history) == list(range(1, steps + 1))
                assert all(m.value > 0 and math.isfinite(m.value) for m in history)
            norms = [m.value for m in sorted(client.get_metric_history(child_id, "grad_norm"),
                                             key=lambda m: m.step)]
            fallen.append(orders_fallen(norms))
            assert children[f"{name} seed{seed}"].data.metrics["grad_norm_orders_fallen"] == \
                pytest.approx(fallen[-1], rel=1e-4)
        assert parent.metrics[f"mean/{name}/grad_norm_orders_fallen"] == pytest.approx(
            sum(fallen) / 2, rel=1e-4)
        finding = findings[f"grad_norm_falls_{key}"]
        assert finding["null"] == 1.0 and finding["expect"] == "above"
        assert finding["value"] == pytest.approx(sum(fallen) / 2, rel=1e-4)
    mnist_losses = sorted(client.get_metric_history(children["mnist seed0"].info.run_id,
                                                    "step_loss"), key=lambda m: m.step)
    assert mnist_losses[0].value == pytest.approx(math.log(10), rel=0.2)  # chance at the start
    assert mnist_losses[-1].value < mnist_losses[0].value
    figures = _figures(client, run_id)
    assert figures.keys() == {"figures/function_grad_norm.png", "figures/mnist_grad_norm.png"}
    assert min(figures.values()) > 10_000


# --- weight-trajectory ----------------------------------------------------------------------------

TINY_TRAJECTORY = {"seeds": 3, "epochs": 4, "collect_every": 2, "train_subset": 300,
                   "test_subset": 200, "hidden": [8], "batch_size": 50}


def test_separation_is_the_mean_ratio_of_final_to_initial_pairwise_distances() -> None:
    initial = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert separation(initial, 3 * initial) == pytest.approx([3.0, 3.0, 3.0])
    final = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # only the third moved
    sqrt5, sqrt2 = 5 ** 0.5, 2 ** 0.5
    assert separation(initial, final) == pytest.approx(
        [(1 + 1 / 2) / 2, (1 + sqrt2 / sqrt5) / 2, (1 / 2 + sqrt2 / sqrt5) / 2])


def test_first_layer_is_the_first_linear_weight_and_bias() -> None:
    assert first_layer(mlp(784, [8, 8], 10)) == ["1.weight", "1.bias"]


def test_weight_trajectory_keeps_snapshots_and_projects_all_points(store: str, mnist_dir: Path,
                                                                   tmp_path: Path) -> None:
    run_id = experiments.run("weight-trajectory", TINY_TRAJECTORY)
    client = MlflowClient(store)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    children = _children(client, run_id)
    assert children.keys() == {"mlp-8 seed0", "mlp-8 seed1", "mlp-8 seed2"}
    initial, ends = {}, []
    for seed in (0, 1, 2):
        name = f"mlp-8 seed{seed}"
        child_id = children[name].info.run_id
        assert children[name].data.params["seed"] == str(seed)
        # epoch 0 is the initial weights, evaluated like every other point
        assert [m.step for m in client.get_metric_history(child_id, "test_acc")] == [0, 1, 2, 3, 4]
        files = [f.path for f in client.list_artifacts(child_id, "snapshots")]
        assert files == [f"snapshots/epoch_{e:04d}.safetensors" for e in (0, 2, 4)]
        weights = load_file(client.download_artifacts(child_id, files[0], str(tmp_path / name)))
        assert weights["1.weight"].shape == (8, 784)
        initial[name] = weights["1.weight"]
        last = load_file(client.download_artifacts(child_id, files[-1], str(tmp_path / name)))
        assert not torch.equal(last["1.weight"], weights["1.weight"])  # it trained
        ends.append([torch.cat([w[k].flatten() for k in sorted(w)]) for w in (weights, last)])
    torch.manual_seed(0)  # seed 0 starts from the init of seed 0
    assert torch.equal(initial["mlp-8 seed0"], mlp(784, [8], 10)[1].weight.detach())
    findings = findings_json(client, run_id, tmp_path)
    apart, similar = findings["events_end_apart"], findings["similar_final_accuracy"]
    assert (apart["null"], apart["expect"]) == (1.0, "above")
    start, end = (torch.stack([e[k] for e in ends]) for k in (0, 1))
    assert apart["value"] == pytest.approx(sum(separation(start, end)) / 3, rel=1e-4)
    accuracies = [children[f"mlp-8 seed{s}"].data.metrics["final_test_acc"] for s in (0, 1, 2)]
    assert (similar["null"], similar["expect"]) == (0.01, "below")
    assert similar["value"] == pytest.approx(float(torch.tensor(accuracies).std()), rel=1e-4)
    assert parent.data.metrics["mean/mlp-8/final_test_acc"] == pytest.approx(sum(accuracies) / 3)
    rows = _csv(client, run_id, "tables/pca_points.csv", tmp_path)
    assert len(rows) == 9  # 3 events × epochs 0, 2, 4
    for view in ("first_layer", "whole_model"):
        coords = torch.tensor([[float(r[f"{view}_pc1"]), float(r[f"{view}_pc2"])] for r in rows])
        torch.testing.assert_close(coords.mean(0), torch.zeros(2), atol=1e-4, rtol=0)  # centred
        assert coords[:, 0].var() >= coords[:, 1].var()  # PC 1 explains the most
    assert 0 < parent.data.metrics["whole_model_explained_variance"] <= 1
    figures = _figures(client, run_id)
    assert figures.keys() == {"figures/trajectory_first_layer.png",
                              "figures/trajectory_whole_model.png"}
    assert min(figures.values()) > 10_000


def test_weight_trajectory_config_counts_points_and_rejects_too_many() -> None:
    from pydantic import ValidationError

    from experiments.weight_trajectory.config import Config

    assert Config(**TINY_TRAJECTORY).points == 9  # 3 seeds × epochs 0, 2, 4
    assert Config(seeds=2, epochs=5, collect_every=2).points == 8  # epochs 0, 2, 4, 5
    assert Config().seeds == 8 and Config().points == 8 * 9  # the course: 8 events, epochs 0, 3, …, 24
    with pytest.raises(ValidationError, match="collected points"):
        Config(seeds=16, epochs=1000, collect_every=1)
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        Config(seeds=1, epochs=1001, collect_every=1000)  # few points, yet over the epoch bound
    # 72 points of 784-2048-2048-10 (5,824,522 parameters): 419 M weights held
    with pytest.raises(ValidationError, match="419,365,584 weights held"):
        Config(hidden=[2048, 2048])
    Config(hidden=[1024, 1024])  # 72 × 1,863,690 = 134 M: fits


@pytest.mark.parametrize("field", ["function_steps", "mnist_steps"])
def test_gradient_norm_config_bounds_the_recorded_steps(field: str) -> None:
    """Every step is kept and logged: the bound is 100k, tighter than the shared `Steps`."""
    from pydantic import ValidationError

    from experiments.gradient_norm.config import Config

    assert getattr(Config(**{field: 100_000}), field) == 100_000
    with pytest.raises(ValidationError, match="less than or equal to 100000"):
        Config(**{field: 100_001})

