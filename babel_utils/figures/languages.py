"""Figures of 05: matrices, the tree, the MDS map, per-layer similarity, tests and intervals.

Every plot function returns a pyplot Figure with labelled axes; nothing is closed, so the notebook's inline
backend displays it."""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from matplotlib.ticker import MaxNLocator
from scipy.cluster import hierarchy

from ..analyse.similarity import PermutationResult, check_metric
from ..core.languages import LANGUAGES, language_name
from .style import (
    MANY_LANGUAGES,
    MANY_PAIRS,
    family_colour,
    family_legend,
    family_order,
    family_palette,
    imshow,
    language_matrix,
)


def matrix_heatmap(df: pd.DataFrame, title: str, cbar_label: str, cmap: str = "viridis") -> Figure:
    """A language x language matrix with names on the axes and values written in small matrices."""
    values = df.to_numpy(dtype=np.float64)
    n = len(df)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n + 1.5, 1.0 + 0.6 * n), constrained_layout=True)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    imshow(ax, values, vmin=vmin, vmax=vmax, cmap=cmap, xlabel="language", ylabel="language",
            title=title, cbar_label=cbar_label)
    ax.invert_yaxis()
    names = [language_name(c) for c in df.index]
    ax.set_xticks(range(n), [language_name(c) for c in df.columns], rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    if n <= 12:
        mid = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize="x-small",
                    color="white" if v < mid else "black")
    return fig


def _leaf_label(code: str) -> str:
    """'Name — family / genus / script' for a dendrogram leaf."""
    if code not in LANGUAGES:
        return str(code)
    lang = LANGUAGES[code]
    return f"{lang.name} — {lang.family} / {lang.genus} / {lang.script} script"


CIRCULAR_TREE = 100  # above this many languages the tree is drawn in a circle: a page tall enough for each leaf
# would be metres long (509 languages: 12,458 pixels)


def dendrogram_plot(linkage: np.ndarray, languages: Sequence[str], distance_label: str = "distance",
                    title: str = "Hierarchical clustering of languages") -> Figure:
    """Dendrogram with each leaf labelled by name and its family / genus / script, coloured by family; above
    CIRCULAR_TREE languages a circular tree with the names around it (zoom into the PDF)."""
    if len(languages) > CIRCULAR_TREE:
        return _circular_dendrogram(linkage, languages, distance_label, title)
    many = len(languages) > MANY_LANGUAGES  # a tall tree with small labels (zoom into the PDF)
    fig, ax = plt.subplots(figsize=(9.0, (0.16 if many else 0.45) * len(languages) + 1.5), constrained_layout=True)
    hierarchy.dendrogram(linkage, labels=[_leaf_label(c) for c in languages], orientation="left",
                         ax=ax, color_threshold=0, above_threshold_color="0.3", leaf_font_size=6 if many else None)
    families = sorted({LANGUAGES[c].family for c in languages if c in LANGUAGES})
    palette = (family_palette(languages) if many else
               dict(zip(families, sns.color_palette("colorblind", len(families)))))
    by_label = {_leaf_label(c): c for c in languages}
    for tick in ax.get_yticklabels():
        code = by_label.get(tick.get_text())
        if code in LANGUAGES:
            tick.set_color(palette[LANGUAGES[code].family])
    ax.set(xlabel=distance_label, ylabel="language (family / genus / script)", title=title)
    return fig


