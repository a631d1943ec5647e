"""Matplotlib figures (Agg backend), one function per figure kind. Each returns the Figure;
`Run.figure` logs and closes it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# {label: (x, y)} or {label: (x, mean, std)}: a curve, or the mean over seeds with a ±1 std band
Series = Mapping[str, tuple[Sequence[float], ...]]


def _curve(ax: plt.Axes, label: str, curve: tuple[Sequence[float], ...], **style: object) -> None:
    """One curve of a `Series`; with a std, the band mean ± std around it (labelled in the
    legend as over seeds)."""
    x, y = curve[0], curve[1]
    line, = ax.plot(x, y, label=label, **style)
    if len(curve) > 2:
        mean, std = np.asarray(y, dtype=float), np.asarray(curve[2], dtype=float)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def _banded(x: Sequence[float], y: Sequence[float], bands: Mapping[str, Sequence[float]] | None,
            label: str) -> tuple[Sequence[float], ...]:
    """The curve (x, y), with its std `bands[label]` when there is one."""
    return (x, y, bands[label]) if bands and label in bands else (x, y)


def _axes(ax: plt.Axes, *, logx: bool = False, logy: bool = False) -> None:
    """Log scales where asked, and the light grid every figure has."""
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def lines(series: Series, *, xlabel: str, ylabel: str, title: str, logy: bool = False,
          logx: bool = False, markers: Mapping[str, tuple[float, float]] | None = None,
          vlines: Mapping[str, float] | None = None, marker: str | None = None) -> Figure:
    """Curves y(x), one per label (`marker`, e.g. "o", on every point: one point per model);
    `markers` marks one point per label (e.g. a stop); `vlines` draws a labelled dashed
    vertical line at each x (e.g. where training stopped)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curve in series.items():
        _curve(ax, label, curve, linewidth=1.4, marker=marker)
    for label, (x, y) in (markers or {}).items():
        ax.plot([x], [y], "kx", markersize=10)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    for (label, x), style in zip((vlines or {}).items(), cycle(("--", ":", "-."))):
        ax.axvline(x, color="0.3", linestyle=style, linewidth=1.1, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    _axes(ax, logx=logx, logy=logy)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def predictions(x: Sequence[float], truth: Sequence[float],
                predicted: Mapping[str, Sequence[float]], *, title: str,
                bands: Mapping[str, Sequence[float]] | None = None) -> Figure:
    """Ground truth against each model's prediction on the input domain; `bands[label]`, when
    given, is a std drawn as the band prediction ± std (e.g. over seeds, the prediction their
    mean)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, truth, "k-", linewidth=2.5, label="ground truth")
    for label, y in predicted.items():
        _curve(ax, label, _banded(x, y, bands, label), linestyle="--", linewidth=1.4)
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def twin_axes(x: Sequence[float], left: Mapping[str, Sequence[float]],
              right: Mapping[str, Sequence[float]], *, xlabel: str, left_label: str,
              right_label: str, title: str, logx: bool = False, logy: bool = False,
              errors: Mapping[str, Sequence[float]] | None = None) -> Figure:
    """Curves {label: y} on the left axis (solid, log scale with `logy`, named `left_label`)
    and on a second y axis (dashed, named `right_label`, e.g. sensitivity). The k-th right
    curve takes the k-th left curve's colour, so give both in the same order (train, test);
    the legend sits below the axes, clear of the data. `errors[label]`, when given, is a std
    drawn as error bars y ± std at each point (e.g. over seeds, y their mean)."""
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, y), color in zip(left.items(), colors):
        ax.errorbar(x, y, yerr=(errors or {}).get(label), fmt="o-", color=color, label=label,
                    capsize=3)
    ax.set(xlabel=xlabel, ylabel=f"{left_label} (solid)", title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    other = ax.twinx()
    for (label, y), color in zip(right.items(), colors):
        other.errorbar(x, y, yerr=(errors or {}).get(label), fmt="s--", color=color, label=label,
                       alpha=0.85, capsize=3)
    other.set_ylabel(f"{right_label} (dashed)")
    handles = ax.get_legend_handles_labels()
    extra = other.get_legend_handles_labels()
    fig.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="lower center",
               ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def panels(grid: Mapping[str, Series], *, xlabel: str, ylabel: str, title: str,
           logy: bool = False, logx: bool = False, columns: int = 3,
           marker: str | None = None, sharey: bool = False) -> Figure:
    """`lines`-style panels in a grid, one per key of `grid` (e.g. one per layer, or train and
    test), each with one curve per label; the labels keep their colour across panels."""
    rows = -(-len(grid) // columns)
    cols = min(columns, len(grid))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False,
                             sharey=sharey)
    for ax, (name, series) in zip(axes.flat, grid.items()):
        for label, curve in series.items():
            _curve(ax, label, curve, linewidth=1.3, marker=marker)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        _axes(ax, logx=logx, logy=logy)
    for ax in axes.flat[len(grid):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


Samples = tuple[Sequence[int], Sequence[Sequence[float]]]


def histograms(grid: Mapping[str, Mapping[str, Samples]], *, title: str, bins: int = 60,
               notes: Mapping[tuple[str, str], str] | None = None) -> Figure:
    """TensorBoard's histogram view as a figure: one panel per `grid[row][column]` = (steps,
    values at each step), e.g. rows = layers, columns = weights / biases / activations. Each
    panel is a ridgeline: one peak-normalised histogram per recorded step (at most `bins` bins,
    fewer for few values, lightly smoothed), time running down the y axis (early = dark, at the
    top; late = light, in front). The x range is the central 99.8% of the panel's values over
    all steps, so one outlier does not flatten the rest. Each panel is labelled with the
    standard deviation at the first and last step (so "did it move?" reads without squinting),
    "all = c" when every value at every step is c, and `notes[row, column]` when given (an x
    label, below the panel, so it never hides a histogram)."""
    columns = list(dict.fromkeys(column for row in grid.values() for column in row))
    fig, axes = plt.subplots(len(grid), len(columns), figsize=(3.9 * len(columns), 2.9 * len(grid)),
                             squeeze=False)
    for axes_row, (row, cells) in zip(axes, grid.items()):
        for ax, column in zip(axes_row, columns):
            if column not in cells:
                ax.axis("off")
                continue
            _ridgeline(ax, *cells[column], bins=bins, note=(notes or {}).get((row, column)))
            ax.set_title(f"{row} · {column}", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the suptitle
    return fig


def _ridgeline(ax: plt.Axes, steps: Sequence[int], samples: Sequence[Sequence[float]],
               bins: int, note: str | None = None) -> None:
    height = 2.5  # a peak spans 2.5 steps' rows, so the ridges overlap
    values = [np.asarray(v, dtype=float).ravel() for v in samples]
    finite = np.concatenate(values)
    finite = finite[np.isfinite(finite)]
    lo, hi = np.percentile(finite, [0.1, 99.9]) if finite.size else (0.0, 1.0)
    constant = finite.size > 0 and finite.min() == finite.max()
    if hi - lo < 1e-6 * max(1.0, abs(lo)):  # a spike (e.g. zero init): give it some width
        pad = max(1e-3, 0.05 * abs(lo))
        lo, hi = lo - pad, hi + pad
    bins = int(np.clip(2 * np.sqrt(max(len(v) for v in values)), 12, bins))
    edges = np.linspace(lo, hi, bins + 1)
    centres = (edges[1:] + edges[:-1]) / 2
    kernel = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    colours = plt.cm.viridis(np.linspace(0.0, 0.92, len(values)))
    for t, (v, colour) in enumerate(zip(values, colours)):
        counts = np.convolve(np.histogram(v, edges)[0], kernel / kernel.sum(), mode="same")
        density = counts / max(counts.max(), 1e-12)
        ax.fill_between(centres, t, t - height * density, facecolor=colour, edgecolor="white",
                        linewidth=0.5, zorder=t)
    ticks = sorted({round(i) for i in np.linspace(0, len(values) - 1, min(len(values), 5))})
    ax.set_yticks(ticks, [str(steps[i]) for i in ticks], fontsize=7)
    ax.set_ylim(len(values) - 0.5, -height - 0.5)
    ax.set_xlim(lo, hi)
    ax.set_ylabel("step", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    first, last = (np.nanstd(v) if v.size else np.nan for v in (values[0], values[-1]))
    label = f"all = {finite[0]:.3g}" if constant else f"std {first:.3g} → {last:.3g}"
    ax.set_xlabel(label + (f" · {note}" if note else ""), fontsize=7.5)


def scatter_panels(grid: Mapping[str, Series], *, ylabel: str, title: str,
                   logy: bool = False) -> Figure:
    """Side-by-side scatter plots sharing the y axis, one per key of `grid` (the key is that
    panel's x label), each with one point cloud per label (e.g. minimal ratio vs loss)."""
    fig, axes = plt.subplots(1, len(grid), figsize=(5.6 * len(grid), 4.4), sharey=True,
                             squeeze=False)
    for ax, (xlabel, series) in zip(axes.flat, grid.items()):
        for label, (x, y) in series.items():
            ax.scatter(x, y, s=18, alpha=0.7, label=label)
        ax.set(xlabel=xlabel)
        _axes(ax, logy=logy)
    axes.flat[0].set_ylabel(ylabel)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def trajectories(paths: Series, notes: Mapping[str, Sequence[str]], *, title: str,
                 xlabel: str = "PC 1", ylabel: str = "PC 2") -> Figure:
    """2-D paths, one colour per label (e.g. a training event's weights in PCA space), each
    point annotated with its note (e.g. the accuracy there); the first point is circled."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    for label, (x, y) in paths.items():
        line, = ax.plot(x, y, "o-", markersize=4, linewidth=1, alpha=0.85, label=label)
        ax.plot(x[:1], y[:1], "o", markersize=9, fillstyle="none", color=line.get_color())
        for xi, yi, note in zip(x, y, notes.get(label, ())):
            ax.annotate(note, (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6,
                        color=line.get_color())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def shared_x(x: Sequence[float], curves: Mapping[str, Sequence[float]], *, xlabel: str,
             title: str, logy: bool = False,
             bands: Mapping[str, Sequence[float]] | None = None) -> Figure:
    """Curves of different units over the same x (e.g. loss and gradient norm per iteration),
    one panel each, stacked on one shared x axis; `bands[label]`, when given, is a std drawn as
    the band curve ± std (e.g. over seeds, the curve their mean)."""
    fig, axes = plt.subplots(len(curves), 1, figsize=(8, 2.6 * len(curves) + 0.6), sharex=True,
                             squeeze=False)
    for ax, (label, y), color in zip(axes.flat, curves.items(),
                                     cycle(("tab:blue", "tab:red", "tab:green"))):
        _curve(ax, label, _banded(x, y, bands, label), linewidth=0.8, color=color)
        ax.set_ylabel(label)
        _axes(ax, logy=logy)
    axes.flat[-1].set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
