"""HW1-1 Deep vs shallow, part 1: simulate a function.

Train DNNs with (about) the same number of parameters but different depths on a 1-D target
until they converge, then compare the training MSE per epoch and the fitted curves with the
truth. Each architecture is tuned as the course asks: trained at every rate of `lrs` from
`seeds` seeds (all its models as one ensemble, each at its own rate), and compared at its best
rate — the one with the lowest mean final training MSE over the seeds. Narrow deep ReLU nets
sometimes die on the way (a whole hidden layer outputs 0 on every input, the net predicts a
constant); each ReLU model logs its dead units per layer and a `collapsed` tag, and stays in
every mean, so a bad seed shows as a wide band, not as a missing one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from experiments.core import measures, plots
from experiments.core.context import RunContext
from experiments.core.data import Split, target_function
from experiments.core.findings import Finding, difference, log_findings
from experiments.core.models import mlp, widths_for_budget
from experiments.core.train import Convergence, LearningRates, TrainSpec, intra_op_threads
from experiments.core.variants import Outcome, Variant, by_group, mean_std, run_variants, summarize
from experiments.function_fit.config import Config
from experiments.tracking import Tracker

CLAIM = ("at equal parameters, each architecture tuned to its best learning rate, the deeper "
         "nets reach a lower training MSE than the shallowest (1-hidden-layer) net")


def hidden_widths(config: Config) -> list[list[int]]:
    if config.param_budget is None:
        return [list(widths) for widths in config.models]
    return [widths_for_budget(config.param_budget, depth) for depth in config.depths]


def architecture_name(widths: Sequence[int]) -> str:
    """`1-<widths>-1`, e.g. 1-190-1."""
    return f"1-{'-'.join(map(str, widths))}-1"


@dataclass
class Tuned:
    """An architecture at its best rate: the seeds trained at that rate."""

    name: str
    depth: int
    lr: float
    seeds: list[Outcome]

    @property
    def mses(self) -> list[float]:
        return [final_mse(o) for o in self.seeds]


def final_mse(outcome: Outcome) -> float:
    """The training MSE (a full pass) at the final weights; inf for a model that diverged."""
    return math.inf if outcome.result.status == "diverged" else outcome.final["train_loss"]


def train_architecture(config: Config, tracker: Tracker, ctx: RunContext, data: Split,
                       widths: list[int]) -> list[Outcome]:
    """One architecture at every rate of `lrs`, `seeds` seeds each, as one ensemble: each model
    at its own rate (`LearningRates`, base rate 1), each stopped by the convergence rule."""
    name = architecture_name(widths)
    variants = [Variant(f"{name} lr{lr:g}", lambda: mlp(1, widths, 1, config.activation),
                        config.seed, {"depth": len(widths), "widths": widths, "lr": lr})
                for lr in config.lrs]
    spec = TrainSpec.of(config, lr=1.0, loss="mse", eval_every=config.eval_every)
    return run_variants(tracker, ctx, variants, data, spec, evals={"train": data}, together=True,
                        seeds=config.seeds, hooks=lambda group: [
                            LearningRates([v.params["lr"] for v in group], config.optimizer,
                                          ctx.device),
                            Convergence(config.converge_tol, config.converge_patience, len(group))])


def tune(outcomes: list[Outcome]) -> Tuned:
    """The rate of one architecture's outcomes with the lowest mean `final_mse` over seeds."""
    groups = list(by_group(outcomes).values())
    best = min(groups, key=lambda seeds: float(np.mean([final_mse(o) for o in seeds])))
    params = best[0].variant.params
    return Tuned(architecture_name(params["widths"]), params["depth"], params["lr"], best)


def log_dead_units(outcome: Outcome, x: torch.Tensor) -> bool:
    """Record `dead_units/layer<k>` (see `measures.dead_units`, on the training inputs at the
    final weights) and tag `collapsed` (some layer entirely dead); return that flag."""
    state = dict(outcome.model.state_dict())
    dead = [measures.dead_units(a).item()
            for a in measures.activations(outcome.model, state, x).values()]
    outcome.record({f"dead_units/layer{k}": d for k, d in enumerate(dead, 1)})
    collapsed = any(d == 1.0 for d in dead)
    outcome.run.tags({"collapsed": str(collapsed).lower()})
    return collapsed


