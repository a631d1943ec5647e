"""Training dynamics: weight initialization (seed 003, parts 1–3).

The same MLP starts from zero weights or from Gaussian weights of growing variance, with
sigmoid, tanh or ReLU units. Every few steps we look inside each layer, as TensorBoard's
histogram view would: the distributions of weights, biases and activations, the gradient norm
of each parameter tensor (vanishing / exploding gradients), the fraction of saturated units and
how different the units are (zero init keeps them identical). All inits of one activation share
the model's shape, so they train together as one vmap ensemble on the same batches.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from experiments.core import measures, plots
from experiments.core.context import RunContext
from experiments.core.data import Dataset, Split, dataset_for
from experiments.core.findings import Finding, correlation, difference, log_findings, maximum
from experiments.core.models import ACTIVATIONS, classifier, initialize
from experiments.core.train import EvalEvent, TrainSpec
from experiments.core.variants import (
    Outcome,
    Variant,
    by_group,
    log_train_test_figures,
    run_variants,
    series,
    summarize,
)
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


def metric_panels(outcomes: list[Outcome], prefix: str) -> dict[str, plots.Series]:
    """One panel per metric `prefix/<layer>`, one curve per init: its mean over the seeds with
    a ±1 std band (the records merged into the history, see `train_activation`)."""
    keys = [k for k in outcomes[0].result.history[0] if k.startswith(prefix)]
    return {key.split("/", 1)[1]: series(outcomes, key, lambda o: o.variant.params["init_name"])
            for key in keys}


def train_activation(config: Config, activation: str, data: Dataset, tracker: Tracker,
                     ctx: RunContext) -> tuple[list[Outcome], dict[str, list[dict[str, Any]]]]:
    """All inits × seeds of one activation as one ensemble; returns the outcomes and each
    child's records. Each record's metrics are logged on its child, merged into the history
    row of the same evaluation (so they have seed means like any metric) and, at the last
    evaluation, recorded as `final_<metric>`."""
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
                            together=True, on_eval=recorder, seeds=config.seeds)
    records = {o.variant.name: recorder.records[i] for i, o in enumerate(outcomes)}
    for outcome in outcomes:
        rows = records[outcome.variant.name]
        for record in rows:
            outcome.run.log(record["metrics"], step=record["step"])
        by_step = {record["step"]: record["metrics"] for record in rows}
        for row in outcome.result.history:
            row.update(by_step.get(row["x"], {}))
        outcome.record({f"final_{k}": v for k, v in rows[-1]["metrics"].items()})
    return outcomes, records


def findings(config: Config, outcomes: list[Outcome]) -> list[Finding]:
    """Seed 003's claims at the final weights, over every model: zero init keeps every hidden
    layer's units identical (the largest `final_unit_spread` of a zero-init model, over
    activations, layers and seeds, is below `SAME`: identical in exact arithmetic, the units of
    a vmap ensemble may differ by float32 rounding, ~1e-7 on one input); for sigmoid and tanh, the Gaussian
    variance goes with the saturation (ρ(variance, mean over hidden layers of
    `final_saturation`) > 0) and the first layer's gradient vanishes relative to the last's
    (mean log10 of ‖∂L/∂W_1‖ / ‖∂L/∂W_last‖ at the largest variance − at the smallest < 0)."""
    found = []
    zero = [v for o in outcomes if o.variant.params["init"] == "zero"
            for k, v in o.measures.items() if k.startswith("final_unit_spread/")]
    if zero:
        found.append(maximum("zero_init_symmetric", "zero init never breaks symmetry: the units "
                             "of every hidden layer stay identical (seed 003)", zero,
                             expect="below", null=SAME, seed=config.seed,
                             what="final_unit_spread of the zero-init models' hidden layers "
                                  "(null: SAME, float32 rounding)"))
    for activation in ("sigmoid", "tanh"):
        gaussian = [o for o in outcomes if o.variant.params["activation"] == activation
                    and o.variant.params["init"] != "zero"]
        if len({o.variant.params["variance"] for o in gaussian}) > 1:
            found += saturation_findings(config, activation, gaussian)
    return found


def saturation_findings(config: Config, activation: str, gaussian: list[Outcome]) -> list[Finding]:
    """The two claims about large-variance `activation` nets, over its Gaussian-init models."""
    variance = [float(o.variant.params["variance"]) for o in gaussian]
    saturation = [float(np.mean([v for k, v in o.measures.items() if k.startswith("final_saturation/")]))
                  for o in gaussian]
    ratio = [math.log10(first_to_last(o)) for o in gaussian]
    low, high = min(variance), max(variance)
    return [
        correlation(f"saturation_rises_{activation}", f"large-variance {activation} nets saturate "
                    "(seed 003)", variance, saturation, expect="above", seed=config.seed,
                    what="variance, mean over hidden layers of final_saturation"),
        difference(f"first_layer_gradient_vanishes_{activation}", f"in large-variance {activation} "
                   "nets the first layers' gradients vanish (seed 003)",
                   [r for r, v in zip(ratio, variance) if v == high],
                   [r for r, v in zip(ratio, variance) if v == low], expect="below",
                   seed=config.seed, what=f"of log10(‖∂L/∂W_1‖ / ‖∂L/∂W_last‖) at the final "
                                          f"weights, variance {high:g} − {low:g}"),
    ]


def first_to_last(outcome: Outcome) -> float:
    """‖∂L/∂W_1‖ / ‖∂L/∂W_last‖ at the final weights: the first Linear layer's weight-gradient
    norm over the output layer's (probe batch, see `grad_norm/<layer>`)."""
    norms = {k: v for k, v in outcome.measures.items()
             if k.startswith("final_grad_norm/") and k.endswith(".weight")}
    layers = sorted(norms, key=lambda k: int(k.split("/layer")[1].split(".")[0]))
    return norms[layers[0]] / norms[layers[-1]]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    rows: list[dict[str, Any]] = []
    every: list[Outcome] = []
    for activation in config.activations:
        outcomes, records = train_activation(config, activation, data, tracker, ctx)
        every += outcomes
        rows += [{"activation": activation, "init": o.variant.params["init_name"],
                  "seed": o.variant.seed, "status": o.result.status, **o.final} for o in outcomes]
        tracker.table("final", rows)  # rewritten after each activation: partial results show
        figures(config, activation, outcomes, records, tracker)
    summarize(tracker, every)
    log_findings(tracker, findings(config, every))


