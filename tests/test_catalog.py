"""The catalog as a whole: every experiment follows the folder convention, runs end to end at a
tiny size, and logs only names the glossary defines; the project's modules import no cycle."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

import experiments
from experiments import catalog
from experiments.core.data import load_dataset, target_function

ROOT = Path(__file__).resolve().parent.parent

# Each experiment at a size that runs in seconds (on top of its `quick` preset): what the
# glossary test logs. A new experiment adds its row here.
SMOKE: dict[str, dict] = {
    "function-fit": {"epochs": 20, "n_points": 32, "models": [[8], [4, 4]], "eval_every": 5,
                     "lrs": [1e-3, 1e-2]},
    "task-fit": {"epochs": 1, "train_subset": 300, "test_subset": 200, "param_budget": 20_000},
    "weight-trajectory": {"seeds": 2, "epochs": 2, "collect_every": 1, "train_subset": 200,
                          "test_subset": 100, "hidden": [8], "batch_size": 50},
    "gradient-norm": {"function_steps": 20, "mnist_steps": 10, "train_subset": 200, "n_points": 32,
                      "function_hidden": [8], "mnist_hidden": [8]},
    "minimal-ratio": {"repetitions": 3, "epochs": 50, "n_points": 32, "grad_norm_steps": 10,
                      "second_order_steps": 5, "samples": 20},
    "random-labels": {"epochs": 2, "train_subset": 200, "test_subset": 100, "hidden": [16]},
    "param-count": {"epochs": 1, "train_subset": 200, "test_subset": 100, "widths": [2, 8]},
    "interpolation": {"epochs": 1, "train_subset": 200, "test_subset": 100, "hidden": [16],
                      "eval_subset": 100, "alpha_step": 0.5},
    "sensitivity": {"epochs": 1, "train_subset": 200, "test_subset": 100, "hidden": [16],
                    "measure_subset": 50, "batch_sizes": [32, 200], "jacobian": True},
    "sharpness": {"epochs": 1, "train_subset": 200, "test_subset": 100, "hidden": [16],
                  "measure_subset": 50, "batch_sizes": [32, 200]},
    "weight-init": {"activations": ["tanh"], "variances": [1.0], "steps": 10, "eval_every": 5,
                    "hidden": [8], "train_subset": 200, "test_subset": 100, "probe_size": 32,
                    "hist_samples": 64},
    "batch-size": {"batch_sizes": [50, "full"], "steps": 6, "eval_every": 3, "hidden": [8],
                   "train_subset": 200, "test_subset": 100},
    "learning-rate": {"rates": [0.05, 1000.0], "steps": 10, "eval_every": 5, "hidden": [8],
                      "batch_size": 50, "train_subset": 200, "test_subset": 100},
    "early-stopping": {"steps": 40, "eval_every": 5, "patience": 2, "hidden": [8],
                       "train_subset": 300, "validation": 100, "test_subset": 100},
}


def test_every_experiment_is_a_folder_with_its_config_and_its_code() -> None:
    folders = {p.parent.name for p in (ROOT / "experiments").glob("*/config.py")} - catalog.NOT_EXPERIMENTS
    assert folders == {e.package.rsplit(".", 1)[1] for e in catalog.entries().values()}
    for name, entry in catalog.entries().items():
        code = importlib.import_module(f"{entry.package}.experiment")
        assert code.Config is entry.config_cls, f"{name}: experiment.py runs another config"
        assert callable(entry.run_function())
        assert entry.presets.get("quick") is not None, f"{name} has no quick preset"
    assert set(SMOKE) == set(catalog.names()), "every experiment needs a smoke size here"


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, dict[str, str]]:
    """Every experiment run once at its smoke size on one fresh store: {name: parent run id}."""
    raw = SHARED_DATA / "MNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {raw} (set PHENOLAB_TEST_DATA_DIR)")
    home = tmp_path_factory.mktemp("smoke")
    uri = f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
    (home / "mlruns").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PHENOLAB_HOME", str(home))
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("PHENOLAB_DATA_DIR", str(SHARED_DATA))
        runs = {name: experiments.run(name, config, preset="quick") for name, config in SMOKE.items()}
        yield MlflowClient(uri), runs


def _children(client: MlflowClient, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id], f"attributes.run_id != '{parent_id}'")


@pytest.mark.timeout(1200)  # the first user of the fixture runs the whole catalog
def test_every_logged_name_is_in_the_glossary(smoke_runs: tuple[MlflowClient, dict[str, str]]) -> None:
    client, runs = smoke_runs
    unknown: dict[str, set[str]] = {}
    for name, run_id in runs.items():
        parent = client.get_run(run_id)
        assert parent.info.status == "FINISHED", name
        for run in [parent, *_children(client, run_id)]:
            kind = "parent" if run is parent else "child"
            config_params = set(parent.data.params) if run is parent else set()
            for key in (*run.data.metrics, *(set(run.data.params) - config_params),
                        *(t for t in run.data.tags if not t.startswith("mlflow."))):
                if catalog.lookup(key, name) is None:
                    unknown.setdefault(f"{name} ({kind})", set()).add(key)
    assert not unknown, f"logged names the glossary does not define: {unknown}"


def _rebuild(client: MlflowClient, run_id: str, tmp: Path) -> torch.nn.Module:
    """A child's saved model, with plain torch and safetensors: the architecture JSON names
    each layer's torch.nn class and its constructor arguments."""
    tmp.mkdir(parents=True, exist_ok=True)
    (local,) = Path(client.download_artifacts(run_id, "weights", str(tmp))).glob("*.safetensors")
    layers = json.loads(local.with_suffix(".json").read_text())["architecture"]
    model = torch.nn.Sequential(*(getattr(torch.nn, d.pop("type"))(**d) for d in layers))
    model.load_state_dict(load_file(local))
    return model.eval()


