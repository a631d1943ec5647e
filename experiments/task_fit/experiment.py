"""HW1-1 Deep vs shallow, part 2: train on an actual task.

Shallow and deep models of the same parameter budget on MNIST or CIFAR-10, each from `seeds`
seeds; the loss and the accuracy per epoch (mean over the seeds with a ±1 std band), on the
training and the test set, show which uses its parameters better. The finding: each depth's
mean final test accuracy minus the shallowest's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from experiments.core.context import RunContext
from experiments.core.data import dataset_for
from experiments.core.findings import Finding, difference, log_findings
from experiments.core.models import cnn, cnn_features, mlp, widths_for_budget
from experiments.core.train import TrainSpec
from experiments.core.variants import (
    Outcome,
    Variant,
    by_group,
    log_train_test_figures,
    run_variants,
    summarize,
)
from experiments.task_fit.config import Config
from experiments.tracking import Tracker

CLAIM = "at about equal parameters the deeper model reaches a higher test accuracy"


def model_builder(config: Config, depth: int, in_shape: tuple[int, ...],
                  n_classes: int) -> tuple[Callable[[], nn.Module], dict]:
    """A model of `depth` and its settings; its widths fill the parameter budget."""
    if config.family == "mlp":
        in_dim = in_shape[0] * in_shape[1] * in_shape[2]
        hidden = widths_for_budget(config.param_budget, depth, in_dim, n_classes)
        return (lambda: mlp(in_dim, hidden, n_classes)), {"depth": depth, "hidden": hidden}
    if depth > len(config.conv_channels):
        raise ValueError(f"depth {depth} needs {depth} entries in conv_channels")
    channels = config.conv_channels[:depth]
    conv_params, features = cnn_features(in_shape, channels)
    hidden = widths_for_budget(config.param_budget - conv_params, 2, features, n_classes)
    return ((lambda: cnn(in_shape, channels, hidden, n_classes)),
            {"depth": depth, "channels": channels, "hidden": hidden})


def run(config: Config, tracker: Tracker, ctx: RunContext) -> None:
    data = dataset_for(config, ctx.device)
    variants = []
    for depth in config.depths:
        build, params = model_builder(config, depth, data.input_shape, data.n_classes)
        variants.append(Variant(f"{config.family}-depth{depth}", build, config.seed,
                                {"family": config.family, **params}))
    outcomes = run_variants(tracker, ctx, variants, data.train, TrainSpec.of(config),
                            evals={"test": data.test}, seeds=config.seeds)
    summarize(tracker, outcomes)
    log_findings(tracker, findings(config, outcomes))
    log_train_test_figures(tracker, outcomes, train="running",
                           title=f"{config.dataset}: shallow vs deep (mean ± std over seeds)")


def depth_of(seeds: list[Outcome]) -> int:
    """The depth of a variant's seeds."""
    return seeds[0].variant.params["depth"]


def final_test_accuracies(seeds: list[Outcome]) -> list[float]:
    """The final test accuracy of each seed."""
    return [o.final["test_acc"] for o in seeds]


def findings(config: Config, outcomes: list[Outcome]) -> list[Finding]:
    """Per depth above the shallowest: its mean final test accuracy over seeds minus the
    shallowest's (expected above 0)."""
    groups = by_group(outcomes)
    shallow = min(groups, key=lambda name: depth_of(groups[name]))
    return [difference(f"deeper_higher_test_acc_depth{depth_of(seeds)}", CLAIM,
                       final_test_accuracies(seeds), final_test_accuracies(groups[shallow]),
                       expect="above", seed=config.seed,
                       what=f"final test accuracy, {name} − {shallow}")
            for name, seeds in groups.items() if depth_of(seeds) > depth_of(groups[shallow])]