def figures(config: Config, activation: str, outcomes: list[Outcome],
            records: dict[str, list[dict[str, Any]]], tracker: Tracker) -> None:
    """One activation's figures: loss, accuracy, gradient norms, saturation and unit spread
    per layer (mean ± std over seeds per init); the histograms of the first seed's models."""
    seeds = f"mean ± std over {config.seeds} seeds"
    log_train_test_figures(tracker, outcomes, xlabel="step", suffix=f"_{activation}", train="running",
                           label=lambda o: o.variant.params["init_name"],
                           title=f"{activation}: {{metric}} per initialization ({seeds})")
    tracker.figure(plots.panels(metric_panels(outcomes, "grad_norm/"), xlabel="step",
                                ylabel="‖∂L/∂θ‖₂ (probe batch)", logy=True, columns=2,
                                title=f"{activation}: gradient norm per layer ({seeds}; "
                                      "gaps = exactly 0)"),
                   f"grad_norms_{activation}")
    for prefix, ylabel in (("saturation", "fraction of units in the flat region"),
                           ("unit_spread", "max − min over units (mean over inputs)")):
        tracker.figure(plots.panels(metric_panels(outcomes, f"{prefix}/"), xlabel="step",
                                    ylabel=ylabel, columns=4,
                                    title=f"{activation}: {prefix.replace('_', ' ')} per layer ({seeds})"),
                       f"{prefix}_{activation}")
    first = [group[0] for group in by_group(outcomes).values()]
    grid, notes = activation_grid(first, records, activation)
    tracker.figure(plots.histograms(grid, notes=notes, title=(
        f"{activation}: activations per init (rows) and layer (columns) over steps, first seed "
        f"(seed {config.seed})")), f"activations_{activation}")
    for outcome in first:
        name = outcome.variant.group
        tracker.figure(plots.histograms(histogram_grid(records[outcome.variant.name]),
                                        notes=histogram_notes(records[outcome.variant.name], activation),
                                        title=f"{name}, first seed (seed {outcome.variant.seed}): "
                                              "weights, biases, activations over steps"),
                       f"histograms/{name}")
