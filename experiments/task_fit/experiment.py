"""HW1-1 Deep vs shallow, part 2: train on an actual task.

Shallow and deep models of the same parameter budget on MNIST or CIFAR-10; the loss and the
accuracy per epoch, on the training and the test set, show which uses its parameters better.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from experiments.core.context import RunContext
from experiments.core.data import dataset_for
from experiments.core.models import cnn, cnn_features, mlp, widths_for_budget
from experiments.core.train import TrainSpec
from experiments.core.variants import Variant, log_train_test_figures, run_variants
from experiments.task_fit.config import Config
from experiments.tracking import Tracker


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
                            evals={"test": data.test})

    log_train_test_figures(tracker, outcomes, title=f"{config.dataset}: shallow vs deep",
                           train="running")
    best = max(outcomes, key=lambda o: o.final.get("test_acc", 0.0))
    tracker.summary({"best_test_acc": best.final.get("test_acc", 0.0)})