# recomputed elsewhere from their own saved files: minimal-ratio's stacked parameters
RECOMPUTED_ELSEWHERE = {"minimal-ratio": "tests/test_optimization.py"}


@pytest.mark.timeout(1200)
def test_a_logged_metric_of_every_experiment_recomputes_from_its_saved_weights(
        smoke_runs: tuple[MlflowClient, dict[str, str]], tmp_path: Path) -> None:
    """One child per experiment: its weights downloaded through MlflowClient, the model
    rebuilt with plain torch, its final test loss (or, for the 1-D fits, its final training
    loss) recomputed on the same split."""
    client, runs = smoke_runs
    unchecked = []
    for name, run_id in runs.items():
        if name in RECOMPUTED_ELSEWHERE:
            continue
        params = client.get_run(run_id).data.params
        child = next((c for c in _children(client, run_id)
                      if {"final_test_loss", "final_train_loss"} & c.data.metrics.keys()), None)
        if child is None:
            unchecked.append(name)
            continue
        model = _rebuild(client, child.info.run_id, tmp_path / name)
        logged = child.data.metrics
        with torch.no_grad():
            if "final_test_loss" in logged:
                subset = params.get("test_subset")
                test = load_dataset(params.get("dataset", "mnist"), "cpu",
                                    test_subset=None if subset in (None, "None") else int(subset)).test
                loss = torch.nn.functional.cross_entropy(model(test.x), test.y).item()
                assert loss == pytest.approx(logged["final_test_loss"], rel=1e-4), name
            elif "final_train_loss" in logged and "target" in params:
                domain = tuple(json.loads(params.get("domain", "[0.0, 1.0]")))
                fit = target_function(params["target"], int(params["n_points"]), domain)
                loss = torch.nn.functional.mse_loss(model(fit.x), fit.y).item()
                assert loss == pytest.approx(logged["final_train_loss"], rel=1e-4), name
            else:
                unchecked.append(name)
    assert not unchecked, f"no metric at the final weights to recompute for {unchecked}"


def test_the_glossary_defines_each_name_once_and_serves_it() -> None:
    terms = catalog.glossary_terms()
    assert len({t.name for t in terms}) == len(terms), "a name defined twice"
    assert all(t.definition.strip() for t in terms)
    assert catalog.lookup("running_loss").name == "running_loss"
    assert catalog.lookup("train_loss").definition != catalog.lookup("running_loss").definition
    assert catalog.lookup("dead_units/layer3", "function-fit").name == "dead_units/layer<k>"
    assert catalog.lookup("dead_units/layer3", "task-fit") is None  # function-fit's own name
    assert catalog.lookup("no_such_metric") is None
    described = {t["name"] for t in catalog.get("function-fit").describe()["glossary"]}
    assert {"running_loss", "dead_units/layer<k>"} <= described
    readme = (ROOT / "README.md").read_text()
    assert not [t.name for t in terms if f"`{t.name}`" not in readme], "README's glossary is behind"


def _project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports, at any depth (a lazy import inside a function
    counts): `from a import b` is module `a.b` when that is a module, else `a`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & modules


def test_no_import_cycle_among_the_project_modules() -> None:
    modules = {}
    for path in [*ROOT.glob("experiments/**/*.py"), *ROOT.glob("service/*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: _project_imports(p, set(modules)) - {m} for m, p in modules.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                pytest.fail(f"import cycle: {' → '.join([*path, module, imported])}")
            if imported not in state:
                visit(imported, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
