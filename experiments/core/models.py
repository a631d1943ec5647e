"""MLP and CNN builders, exact parameter counts, and widths that meet a parameter budget."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from experiments.core.config import mlp_params
from experiments.core.data import Dataset

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def classifier(data: Dataset, hidden: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """An MLP for `data`: its flattened inputs in, one logit per class out."""
    return mlp(math.prod(data.input_shape), hidden, data.n_classes, activation)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu") -> nn.Sequential:
    """Flatten → [Linear → activation] per hidden width → Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def cnn(in_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int], out_dim: int,
        activation: str = "relu") -> nn.Sequential:
    """LeNet-style: [Conv5x5 (same padding) → activation → MaxPool2] per channel count, then an
    MLP head with the given hidden widths."""
    layers: list[nn.Module] = []
    c, h, w = in_shape
    for out_c in channels:
        layers += [nn.Conv2d(c, out_c, 5, padding=2), ACTIVATIONS[activation](), nn.MaxPool2d(2)]
        c, h, w = out_c, h // 2, w // 2
    return nn.Sequential(*layers, *mlp(c * h * w, hidden, out_dim, activation))


LAYER_ARGS = {nn.Linear: ("in_features", "out_features"), nn.Conv2d: ("in_channels", "out_channels",
               "kernel_size", "padding"), nn.MaxPool2d: ("kernel_size",)}  # what rebuilds each layer


def architecture(model: nn.Sequential) -> list[dict[str, object]]:
    """The model as data: one `{"type": <torch.nn class>, **constructor args}` per layer, so that
    `nn.Sequential(*(getattr(nn, d.pop("type"))(**d) for d in spec))` rebuilds it with plain
    torch and its `state_dict` keys (`<layer index>.weight`) match the saved weights."""
    return [{"type": type(layer).__name__,
             **{arg: getattr(layer, arg) for arg in LAYER_ARGS.get(type(layer), ())}}
            for layer in model]


INIT_SCHEMES = ("zero", "gaussian", "gaussian_fan_in")


def initialize(model: nn.Module, scheme: str, variance: float = 1.0) -> nn.Module:
    """Re-initialise every Linear and Conv2d layer in place, biases to 0. `zero`: weights 0 too
    (every hidden unit computes the same thing, forever); `gaussian`: weights ~ N(0, variance);
    `gaussian_fan_in`: N(0, variance / fan_in) (variance 2 with ReLU is He's init). Draws from
    the global torch RNG: seed it first."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {INIT_SCHEMES}")
    with torch.no_grad():
        for layer in model.modules():
            if not isinstance(layer, (nn.Linear, nn.Conv2d)):
                continue
            if scheme == "zero":
                layer.weight.zero_()
            else:
                fan_in = layer.weight[0].numel() if scheme == "gaussian_fan_in" else 1
                layer.weight.normal_(0.0, math.sqrt(variance / fan_in))
            if layer.bias is not None:
                layer.bias.zero_()
    return model


def count_params(model: nn.Module) -> int:
    """Weights and biases, every trainable element counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cnn_features(in_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int]:
    """(parameters of the conv stack, size of its flattened output)."""
    c, h, w = in_shape
    params = 0
    for out_c in channels:
        params += (c * 25 + 1) * out_c
        c, h, w = out_c, h // 2, w // 2
    return params, c * h * w


def widths_for_budget(budget: int, depth: int, in_dim: int = 1, out_dim: int = 1) -> list[int]:
    """Hidden widths for `depth` hidden layers whose MLP has about `budget` parameters.

    All layers share one width except the last, which absorbs the remainder; among the choices
    within 1% of the budget the most uniform one wins (else the closest). Raises ValueError
    when even width-1 layers exceed the budget.
    """
    if depth < 1:
        raise ValueError("depth must be at least 1")
    if mlp_params(in_dim, [1] * depth, out_dim) > budget:
        raise ValueError(f"a {depth}-hidden-layer MLP needs more than {budget} parameters")
    if depth == 1:
        w = max(1, round((budget - out_dim) / (in_dim + 1 + out_dim)))
        return [w]
    best: tuple[tuple[bool, float, float], list[int]] | None = None
    for w in range(1, 8193):
        fixed = mlp_params(in_dim, [w] * (depth - 1), 0)  # layers before the last hidden one
        step = w + 1 + out_dim  # parameters per unit of the last hidden layer
        last = round((budget - fixed - out_dim) / step)
        if last < 1:
            break
        widths = [w] * (depth - 1) + [last]
        error = abs(mlp_params(in_dim, widths, out_dim) - budget) / budget
        score = (error > 0.01, abs(math.log(last / w)), error)
        if best is None or score < best[0]:
            best = (score, widths)
    assert best is not None
    return best[1]