def held_series(seeds: Sequence[Outcome], key: str) -> tuple[list[float], list[float], list[float]]:
    """(x, mean, std) of `key` over the seeds at every x any seed reached; a seed that stopped
    (converged) counts with its last value after that: its weights no longer change."""
    curves = [dict(zip(*o.series(key))) for o in seeds]
    xs = sorted(set().union(*curves))
    stats = [mean_std([c.get(x, c[max(c)]) for c in curves]) for x in xs]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def label(tuned: Tuned, collapsed: int) -> str:
    """Legend of an architecture: its best rate, its seeds and how many collapsed."""
    dead = f", {collapsed} collapsed" if collapsed else ""
    return f"{tuned.name} (lr {tuned.lr:g}, {len(tuned.seeds)} seeds{dead})"


def log_tuned(tracker: Tracker, tuned: list[Tuned]) -> None:
    """Per architecture on the parent: `best_lr/<arch>`, `best_final_mse/<arch>` and
    `median_final_mse/<arch>`, and the table `architectures`."""
    tracker.summary({key: value for t in tuned for key, value in (
        (f"best_lr/{t.name}", t.lr), (f"best_final_mse/{t.name}", min(t.mses)),
        (f"median_final_mse/{t.name}", float(np.median(t.mses))))})
    tracker.table("architectures", [
        {"architecture": t.name, "depth": t.depth, "best_lr": t.lr,
         "mean_final_mse": float(np.mean(t.mses)), "median_final_mse": float(np.median(t.mses)),
         "best_final_mse": min(t.mses), "seeds": len(t.seeds)} for t in tuned])


def findings(config: Config, tuned: list[Tuned]) -> list[Finding]:
    """Per architecture deeper than the shallowest: its mean final MSE at its best rate minus
    the shallowest's at its best rate (expected below 0)."""
    shallow = min(tuned, key=lambda t: t.depth)
    return [difference(f"deeper_lower_mse_{t.name.replace('-', '_')}", CLAIM, t.mses, shallow.mses,
                       expect="below", seed=config.seed,
                       what=f"final training MSE at the best rate, {t.name} − {shallow.name}")
            for t in tuned if t.depth > shallow.depth]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = target_function(config.target, config.n_points, config.domain, ctx.device)
    with intra_op_threads(1):  # ~600-parameter nets: a second thread only waits
        per_architecture = [train_architecture(config, tracker, ctx, data, widths)
                            for widths in hidden_widths(config)]
    outcomes = [o for group in per_architecture for o in group]
    collapsed = {id(o): config.activation == "relu" and log_dead_units(o, data.x) for o in outcomes}
    summarize(tracker, outcomes)
    tuned = [tune(group) for group in per_architecture]
    log_tuned(tracker, tuned)
    log_findings(tracker, findings(config, tuned))

    labels = {t.name: label(t, sum(collapsed[id(o)] for o in t.seeds)) for t in tuned}
    tracker.figure(plots.lines({labels[t.name]: held_series(t.seeds, "train_loss") for t in tuned},
                               xlabel="epoch", ylabel="training MSE (full batch)", logy=True,
                               title=f"{config.target}: training MSE at each model's best rate "
                                     "(seed mean ± std)"), "loss")
    with torch.no_grad():
        stacked = {labels[t.name]: torch.stack([o.model(data.x).squeeze(1) for o in t.seeds])
                   for t in tuned}
    tracker.figure(plots.predictions(
        data.x.squeeze(1).tolist(), data.y.squeeze(1).tolist(),
        {name: ys.mean(0).tolist() for name, ys in stacked.items()},
        bands={name: (ys.std(0) if len(ys) > 1 else torch.zeros_like(ys[0])).tolist()
               for name, ys in stacked.items()},
        title=f"{config.target}: ground truth vs models at their best rate (seed mean ± std)"),
        "predictions")
