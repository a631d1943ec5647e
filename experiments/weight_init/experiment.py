"""Training dynamics: weight initialization (seed 003, parts 1–3).

The same MLP starts from zero weights or from Gaussian weights of growing variance, with
sigmoid, tanh or ReLU units. Every few steps we look inside each layer, as TensorBoard's
histogram view would: the distributions of weights, biases and activations, the gradient norm
of each parameter tensor (vanishing / exploding gradients), the fraction of saturated units and
how different the units are (zero init keeps them identical). All inits of one activation share
the model's shape, so they train together as one vmap ensemble on the same batches.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn

from experiments.core import measures, plots
from experiments.core.context import RunContext
from experiments.core.data import Dataset, Split, dataset_for
from experiments.core.models import ACTIVATIONS, classifier, initialize
from experiments.core.train import EvalEvent, TrainSpec
from experiments.core.variants import Outcome, Variant, log_train_test_figures, run_variants
from experiments.tracking import Tracker
from experiments.weight_init.config import Config

PLURAL = {"weight": "weights", "bias": "biases"}
SAME = 1e-6  # unit spread below this = identical units (float rounding, not symmetry breaking)


def inits(config: Config) -> list[tuple[str, str, float]]:
    """(name, scheme, variance) of every initialization the config asks for."""
    scheme = "gaussian_fan_in" if config.fan_in else "gaussian"
    zero = [("zero", "zero", 0.0)] if config.zero_init else []
    return zero + [(f"var{v:g}", scheme, v) for v in config.variances]


def layer_labels(model: nn.Module) -> dict[str, str]:
    """Module name → "layer<k>" for the k-th Linear layer and for the activation after it."""
    labels: dict[str, str] = {}
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            count += 1
            labels[name] = f"layer{count}"
        elif isinstance(module, tuple(ACTIVATIONS.values())):
            labels[name] = f"layer{count}"
    return labels


class LayerRecorder:
    """The `on_eval` hook: per-layer statistics of every model of one ensemble at each
    evaluation, computed with `functional_call` on the event's weights and a fixed probe batch
    of training examples. Histogram values are a fixed random subset of each tensor."""

    def __init__(self, model: nn.Module, activation: str, probe: Split, samples: int,
                 seed: int) -> None:
        self.model, self.activation, self.probe, self.samples = model, activation, probe, samples
        self.labels = layer_labels(model)
        self.generator = torch.Generator(device=probe.x.device).manual_seed(seed)
        self.subsets: dict[str, Tensor | None] = {}
        self.records: dict[int, list[dict[str, Any]]] = defaultdict(list)

    def __call__(self, event: EvalEvent) -> None:
        for model in event.active:
            self.record(model, event.x, event.state_dict(model))

    def _sample(self, key: str, values: Tensor) -> list[float]:
        flat = values.flatten()
        if key not in self.subsets:
            self.subsets[key] = (None if flat.numel() <= self.samples else torch.randperm(
                flat.numel(), generator=self.generator, device=flat.device)[:self.samples])
        subset = self.subsets[key]
        return (flat if subset is None else flat[subset]).tolist()

    def record(self, model: int, step: int, state: dict[str, Tensor]) -> None:
        """Histograms and per-layer metrics of one model's weights `state` at `step`."""
        hist: dict[tuple[str, str], list[float]] = {}
        metrics: dict[str, Tensor] = {}
        for name, value in state.items():
            module, kind = name.rsplit(".", 1)
            label = self.labels[module]
            hist[label, PLURAL[kind]] = self._sample(name, value)
        grads = measures.layer_grad_norms(self.model, state, self.probe.x, self.probe.y)
        for name, norm in grads.items():
            module, kind = name.rsplit(".", 1)
            metrics[f"grad_norm/{self.labels[module]}.{kind}"] = norm
        for name, a in measures.activations(self.model, state, self.probe.x).items():
            label = self.labels[name]
            hist[label, "activations"] = self._sample(name, a)
            metrics[f"saturation/{label}"] = measures.saturation(a, self.activation)
            metrics[f"unit_spread/{label}"] = measures.unit_spread(a)
        values = torch.stack(list(metrics.values())).tolist()
        self.records[model].append({"step": step, "hist": hist,
                                    "metrics": dict(zip(metrics, values))})


def histogram_grid(records: list[dict[str, Any]]) -> dict[str, dict[str, plots.Samples]]:
    """records → grid[layer][weights|biases|activations] = (steps, values per step)."""
    steps = [r["step"] for r in records]
    grid: dict[str, dict[str, plots.Samples]] = defaultdict(dict)
    for layer, kind in records[0]["hist"]:
        grid[layer][kind] = (steps, [r["hist"][layer, kind] for r in records])
    return grid


def movement(first: list[float], last: list[float]) -> str:
    """How far the recorded values moved from the first to the last record (the same fixed
    subset of entries each time): root-mean-square change, relative to the first RMS when
    that is not 0. A layer whose weights stay put (vanishing gradient) reads ~0%."""
    a, b = torch.tensor(first), torch.tensor(last)
    change = (b - a).pow(2).mean().sqrt().item()
    scale = a.pow(2).mean().sqrt().item()
    if change == 0:
        return "did not move"
    return f"moved {change / scale:.1%} (rms)" if scale > 0 else f"moved {change:.2g} (rms)"


