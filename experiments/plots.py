"""Matplotlib figures (Agg backend), one function per figure kind. Each returns the Figure;
`Run.figure` logs and closes it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def lines(series: Series, *, xlabel: str, ylabel: str, title: str, logy: bool = False,
          logx: bool = False, markers: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """Curves y(x), one per label; `markers` marks one point per label (e.g. a stop)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, linewidth=1.4)
    for label, (x, y) in (markers or {}).items():
        ax.plot([x], [y], "kx", markersize=10)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def train_test_panels(series: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                      *, metric: str, xlabel: str = "epoch", logy: bool = False,
                      title: str = "") -> Figure:
    """Two panels, train and test: `series[variant][split] = (x, y)` of one metric."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, split in zip(axes, ("train", "test")):
        for variant, by_split in series.items():
            if split in by_split:
                ax.plot(*by_split[split], label=variant, linewidth=1.4)
        ax.set(xlabel=xlabel, ylabel=metric, title=f"{split} {metric}")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def predictions(x: Sequence[float], truth: Sequence[float],
                predicted: Mapping[str, Sequence[float]], *, title: str) -> Figure:
    """Ground truth against each model's prediction on the input domain."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, truth, "k-", linewidth=2.5, label="ground truth")
    for label, y in predicted.items():
        ax.plot(x, y, "--", linewidth=1.4, label=label)
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def twin_axes(x: Sequence[float], left: Mapping[str, Sequence[float]],
              right: tuple[str, Sequence[float]] | Mapping[str, Sequence[float]], *, xlabel: str,
              left_label: str, title: str, logx: bool = False, logy: bool = False,
              right_label: str | None = None) -> Figure:
    """Several curves on the left axis (log scale with `logy`) against one — `(label, y)` — or
    several — `{label: y}`, axis named `right_label` — on a second y axis (e.g. sensitivity)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, y in left.items():
        ax.plot(x, y, "o-", label=label)
    ax.set(xlabel=xlabel, ylabel=left_label, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    other = ax.twinx()
    rights = dict([right]) if isinstance(right, tuple) else right
    for (label, y), style in zip(rights.items(), ("s--", "^:", "v-.", "d--")):
        other.plot(x, y, style, color="tab:red", label=label)
    other.set_ylabel(right_label or next(iter(rights)), color="tab:red")
    handles = ax.get_legend_handles_labels()
    extra = other.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