def _circular_dendrogram(linkage: np.ndarray, languages: Sequence[str], distance_label: str, title: str) -> Figure:
    """The tree in polar coordinates: leaves on the rim (angle), merges towards the centre (radius = the largest
    merge distance minus the distance), names outside the rim coloured by family, the largest families in the
    legend."""
    tree = hierarchy.dendrogram(linkage, no_plot=True, labels=list(languages))
    n = len(languages)
    top = float(np.max(tree["dcoord"])) or 1.0
    fig = plt.figure(figsize=(12.0, 12.0), constrained_layout=True)
    ax = fig.add_subplot(projection="polar")
    def angle(i: float) -> float:  # dendrogram puts leaf k at 10k + 5
        return 2 * np.pi * (i - 5) / (10 * n)
    for xs, ys in zip(tree["icoord"], tree["dcoord"]):
        # the two legs run outwards from the merge; the bar joining them follows the circle at the merge radius
        (x0, x1, x2, x3), (y0, y1, y2, y3) = xs, ys
        ax.plot([angle(x0)] * 2, [top - y0, top - y1], color="0.3", lw=0.4)
        ax.plot([angle(x3)] * 2, [top - y3, top - y2], color="0.3", lw=0.4)
        arc = np.linspace(angle(x1), angle(x2), max(2, int(abs(x2 - x1) / 10) + 2))
        ax.plot(arc, [top - y1] * len(arc), color="0.3", lw=0.4)
    palette = family_palette(list(languages))
    for k, code in enumerate(tree["ivl"]):
        theta = angle(10 * k + 5)
        degrees = np.degrees(theta)
        flip = 90 < degrees < 270
        ax.text(theta, top * 1.02, language_name(code), rotation=degrees + (180 if flip else 0),
                rotation_mode="anchor", ha="right" if flip else "left", va="center", fontsize=3.2,
                color=family_colour(palette, code))
    ax.set_ylim(0, top * 1.02)
    ax.set_axis_off()
    fig.suptitle(f"{title}: {n} languages (radius: {distance_label}, the centre is the last merge)")
    family_legend(fig, palette, list(languages))
    return fig


SCRIPT_MARKERS = "osD^v<>phX*P8H+x"  # one marker per script, the commonest first


def mds_plot(coords: pd.DataFrame, explained: Sequence[float], distance_label: str) -> Figure:
    """The languages on a 2-D map of their distances (classical MDS), coloured by family and marked by script;
    names beside the points up to 40 languages, the largest families in the legend."""
    codes = list(coords.index)
    many = len(codes) > MANY_LANGUAGES
    palette = family_palette(codes)
    scripts = pd.Series([LANGUAGES[c].script if c in LANGUAGES else "?" for c in codes]).value_counts().index
    marker = {s: SCRIPT_MARKERS[i % len(SCRIPT_MARKERS)] for i, s in enumerate(scripts)}
    fig, ax = plt.subplots(figsize=(8.5, 7) if many else (6.5, 5), constrained_layout=True)
    for code, (x, y) in zip(codes, coords.iloc[:, :2].to_numpy()):
        lang = LANGUAGES.get(code)
        shape = marker[lang.script if lang else "?"]
        ax.scatter(x, y, s=18 if many else 45, color=family_colour(palette, code), marker=shape,
                   edgecolor="black" if MarkerStyle(shape).is_filled() else None, linewidth=0.3)
        if len(codes) <= 40:
            ax.annotate(language_name(code), (x, y), fontsize=6 if many else "small", xytext=(3, 3),
                        textcoords="offset points")
    ax.set(xlabel=f"MDS dimension 1 ({explained[0]:.0%} of the variance)",
           ylabel=f"MDS dimension 2 ({explained[1]:.0%} of the variance)",
           title=f"Languages by {distance_label} (classical MDS)")
    shown = list(palette)[:12]
    families = [plt.Line2D([], [], ls="", marker="o", color=palette[f], label=f) for f in shown]
    marks = [plt.Line2D([], [], ls="", marker=marker[s], color="black", mfc="none", label=f"{s} script")
             for s in list(scripts)[:8]]
    ax.legend(handles=families + marks, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small",
              frameon=False, title="family (largest) and script")
    return fig


def per_layer_similarity_plot(df: pd.DataFrame) -> Figure:
    """Per-layer pair values (from per_layer_similarity) as a pair x layer heatmap; above MANY_LANGUAGES each
    language's mean value to the others, per layer (a language x layer matrix in family order)."""
    metric = str(df["metric"].iloc[0]) if "metric" in df and len(df) else "value"
    label = check_metric(metric).label
    languages = list(dict.fromkeys([*df["lang_a"], *df["lang_b"]]))
    if len(languages) > MANY_LANGUAGES:
        both = pd.concat([df.rename(columns={"lang_a": "language"}), df.rename(columns={"lang_b": "language"})])
        mean = both.groupby(["language", "layer"])["value"].mean().unstack("layer").reindex(languages)
        return language_matrix(mean, f"Per-layer {label}: each language's mean to the other languages",
                               f"mean {label}")
    df = df.assign(pair=df["lang_a"] + "–" + df["lang_b"])
    pairs = list(dict.fromkeys(df["pair"]))
    wide = df.pivot(index="pair", columns="layer", values="value").reindex(pairs)
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(pairs) + 1.8), constrained_layout=True)
    values = wide.to_numpy(dtype=np.float64)
    imshow(ax, values, vmin=float(np.nanmin(values)), vmax=float(np.nanmax(values)), cmap="viridis",
            xlabel="layer", ylabel="language pair", title=f"Per-layer {label}", cbar_label=label)
    ax.set_yticks(range(len(pairs)), pairs, fontsize="x-small" if len(pairs) > 12 else "small")
    ax.invert_yaxis()
    return fig


