"""HW1-3 Generalization: can a network fit random labels?

Shuffle the training labels before training and train the course MLP on them: the training
loss still falls to near zero — the network memorises — while the test accuracy stays at
chance, because there is nothing left to generalise. The model trains from `seeds` seeds (one
ensemble, the same shuffled labels); the curves are their mean with a ±1 std band, and two
findings test the claim: the final train accuracy against 0.9 ("near 1") and the final test
accuracy's distance from chance against 0.05.
"""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split, dataset_for
from experiments.core.findings import Finding, average, log_findings
from experiments.core.models import classifier
from experiments.core.train import TrainSpec
from experiments.core.variants import Outcome, Variant, run_variants, series, summarize
from experiments.random_labels.config import Config
from experiments.tracking import Tracker

NEAR_ONE = 0.9  # "train accuracy near 1": above this
NEAR_CHANCE = 0.05  # "test accuracy at chance": within this of 1 / classes


def shuffle_labels(y: Tensor, fraction: float, seed: int) -> Tensor:
    """A copy of `y` in which round(fraction·n) labels, chosen at random, are permuted among
    themselves (seeded): class counts stay, their pairing with the inputs is random."""
    generator = torch.Generator().manual_seed(seed)
    n = len(y)
    chosen = torch.randperm(n, generator=generator)[:round(fraction * n)]
    permuted = chosen[torch.randperm(len(chosen), generator=generator)]
    shuffled = y.clone()
    shuffled[chosen.to(y.device)] = y[permuted.to(y.device)]
    return shuffled


def findings(config: Config, outcomes: list[Outcome], chance: float) -> list[Finding]:
    """`fits_shuffled_labels`: the mean final train accuracy (against the shuffled labels) over
    seeds, expected above `NEAR_ONE`; `test_at_chance`: the mean |final test accuracy − chance|,
    expected below `NEAR_CHANCE`."""
    claim = (f"the net fits {config.fraction:.0%} shuffled labels (train accuracy near 1) while "
             "test accuracy stays at chance")
    train = [o.final["train_acc"] for o in outcomes]
    test = [abs(o.final["test_acc"] - chance) for o in outcomes]
    return [average("fits_shuffled_labels", claim, train, expect="above", null=NEAR_ONE,
                    seed=config.seed, what="final train accuracy (shuffled labels)"),
            average("test_at_chance", claim, test, expect="below", null=NEAR_CHANCE,
                    seed=config.seed, what=f"|final test accuracy − chance ({chance:g})|")]


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    labels = shuffle_labels(data.train.y, config.fraction, config.seed)
    train = Split(data.train.x, labels)
    name = f"mlp-{'x'.join(map(str, config.hidden))}"
    variant = Variant(name, lambda: classifier(data, config.hidden), config.seed,
                      {"hidden": config.hidden, "fraction": config.fraction})
    # "train" is evaluated at each epoch's end weights on the shuffled labels, "test" on the
    # true test labels; every seed trains on the same shuffled labels
    outcomes = run_variants(tracker, ctx, [variant], train, TrainSpec.of(config),
                            evals={"train": train, "test": data.test}, seeds=config.seeds)
    chance = 1 / data.n_classes
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, outcomes, chance))

    title = (f"{config.dataset}, {config.fraction:.0%} of labels shuffled "
             f"(mean ± std over {config.seeds} seeds)")
    tracker.figure(plots.lines({s: series(outcomes, f"{s}_loss")[name] for s in ("train", "test")},
                               xlabel="epoch", ylabel="cross-entropy", title=title, logy=True),
                   "loss")
    curves = {f"{s} ({'shuffled' if s == 'train' else 'true'} labels)":
              series(outcomes, f"{s}_acc")[name] for s in ("train", "test")}
    fig = plots.lines(curves, xlabel="epoch", ylabel="accuracy", title=title)
    fig.axes[0].axhline(chance, color="gray", linestyle="--", label="chance")
    fig.axes[0].legend(fontsize=8)
    tracker.figure(fig, "accuracy")
    tracker.summary({"labels_changed": (labels != data.train.y).float().mean().item()})
