"""HW1-2 Optimization, part 1: visualize the optimization process.

The same MLP is trained on MNIST from `seeds` seeds (the "training events", trained together
as one vmap ensemble). Every few epochs each event's weights are kept; PCA fitted over all kept
points draws the paths in 2-D, once for the first layer and once for the whole model. Each
event walks off from its own start in its own direction (at the defaults the paths fan out like
a star): they never meet, though the accuracies written along them end up alike (about 0.98
after 24 epochs) — many different weights are equally good. Two findings say so in numbers:
the events' final pairwise distances against their initial ones, and the spread of their final
test accuracies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch
from torch import Tensor, nn

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import dataset_for
from experiments.core.findings import Finding, average, bootstrap, log_findings
from experiments.core.measures import weight_pca
from experiments.core.models import classifier
from experiments.core.train import EvalEvent, Params, TrainSpec
from experiments.core.variants import Variant, run_variants, summarize
from experiments.tracking import Tracker
from experiments.weight_trajectory.config import Config

VIEWS = {"first_layer": "first layer", "whole_model": "whole model"}
APART = ("the events start apart and end apart in weight space: training does not bring them "
         "together (final pairwise distance at least the initial one)")
SIMILAR = "the events reach similar accuracy (final test accuracies within about 1 point)"
SIMILAR_STD = 0.01  # "similar": a spread of the final test accuracies below one percentage point


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


def separation(initial: Tensor, final: Tensor) -> list[float]:
    """Per event (a row of `initial` and `final`, [events, D]), the mean over the other events of
    ‖final_i − final_j‖ / ‖initial_i − initial_j‖: above 1 when training drove them apart."""
    ratios: dict[int, list[float]] = {i: [] for i in range(len(initial))}
    for i, j in combinations(range(len(initial)), 2):
        ratio = ((final[i] - final[j]).norm() / (initial[i] - initial[j]).norm()).item()
        ratios[i].append(ratio)
        ratios[j].append(ratio)
    return [float(np.mean(r)) for r in ratios.values()]


def findings(config: Config, initial: Tensor, final: Tensor, accuracies: list[float]) -> list[Finding]:
    """`events_end_apart`: the mean `separation` of the whole model's weights (expected above 1;
    the events share partners, so its bootstrap over them is approximate);
    `similar_final_accuracy`: the standard deviation of the final test accuracies (expected
    below `SIMILAR_STD`). No findings from a single event: nothing to compare."""
    if len(accuracies) < 2:
        return []

    def spread(values: np.ndarray) -> float:
        return float(np.std(values, ddof=1))

    apart = average("events_end_apart", APART, separation(initial, final), expect="above",
                    null=1.0, seed=config.seed,
                    what="over the other events of final / initial distance of the whole model's "
                         "weights")
    similar = Finding("similar_final_accuracy", SIMILAR,
                      f"std (ddof 1) of the final test accuracy over {len(accuracies)} seeds",
                      spread(np.asarray(accuracies)),
                      bootstrap(spread, (accuracies,), config.seed), "below", SIMILAR_STD,
                      details={"values": accuracies, "mean": float(np.mean(accuracies))})
    return [apart, similar]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)

    def build() -> nn.Module:
        return classifier(data, config.hidden)

    variant = Variant(f"mlp-{'x'.join(map(str, config.hidden))}", build, config.seed,
                      {"hidden": config.hidden})
    spec = TrainSpec.of(config, eval_at_start=True)  # epoch 0: the initial weights
    collector = Collector(config.collect_every, config.epochs)
    start = time.perf_counter()
    outcomes = run_variants(tracker, ctx, [variant], data.train, spec, evals={"test": data.test},
                            seeds=config.seeds, on_eval=collector)
    train_seconds = time.perf_counter() - start
    seeds = [o.variant.seed for o in outcomes]

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
    rows = [{"seed": seeds[i], "epoch": p.epoch, "test_acc": p.test_acc, "test_loss": p.test_loss,
             **{f"{view}_pc{c + 1}": pcs[view][j][c] for view in pcs for c in (0, 1)}}
            for j, (i, p) in enumerate(order)]
    tracker.table("pca_points", rows)

    for view, label in VIEWS.items():
        paths, notes = {}, {}
        for seed in seeds:
            mine = [r for r in rows if r["seed"] == seed]
            name = f"seed {seed}"
            paths[name] = ([r[f"{view}_pc1"] for r in mine], [r[f"{view}_pc2"] for r in mine])
            notes[name] = [f"{r['test_acc']:.2f}" for r in mine]
        ratio = explained[view].tolist()
        tracker.figure(plots.trajectories(
            paths, notes, xlabel=f"PC 1 ({ratio[0]:.0%} of variance)",
            ylabel=f"PC 2 ({ratio[1]:.0%} of variance)",
            title=f"{config.dataset}: weights of the {label} every {config.collect_every} epochs, "
                  f"{config.seeds} events (labels: test accuracy)"), f"trajectory_{view}")

    summarize(tracker, outcomes)
    initial, final = (flat([collector.points[i][at] for i in range(len(outcomes))],
                           names["whole_model"]) for at in (0, -1))
    log_findings(tracker, findings(config, initial, final, [o.final["test_acc"] for o in outcomes]))
    tracker.summary({"train_seconds": train_seconds, "points": len(order),
                     **{f"{view}_explained_variance": float(explained[view].sum())
                        for view in names}})