def permutation_plot(result: PermutationResult) -> Figure:
    """Histogram of the permutation null with the observed statistic and the p-value."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
    ax.hist(result.null, bins=40, color="0.6")
    ax.axvline(result.observed, color="C3", lw=2, label=f"observed = {result.observed:.3g}")
    ax.set(xlabel="mean cross-family distance − mean same-genus distance", ylabel="number of permutations",
           title=f"Permutation test: p = {result.p_value:.3g} ({result.n_permutations} permutations)")
    ax.legend(frameon=False)
    return fig


def matrix_panels(matrices: dict[str, pd.DataFrame], title: str = "Similarity between languages") -> Figure:
    """Several language x language matrices side by side (one colour bar each), languages by name."""
    n = len(matrices)
    ncols = min(2, n)
    nrows = math.ceil(n / ncols)
    size = len(next(iter(matrices.values())))
    many = size > MANY_LANGUAGES  # languages in family order; no names beyond 40
    side = 1.6 + 0.45 * size if not many else 7.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * (side + 1.6), nrows * side + 0.6),
                             squeeze=False, constrained_layout=True)
    for ax, (metric, df) in zip(axes.flat, matrices.items()):
        if many:  # relatives side by side
            order = family_order(list(df.index))
            df = df.loc[order, order]
        values = df.to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        cmap = "viridis" if check_metric(metric).similarity else "viridis_r"
        imshow(ax, values, vmin=float(finite.min()), vmax=float(finite.max()), cmap=cmap, xlabel="", ylabel="",
                title=check_metric(metric).label, cbar_label=None)
        ax.figure.colorbar(ax.images[0], ax=ax, shrink=0.85)
        ax.invert_yaxis()
        if size <= 40:
            ax.set_xticks(range(size), [language_name(c) for c in df.columns], rotation=45, ha="right",
                          fontsize="small" if not many else 5)
            ax.set_yticks(range(size), [language_name(c) for c in df.index], fontsize="small" if not many else 5)
        else:
            ax.set(xlabel=f"{size} languages", ylabel=f"{size} languages")
        if not check_metric(metric).symmetric:
            ax.set(xlabel="second argument", ylabel="first argument")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title + " (yellow = more alike, for every metric)")
    return fig


def per_layer_curve_plot(curve: pd.DataFrame) -> Figure:
    """Per layer: mean metric over all pairs, same-genus pairs and different-family pairs."""
    metric = str(curve["metric"].iloc[0])
    label = check_metric(metric).label
    fig, ax = plt.subplots(figsize=(8.0, 4.0), constrained_layout=True)
    styles = {"all pairs": dict(color="0.3", marker="."), "same genus": dict(color="C2", marker="o", ms=3),
              "different family": dict(color="C3", marker="s", ms=3)}
    for group, part in curve.groupby("group", sort=False):
        ax.plot(part["layer"], part["value"], label=group, **styles.get(group, {}))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    more = "higher = more alike" if check_metric(metric).similarity else "lower = more alike"
    ax.set(xlabel="layer", ylabel=f"mean {label}", title=f"Similarity between languages per layer ({more})")
    ax.legend(frameon=False)
    return fig


def recovery_plot(per_layer: pd.DataFrame, whole: pd.DataFrame, alpha: float = 0.05) -> Figure:
    """Per layer: how well the tree recovers each grouping (ARI), filled where p < alpha, with the permutation
    null's mean dashed and the whole tree's ARI at the right."""
    fig, ax = plt.subplots(figsize=(8.0, 4.0), constrained_layout=True)
    for i, (grouping, part) in enumerate(per_layer.groupby("grouping", sort=False)):
        colour = f"C{i}"
        ax.plot(part["layer"], part["ari"], color=colour, lw=1.2, label=grouping)
        sig = part["p_value"] < alpha
        ax.plot(part.loc[sig, "layer"], part.loc[sig, "ari"], "o", color=colour, ms=5)
        ax.plot(part.loc[~sig, "layer"], part.loc[~sig, "ari"], "o", mfc="white", color=colour, ms=5)
        ax.plot(part["layer"], part["null_mean"], ls="--", lw=0.8, color=colour, alpha=0.6)
        ari = whole.set_index("grouping")["ari"].get(grouping, np.nan)
        if np.isfinite(ari):
            ax.annotate(f"all layers {ari:.2f}", (1.01, ari), xycoords=("axes fraction", "data"), color=colour,
                        fontsize=8, va="center")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="layer", ylabel="adjusted Rand index (1 = the groups exactly)",
           title=f"Does the activation tree recover the groups? (filled: p < {alpha:g}; dashed: permuted labels)")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=len(whole))
    return fig


def pair_interval_plot(pairs: pd.DataFrame, metric: str) -> Figure:
    """Pair distances with their bootstrap 95 % intervals, coloured by the languages' relation."""
    label = check_metric(metric).distance_label
    colours = {"same genus": "C2", "same family, other genus": "C0", "different family": "C3"}
    n_pairs, shown = len(pairs), ""
    if n_pairs > MANY_LANGUAGES * (MANY_LANGUAGES - 1) // 2:  # many languages: the ends of the ranking
        pairs = pd.concat([pairs.head(MANY_PAIRS), pairs.tail(MANY_PAIRS)])
        shown = f" ({MANY_PAIRS} closest and {MANY_PAIRS} farthest of {n_pairs} pairs)"
    fig, ax = plt.subplots(figsize=(7.5, 0.24 * len(pairs) + 1.6), constrained_layout=True)
    y = np.arange(len(pairs))[::-1]
    for rel, colour in colours.items():
        sel = (pairs["relation"] == rel).to_numpy()
        if not sel.any():
            continue
        part = pairs[sel]
        if "low" in part:  # the interval as a bar (it need not contain the point: basic intervals correct bias)
            ax.hlines(y[sel], part["low"], part["high"], color=colour, lw=2, alpha=0.6)
        ax.plot(part["distance"], y[sel], "o", color=colour, ms=4, label=rel)
    names = [f"{language_name(a)}–{language_name(b)}" for a, b in zip(pairs["lang_a"], pairs["lang_b"])]
    ax.set_yticks(y, names, fontsize="x-small" if len(pairs) > 24 else "small")
    ax.set(xlabel=label, ylabel="language pair",
           title="Distance per pair (dot) with its bootstrap 95 % interval (bar), closest at the top" + shown)
    ax.legend(frameon=True, fontsize="small", loc="best")
    return fig