def activity(metrics: dict[str, float], label: str, activation: str) -> str:
    """The last record's saturated (sigmoid/tanh) or dead (relu) fraction of a layer, and
    whether all its units are still identical (the zero-init symmetry)."""
    word = "dead" if activation == "relu" else "saturated"
    text = f"{word} {metrics[f'saturation/{label}']:.0%}"
    spread = metrics[f"unit_spread/{label}"]
    return text + (", units identical" if spread < SAME else "")


def histogram_notes(records: list[dict[str, Any]], activation: str) -> dict[tuple[str, str], str]:
    """A one-line reading per histogram panel: movement of weights and biases, saturation of
    activations (see `movement`, `activity`)."""
    first, last = records[0], records[-1]
    return {(layer, kind): activity(last["metrics"], layer, activation) if kind == "activations"
            else movement(first["hist"][layer, kind], last["hist"][layer, kind])
            for layer, kind in first["hist"]}


def activation_grid(outcomes: list[Outcome], records: dict[str, list[dict[str, Any]]],
                    activation: str) -> tuple[dict[str, dict[str, plots.Samples]],
                                              dict[tuple[str, str], str]]:
    """Activation histograms of every init side by side: grid[init][layer] and its notes —
    the one figure that shows saturation growing with the variance."""
    grid: dict[str, dict[str, plots.Samples]] = {}
    notes: dict[tuple[str, str], str] = {}
    for outcome in outcomes:
        init, rows = outcome.variant.params["init_name"], records[outcome.variant.name]
        by_kind = histogram_grid(rows)
        grid[init] = {layer: kinds["activations"] for layer, kinds in by_kind.items()
                      if "activations" in kinds}
        notes.update({(init, layer): activity(rows[-1]["metrics"], layer, activation)
                      for layer in grid[init]})
    return grid, notes


def metric_panels(outcomes: list[Outcome], records: dict[str, list[dict[str, Any]]],
                  prefix: str) -> dict[str, plots.Series]:
    """One panel per metric `prefix/<layer>`, one curve per init, for `plots.panels`."""
    keys = [k for k in records[outcomes[0].variant.name][0]["metrics"] if k.startswith(prefix)]
    return {key.split("/", 1)[1]: {o.variant.params["init_name"]: (
        [r["step"] for r in records[o.variant.name]],
        [r["metrics"][key] for r in records[o.variant.name]]) for o in outcomes} for key in keys}


def train_activation(config: Config, activation: str, data: Dataset, tracker: Tracker,
                     ctx: RunContext) -> tuple[list[Outcome], dict[str, list[dict[str, Any]]]]:
    """All inits of one activation as one ensemble; returns outcomes and per-variant records."""
    variants = [
        Variant(f"{activation}-{name}",
                lambda scheme=scheme, variance=variance: initialize(
                    classifier(data, config.hidden, activation), scheme, variance),
                config.seed,
                {"activation": activation, "init_name": name, "init": scheme, "variance": variance,
                 "hidden": config.hidden, "lr": config.lr, "batch_size": config.batch_size})
        for name, scheme, variance in inits(config)]
    template = variants[0].build().to(ctx.device)  # the shape the recorder calls with each state
    recorder = LayerRecorder(template, activation, data.train.head(config.probe_size),
                             config.hist_samples, config.seed)
    spec = TrainSpec.of(config, eval_at_start=True)
    outcomes = run_variants(tracker, ctx, variants, data.train, spec, evals={"test": data.test},
                            together=True, on_eval=recorder)
    records = {v.name: recorder.records[i] for i, v in enumerate(variants)}
    for outcome in outcomes:
        for record in records[outcome.variant.name]:
            outcome.run.log(record["metrics"], step=record["step"])
        outcome.run.flush()
    return outcomes, records


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    rows: list[dict[str, Any]] = []
    for activation in config.activations:
        outcomes, records = train_activation(config, activation, data, tracker, ctx)
        rows += [{"activation": activation, "init": o.variant.params["init_name"],
                  "status": o.result.status, **o.final} for o in outcomes]
        tracker.table("final", rows)  # rewritten after each activation: partial results show
        log_train_test_figures(tracker, outcomes, xlabel="step", suffix=f"_{activation}", train="running",
                               label=lambda o: o.variant.params["init_name"],
                               title=f"{activation}: {{metric}} per initialization")
        tracker.figure(plots.panels(metric_panels(outcomes, records, "grad_norm/"), xlabel="step",
                                    ylabel="‖∂L/∂θ‖₂ (probe batch)", logy=True, columns=2,
                                    title=f"{activation}: gradient norm per layer (gaps = exactly 0)"),
                       f"grad_norms_{activation}")
        for prefix, ylabel in (("saturation", "fraction of units in the flat region"),
                               ("unit_spread", "max − min over units (mean over inputs)")):
            tracker.figure(plots.panels(metric_panels(outcomes, records, f"{prefix}/"),
                                        xlabel="step", ylabel=ylabel, columns=4,
                                        title=f"{activation}: {prefix.replace('_', ' ')} per layer"),
                           f"{prefix}_{activation}")
        grid, notes = activation_grid(outcomes, records, activation)
        tracker.figure(plots.histograms(grid, notes=notes, title=(
            f"{activation}: activations per init (rows) and layer (columns) over steps")),
            f"activations_{activation}")
        for outcome in outcomes:
            name = outcome.variant.name
            tracker.figure(plots.histograms(histogram_grid(records[name]),
                                            notes=histogram_notes(records[name], activation),
                                            title=f"{name}: weights, biases, activations over steps"),
                           f"histograms/{name}")
