"""Figures of 04: shared and language-specific experts per layer, the threshold sweep, families.

Every plot function returns a pyplot Figure with labelled axes; nothing is closed, so the notebook's inline
backend displays it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.languages import language_name
from .style import (
    MANY_LANGUAGES,
    Skipped,
    family_colour,
    family_legend,
    family_order,
    family_palette,
    language_lines,
    outside_legend,
)


def counts_per_layer_plot(df: pd.DataFrame) -> Figure:
    """High-frequency, shared and language-specific expert counts per layer (from expert_counts_per_layer)."""
    fig, axes = plt.subplots(1, 3, figsize=(16.0, 4.0), constrained_layout=True)
    titles = {"high_frequency": "High-frequency experts", "shared": "Shared by all languages",
              "specific": "Language-specific experts"}
    for ax, (category, title) in zip(axes, titles.items()):
        part = df[df["category"] == category]
        if category == "shared":
            ax.bar(part["layer"], part["count"], color="0.3")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            language_lines(ax, part, "count", marker=".")
        ax.set(xlabel="layer", ylabel="number of experts", title=title)
    outside_legend(fig, axes[0])
    return fig


SWEEP_LABELS = {"shared": "shared by all languages", "specific": "language-specific (all languages)",
                "high_frequency_mean": "high-frequency (mean per language)"}


def threshold_sweep_plot(df: pd.DataFrame) -> Figure:
    """Counts of shared, specific and mean high-frequency experts against the threshold (log axes where the counts
    allow: they span orders of magnitude; symlog with a linear part below 1 where some count is 0)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
    for i, (category, part) in enumerate(df.groupby("category", sort=False)):
        part = part.sort_values("threshold")
        ax.plot(part["threshold"], part["count"], marker="o", color=f"C{i}",
                label=SWEEP_LABELS.get(str(category), str(category)))
    thresholds = sorted(df["threshold"].unique())
    ax.set_xscale("log")
    ax.set_xticks(thresholds, [f"{t:g}" for t in thresholds])
    ax.minorticks_off()
    if (df["count"] > 0).all():
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
    ax.set(xlabel="high-frequency threshold (share of a language's tokens)", ylabel="number of experts",
           title="Expert counts against the high-frequency threshold")
    ax.legend(frameon=False, fontsize="small")
    return fig


def _category_points(totals: pd.DataFrame) -> Figure:
    """Above MANY_LANGUAGES: each language's high-frequency and language-specific counts as points in family
    order, coloured by family."""
    order = family_order(list(totals["language"]))
    rows = totals.set_index("language").loc[order]
    palette = family_palette(order)
    colours = [family_colour(palette, c) for c in order]
    fig, axes = plt.subplots(2, 1, figsize=(10.0, 6.5), sharex=True, constrained_layout=True)
    for ax, column, label in [(axes[0], "high_frequency", "high-frequency experts"),
                              (axes[1], "specific", "language-specific experts")]:
        ax.scatter(np.arange(len(order)), rows[column], c=colours, s=9, linewidths=0)
        ax.set(ylabel=label, ylim=(0, None))
    axes[1].set_xlabel(f"{len(order)} languages, grouped by family and genus")
    axes[1].set_xticks([])
    shared = int(rows["shared"].iloc[0]) if len(rows) else 0
    axes[0].set_title(f"High-frequency and language-specific experts per language ({shared} shared by all)")
    family_legend(fig, palette, order)
    return fig


def category_totals_plot(totals: pd.DataFrame) -> Figure:
    """Per language: high-frequency experts, of which shared by all and language-specific (points in family
    order above MANY_LANGUAGES)."""
    if len(totals) > MANY_LANGUAGES:
        return _category_points(totals)
    x = np.arange(len(totals))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(totals) + 2.5), 4.0), constrained_layout=True)
    ax.bar(x - 0.27, totals["high_frequency"], 0.27, label="high-frequency", color="C0")
    ax.bar(x, totals["shared"], 0.27, label="shared by all languages", color="0.3")
    ax.bar(x + 0.27, totals["specific"], 0.27, label="language-specific", color="C1")
    ax.set_xticks(x, [language_name(c) for c in totals["language"]], rotation=30, ha="right")
    ax.set(xlabel="language", ylabel="number of experts", title="High-frequency, shared and specific experts")
    ax.legend(frameon=False, fontsize="small")
    return fig


def family_summary_plot(table: pd.DataFrame, alpha: float = 0.05, kind: str = "family") -> Figure | Skipped:
    """Per family (rows, largest first): its shared and own experts (bars) against random groups of as many
    languages (black ticks: their mean), a star where the family's count is beyond them (p < alpha). With fewer
    than two families large enough for the test, no figure (a single bar compares nothing): `Skipped`."""
    if len(table) < 2:
        which = ", ".join(f"{g} ({m} languages)" for g, m in zip(table[kind], table["n_languages"])) or "none"
        return Skipped(f"a comparison of {kind} groups needs two with enough languages; this run has {which}. "
                       "The sentence above gives its numbers.")
    n = len(table)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 1.6 + 0.28 * n), sharey=True, constrained_layout=True)
    y = np.arange(len(table))
    labels = [f"{g} ({m})" for g, m in zip(table[kind], table["n_languages"])]
    for ax, measure, title, colour in [(axes[0], "shared", "shared: high in every language of the group", "0.3"),
                                       (axes[1], "own", "own: high in some of its languages, in no other", "C1")]:
        ax.barh(y, table[measure], color=colour, height=0.6, label=f"the {kind}'s count")
        ax.scatter(table[f"{measure}_random"], y, marker="|", s=160, color="black", zorder=3,
                   label="random groups of as many languages (mean)")
        for yi, value, p in zip(y, table[measure], table[f"{measure}_p"]):
            if p < alpha:
                ax.text(value, yi, " *", va="center", fontsize="large")
        ax.set(xlabel="number of experts", title=title)
    axes[0].set_yticks(y, labels, fontsize=6 if n > 40 else "small")
    axes[0].invert_yaxis()
    axes[0].set_ylabel(f"{kind} (languages in the run)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False, fontsize="small",
               title=f"* beyond the random groups (p < {alpha:g})")
    return fig


def depth_sweep_plot(sweep: pd.DataFrame) -> Figure:
    """Shared and language-specific experts per third of the layers at each threshold (stacked bars)."""
    thresholds = sorted(sweep["threshold"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.8), constrained_layout=True, sharex=True)
    depth_colours = {"shallow": "#c6dbef", "middle": "#6baed6", "deep": "#08519c"}
    x = np.arange(len(thresholds))
    for ax, col, title in [(axes[0], "shared", "Shared by all languages"),
                           (axes[1], "specific", "Language-specific")]:
        bottom = np.zeros(len(thresholds))
        for depth, colour in depth_colours.items():
            vals = np.array([sweep[(sweep.threshold == t) & (sweep.depth == depth)][col].sum() for t in thresholds])
            ax.bar(x, vals, bottom=bottom, color=colour, label=f"{depth} layers", width=0.6)
            bottom += vals
        ax.set_xticks(x, [f"{t:g}" for t in thresholds])
        ax.set(xlabel="frequency threshold", ylabel="number of experts", title=title)
    axes[1].legend(frameon=False, fontsize="small")
    return fig