def expert_grid_plot(grid: pd.DataFrame, alpha: float = 0.05) -> Figure:
    """Across numbers of experts: the genus gap and its p-value, and the agreement with the reference."""
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.6), constrained_layout=True)
    n = grid["n_experts"]
    axes[0].plot(n, grid["genus_gap"], marker="o")
    axes[0].axhline(0, color="0.5", lw=0.8)
    axes[0].set(ylabel="different-family − same-genus distance", title="Genus effect")
    axes[1].plot(n, grid["p_value"], marker="o", color="C3")
    axes[1].axhline(alpha, color="0.5", ls="--", lw=1, label=f"α = {alpha:g}")
    tested = grid["p_value"].dropna()
    if tested.empty:  # no same-genus pair among these languages: no test at any granularity
        axes[1].text(0.5, 0.5, "no genus test with these languages", ha="center", va="center",
                     transform=axes[1].transAxes, color="0.3")
    else:
        axes[1].set_yscale("log")
        low, high = min(float(tested.min()), alpha) / 1.5, min(1.0, max(float(tested.max()), alpha) * 1.5)
        ticks = [v for v in (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
                 if low <= v <= high]
        axes[1].set_yticks(ticks, [f"{v:g}" for v in ticks])  # plain numbers: one "10^-2" on a log axis reads as none
        axes[1].set_ylim(low, high)
    axes[1].set(ylabel="permutation p-value", title="Genus test")
    axes[1].legend(frameon=False)
    axes[2].plot(n, grid["spearman_vs_reference"], marker="o", color="C2")
    axes[2].set(ylabel="Spearman ρ of pair distances", title="Agreement with the reference split", ylim=(None, 1.02))
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(n), [str(v) for v in n])
        ax.minorticks_off()
        ax.set_xlabel("experts per layer")
    return fig
