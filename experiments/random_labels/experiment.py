"""HW1-3 Generalization: can a network fit random labels?

Shuffle the training labels before training and train the course MLP on them: the training
loss still falls to near zero — the network memorises — while the test accuracy stays at
chance, because there is nothing left to generalise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.core import plots
from experiments.core.context import RunContext
from experiments.core.data import Split, dataset_for
from experiments.core.models import classifier
from experiments.core.train import TrainSpec
from experiments.core.variants import Variant, run_variants
from experiments.random_labels.config import Config
from experiments.tracking import Tracker


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


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    labels = shuffle_labels(data.train.y, config.fraction, config.seed)
    train = Split(data.train.x, labels)
    name = f"mlp-{'x'.join(map(str, config.hidden))}"
    variant = Variant(name, lambda: classifier(data, config.hidden), config.seed,
                      {"hidden": config.hidden, "fraction": config.fraction})
    # "train" is evaluated at each epoch's end weights on the shuffled labels, "test" on the
    # true test labels
    (outcome,) = run_variants(tracker, ctx, [variant], train, TrainSpec.of(config),
                              evals={"train": train, "test": data.test})

    title = f"{config.dataset}, {config.fraction:.0%} of labels shuffled"
    tracker.figure(plots.lines({s: outcome.series(f"{s}_loss") for s in ("train", "test")},
                               xlabel="epoch", ylabel="cross-entropy", title=title, logy=True),
                   "loss")
    curves = {f"{s} ({'shuffled' if s == 'train' else 'true'} labels)": outcome.series(f"{s}_acc")
              for s in ("train", "test")}
    fig = plots.lines(curves, xlabel="epoch", ylabel="accuracy", title=title)
    fig.axes[0].axhline(1 / data.n_classes, color="gray", linestyle="--", label="chance")
    fig.axes[0].legend(fontsize=8)
    tracker.figure(fig, "accuracy")
    changed = (labels != data.train.y).float().mean().item()
    tracker.summary({"labels_changed": changed, "final_train_acc": outcome.final["train_acc"],
                     "final_test_acc": outcome.final["test_acc"],
                     "final_train_loss": outcome.final["train_loss"],
                     "final_test_loss": outcome.final["test_loss"]})
