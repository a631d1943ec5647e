"""HW1-2 Optimization, part 1: visualize the optimization process.

The same MLP is trained on MNIST several times from different seeds (the "training events",
trained together as one vmap ensemble). Every few epochs each event's weights are kept; PCA
fitted over all kept points draws the paths in 2-D, once for the first layer and once for the
whole model. Each event walks off from its own start in its own direction (at the defaults the
paths fan out like a star): they never meet, though the accuracies written along them end up
alike (about 0.98 after 24 epochs) — many different weights are equally good.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import dataset_for
from experiments.core.measures import weight_pca
from experiments.core.models import classifier
from experiments.core.train import EvalEvent, Params, TrainSpec
from experiments.core.variants import Variant, run_variants
from experiments.tracking import Tracker
from experiments.weight_trajectory.config import Config

VIEWS = {"first_layer": "first layer", "whole_model": "whole model"}


@dataclass
class Point:
    """One event's weights at one epoch, with the test metrics of exactly those weights."""

    epoch: int
    weights: Params
    test_acc: float
    test_loss: float


@dataclass
class Collector:
    """Every event's weights (on the CPU) at epoch 0 (the initial weights), at every
    `every`-th epoch and at the last epoch, with their test metrics."""

    every: int
    last: int
    points: dict[int, list[Point]] = field(default_factory=dict)

    def add(self, event: int, point: Point) -> None:
        self.points.setdefault(event, []).append(point)

    def __call__(self, e: EvalEvent) -> None:
        """The `on_eval` hook: models are events by their index."""
        if e.epoch % self.every and e.epoch != self.last:
            return
        for row, event in enumerate(e.active):
            weights = {k: v.cpu() for k, v in e.state_dict(event).items()}
            m = e.metrics[row]
            self.add(event, Point(e.epoch, weights, m.get("test_acc", float("nan")),
                                  m.get("test_loss", float("nan"))))


def first_layer(module: nn.Module) -> list[str]:
    """Names of the first layer's parameters (its weight and bias): those sharing the module
    prefix of the first parameter."""
    names = [name for name, _ in module.named_parameters()]
    prefix = names[0].rsplit(".", 1)[0]
    return [n for n in names if n.rsplit(".", 1)[0] == prefix]


def flat(points: list[Point], names: list[str]) -> Tensor:
    """The weights `names` of every point as one row each: [len(points), D]."""
    return torch.stack([torch.cat([p.weights[n].flatten() for n in names]) for p in points])


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)

    def build() -> nn.Module:
        return classifier(data, config.hidden)

    seeds = [config.seed + i for i in range(config.events)]
    variants = [Variant(f"event {i + 1}", build, s, {"event": i + 1, "hidden": config.hidden})
                for i, s in enumerate(seeds)]
    spec = TrainSpec.of(config, eval_at_start=True)  # epoch 0: the initial weights
    collector = Collector(config.collect_every, config.epochs)
    start = time.perf_counter()
    # all events as one ensemble, or (`together=False`) one after the other
    outcomes = run_variants(tracker, ctx, variants, data.train, spec, together=config.together,
                            evals={"test": data.test}, on_eval=collector)
    train_seconds = time.perf_counter() - start

    for index, outcome in enumerate(outcomes):
        outcome.run.snapshots({f"epoch_{p.epoch:04d}": p.weights for p in collector.points[index]})

    order = [(i, p) for i in range(len(outcomes)) for p in collector.points[i]]
    everything = [p for _, p in order]
    template = build()
    names = {"first_layer": first_layer(template),
             "whole_model": [n for n, _ in template.named_parameters()]}
    coords, explained = {}, {}
    for view, keys in names.items():
        coords[view], explained[view] = weight_pca(flat(everything, keys))
    pcs = {view: xy.tolist() for view, xy in coords.items()}
    rows = [{"event": i + 1, "seed": seeds[i], "epoch": p.epoch, "test_acc": p.test_acc,
             "test_loss": p.test_loss,
             **{f"{view}_pc{c + 1}": pcs[view][j][c] for view in pcs for c in (0, 1)}}
            for j, (i, p) in enumerate(order)]
    tracker.table("pca_points", rows)

    for view, label in VIEWS.items():
        paths, notes = {}, {}
        for i, variant in enumerate(variants):
            mine = [r for r in rows if r["event"] == i + 1]
            paths[variant.name] = ([r[f"{view}_pc1"] for r in mine], [r[f"{view}_pc2"] for r in mine])
            notes[variant.name] = [f"{r['test_acc']:.2f}" for r in mine]
        ratio = explained[view].tolist()
        tracker.figure(plots.trajectories(
            paths, notes, xlabel=f"PC 1 ({ratio[0]:.0%} of variance)",
            ylabel=f"PC 2 ({ratio[1]:.0%} of variance)",
            title=f"{config.dataset}: weights of the {label} every {config.collect_every} epochs, "
                  f"{config.events} events (labels: test accuracy)"), f"trajectory_{view}")

    finals = [o.final.get("test_acc", float("nan")) for o in outcomes]
    tracker.summary({"train_seconds": train_seconds, "points": len(order),
                     "mean_final_test_acc": sum(finals) / len(finals),
                     **{f"{view}_explained_variance": float(explained[view].sum())
                        for view in names}})
