"""Figures of 02-03: activation levels, heatmaps of the frequencies, their distribution per layer and the
category map.

Every plot function returns a pyplot Figure with labelled axes; nothing is closed, so the notebook's inline
backend displays it."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.languages import language_name
from .style import (
    FREQ_FLOOR,
    FREQ_LABEL,
    LOG_FREQ_LABEL,
    MANY_LANGUAGES,
    frequency_grid,
    imshow,
    language_lines,
    language_matrix,
    outside_legend,
)


def heatmap_grid(F: np.ndarray, languages: Sequence[str], title: str, order: np.ndarray | None = None) -> Figure:
    """Frequency heatmaps (layers x experts), one per language, on one log colour scale from FREQ_FLOOR (on a
    linear scale with a mean of 0.1 most cells look alike and a few bright ones look like noise)."""
    vmax = float(np.max(F)) or 1.0
    return frequency_grid(F, languages, title, cmap="viridis", vmin=FREQ_FLOOR, vmax=vmax, cbar_label=LOG_FREQ_LABEL,
                          order=order, log=True)


def heatmap_single(f: np.ndarray, language: str, title: str | None = None, order: np.ndarray | None = None,
                   vmax: float | None = None) -> Figure:
    """Frequency heatmap (layers x experts) of one language, on heatmap_grid's log colour scale."""
    f = np.asarray(f, dtype=np.float64)
    if order is not None:
        f = np.take_along_axis(f, np.asarray(order), axis=1)
    fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
    imshow(ax, f, vmin=FREQ_FLOOR, vmax=vmax or float(f.max()) or 1.0, cmap="viridis",
            xlabel="expert rank (by mean frequency)" if order is not None else "expert", ylabel="layer",
            title=title or language_name(language), cbar_label=LOG_FREQ_LABEL, log=True)
    return fig


def layer_distribution(F: np.ndarray, languages: Sequence[str]) -> Figure:
    """Per layer and language, the mean frequency over experts (solid) and its 90th percentile (dashed); above
    MANY_LANGUAGES a language x layer profile matrix (each layer's share of the language's selections)."""
    F = np.asarray(F, dtype=np.float64)
    layers = np.arange(F.shape[1])
    if len(languages) > MANY_LANGUAGES:
        totals = F.sum(axis=2)
        share = pd.DataFrame(100 * totals / totals.sum(axis=1, keepdims=True), index=list(languages), columns=layers)
        return language_matrix(share, "Layer profile: each layer's share of a language's selected experts",
                               "share of the language's selections (%)")
    tidy = pd.DataFrame([(lang, layer, f[layer].mean(), np.percentile(f[layer], 90))
                         for f, lang in zip(F, languages) for layer in layers],
                        columns=["language", "layer", "mean", "p90"])
    fig, ax = plt.subplots(figsize=(8.0, 4.0), constrained_layout=True)
    language_lines(ax, tidy, "mean", marker=".")
    outside_legend(fig, ax)
    language_lines(ax, tidy, "p90", ls="--", lw=0.8)
    ax.set(xlabel="layer", ylabel=FREQ_LABEL, ylim=(0, None),
           title="Per layer: mean (solid) and 90th percentile (dashed)")
    return fig


def activation_level_plot(levels: pd.DataFrame) -> Figure:
    """Per-layer activation level (share of a language's selected experts) per language."""
    fig, ax = plt.subplots(figsize=(8.0, 4.0), constrained_layout=True)
    language_lines(ax, levels, "level", marker=".")
    n_layers = levels["layer"].nunique()
    ax.axhline(1 / n_layers, color="0.5", ls=":", lw=1, label="uniform (1 / L)")
    outside_legend(fig, ax)
    ax.set(xlabel="layer", ylabel="activation level (share of selected experts)", ylim=(0, None),
           title="Where the selected experts sit, per language")
    return fig


CATEGORY_COLOURS = {"not high-frequency": "#f2f2f2", "high in some languages": "#9ecae1",
                    "language-specific": "#e6550d", "shared by all": "#08306b"}


def layer_boxplot(F: np.ndarray, languages: Sequence[str], threshold: float | None = None) -> Figure:
    """Per layer, the distribution of expert frequencies pooled over languages (box: quartiles, whiskers:
    5th-95th percentile) with the high-frequency threshold, and under it each layer's share of experts at or above
    the threshold (two panels on one layer axis, not twin axes that a reader would mix up)."""
    F = np.asarray(F, dtype=np.float64)
    n_layers = F.shape[1]
    values = [F[:, layer, :].ravel() for layer in range(n_layers)]
    panels = 2 if threshold is not None else 1
    fig, axes = plt.subplots(panels, 1, figsize=(max(7.0, 0.3 * n_layers + 3.0), 4.2 + 1.8 * (panels - 1)),
                             sharex=True, squeeze=False, constrained_layout=True,
                             gridspec_kw={"height_ratios": [3, 1.3][:panels]})
    ax = axes[0, 0]
    ax.boxplot(values, positions=range(n_layers), whis=(5, 95), showfliers=False, widths=0.6,
               medianprops={"color": "C3"}, patch_artist=True, boxprops={"facecolor": "0.85"})
    ax.set(ylabel=FREQ_LABEL, ylim=(0, None),
           title=f"Expert frequencies per layer ({len(languages)} languages pooled; whiskers 5th-95th percentile)")
    bottom = axes[-1, 0]
    bottom.set_xticks(range(n_layers), [str(i) if n_layers <= 40 or i % 5 == 0 else "" for i in range(n_layers)])
    bottom.set_xlabel("layer")
    if threshold is not None:
        ax.axhline(threshold, color="0.3", ls="--", lw=1, label=f"high-frequency threshold {threshold:g}")
        ax.legend(loc="upper left", frameon=False, fontsize="small")
        share = (F >= threshold).mean(axis=(0, 2))
        bottom.bar(range(n_layers), share, color="C0", width=0.6)
        bottom.set(ylabel=f"share of experts\nwith f >= {threshold:g}", ylim=(0, 1))
    return fig


def category_map(F: np.ndarray, languages: Sequence[str], threshold: float,
                 order: np.ndarray | None = None) -> Figure:
    """Layer x expert map of expert categories: shared by all, language-specific, high in some, neither."""
    F = np.asarray(F, dtype=np.float64)
    high = F >= threshold
    n_high = high.sum(axis=0)
    cat = np.zeros(F.shape[1:], dtype=int)
    cat[n_high >= 1] = 1
    cat[n_high == 1] = 2
    cat[n_high == len(languages)] = 3
    xlabel = "expert"
    if order is not None:
        cat = np.take_along_axis(cat, np.asarray(order), axis=1)
        xlabel = "expert rank (by mean frequency)"
    names = list(CATEGORY_COLOURS)
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap(list(CATEGORY_COLOURS.values()))
    fig, ax = plt.subplots(figsize=(8.0, 4.2), constrained_layout=True)
    ax.imshow(cat, aspect="auto", interpolation="nearest", origin="lower", cmap=cmap, vmin=-0.5, vmax=3.5)
    ax.set(xlabel=xlabel, ylabel="layer", title=f"Expert categories at f >= {threshold:g} ({len(languages)} languages)")
    ax.yaxis.set_major_locator(MaxNLocator(6, integer=True))
    counts = [int((cat == k).sum()) for k in range(4)]
    fig.legend(handles=[Patch(facecolor=CATEGORY_COLOURS[n], edgecolor="0.5", label=f"{n} ({c})")
                       for n, c in zip(names, counts)],
              loc="outside right upper", frameon=False, fontsize="small")
    return fig
