"""Figures of 07-08: where masks prune, how they overlap, and what pruning costs.

Every plot function returns a pyplot Figure with labelled axes; nothing is closed, so the notebook's inline
backend displays it."""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.languages import language_name
from ..evaluate.metrics import label as metric_label
from ..evaluate.tasks import TASKS
from ..prune.masks import DENSE
from ..prune.methods import BASELINE, METHODS, Method
from ..prune.methods import colour as method_colour
from .style import language_lines, outside_legend

KEEP_DROP_COLOURS = {"kept by both": "#f2f2f2", "pruned by both": "#08306b", "kept by A only": "#e6550d",
                     "kept by B only": "#31a354"}


def pruned_share_plot(table: pd.DataFrame, threshold: float = 0.05) -> Figure:
    """Share of each layer's experts pruned, one panel per method with a fixed mask (methods.METHODS order; the
    random baseline copies the per-layer counts of the mask it is the baseline of, and methods applied by their
    own hooks have no fixed mask). A method whose share differs by language (threshold): one line per language;
    the others: one line per ratio, the mean over target languages with their range as a band."""
    t = table.assign(share=table["pruned"] / table["n_experts"])
    shown = [m for name, m in METHODS.items()
             if m.hooks is None and name != BASELINE and (t["method"] == name).any()]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.0 * len(shown), 4.2), sharey=True, constrained_layout=True,
                             squeeze=False)
    ratios = sorted(t.loc[t["method"].isin([m.name for m in shown if m.ratio_in_label]), "ratio"].unique())
    shades = plt.get_cmap("plasma")(np.linspace(0.1, 0.75, max(1, len(ratios))))
    for ax, method in zip(axes[0], shown):
        part = t[t["method"] == method.name]
        title = method.legend or method.name
        if not method.ratio_in_label:
            language_lines(ax, part, "share", marker=".", lw=1)
            mean = part.groupby("language")["share"].mean()
            rule = f" f < {threshold:g}" if method.name == "threshold" else ""
            ax.set_title(f"{method.name.capitalize()}{rule} ({mean.min():.0%}-{mean.max():.0%} of all experts)")
            ax.legend(frameon=False, fontsize="x-small", ncols=2, title="target language", title_fontsize="x-small")
            continue
        for ratio, grp in part.groupby("ratio"):
            colour = shades[ratios.index(ratio)]
            stats = grp.groupby("layer")["share"].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker=".", color=colour, label=f"{ratio:.0%} pruned")
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.2, lw=0)
            ax.axhline(ratio, color=colour, ls=":", lw=0.8)
        copied = " (random masks copy these counts)" if method.name == "sorting" else ""
        ax.set_title(title[:1].upper() + title[1:] + copied)
        ax.legend(frameon=False, fontsize="small", title="mean over languages\n(band: their range; dotted: p)",
                  title_fontsize="x-small")
    for ax in axes[0]:
        ax.set(xlabel="layer", ylim=(0, 1.02))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("share of the layer's experts pruned")
    return fig


def percent_matrix_plot(df: pd.DataFrame, title: str, cbar_label: str, cmap: str = "magma_r",
                        xlabel: str = "", ylabel: str = "", percent: bool = True) -> Figure:
    """A language x language matrix with languages by name and each cell's value written (as % or number)."""
    values = df.to_numpy(dtype=np.float64)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(2.8 + 0.7 * n_cols, 1.4 + 0.55 * n_rows), constrained_layout=True)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 1e-9, vmax + 1e-9
    im = ax.imshow(values, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, shrink=0.9).set_label(cbar_label)
    ax.set_xticks(range(n_cols), [language_name(c) for c in df.columns], rotation=45, ha="right")
    ax.set_yticks(range(n_rows), [language_name(c) for c in df.index])
    ax.set(xlabel=xlabel or str(df.columns.name or ""), ylabel=ylabel or str(df.index.name or ""), title=title)
    mid = (vmin + vmax) / 2
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0%}" if percent and abs(v) >= 0.995 else (f"{v:.1%}" if percent else f"{v:.2g}"),
                    ha="center", va="center", fontsize="x-small",
                    color="white" if (v > mid) == cmap.endswith("_r") else "black")
    return fig


def keep_drop_map(mask_a: np.ndarray, mask_b: np.ndarray, lang_a: str, lang_b: str, title: str = "") -> Figure:
    """Per layer, how two masks (True = kept) split its experts: kept by both, by one only, pruned by both."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    parts = {"kept by both": a & b, "kept by A only": a & ~b, "kept by B only": ~a & b, "pruned by both": ~a & ~b}
    layers = np.arange(a.shape[0])
    fig, ax = plt.subplots(figsize=(9.0, 0.22 * len(layers) + 1.6), constrained_layout=True)
    left = np.zeros(len(layers))
    for name, cells in parts.items():
        counts = cells.sum(axis=1)
        label = name.replace("A", language_name(lang_a)).replace("B", language_name(lang_b))
        ax.barh(layers, counts, left=left, color=KEEP_DROP_COLOURS[name], edgecolor="0.6", lw=0.3,
                label=f"{label} ({int(counts.sum())})")
        left += counts
    ax.set(xlabel="experts of the layer", ylabel="layer", xlim=(0, a.shape[1]),
           title=title or f"Which experts {language_name(lang_a)} and {language_name(lang_b)} keep")
    ax.yaxis.set_major_locator(MaxNLocator(10, integer=True))
    ax.invert_yaxis()
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize="small")
    return fig


def _draw_method(ax, rows: pd.DataFrame, method: Method) -> None:
    """One method's values against the share pruned: a line, the seeds' mean with their range as a band, or
    points (method.plot)."""
    if rows.empty:
        return
    if method.plot == "band":
        stats = rows.groupby("ratio")["value"].agg(["mean", "min", "max"])
        ax.plot(stats.index, stats["mean"], color=method.colour, marker=method.marker, ms=4, label=method.legend)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=method.colour, alpha=0.25, lw=0)
    elif method.plot == "line":
        rows = rows.sort_values("ratio")
        ax.plot(rows["ratio"], rows["value"], color=method.colour, marker=method.marker, ms=4, label=method.legend)
    else:
        ax.scatter(rows["ratio"], rows["value"], color=method.colour, marker=method.marker, zorder=3,
                   label=method.legend)


def metric_vs_ratio_plot(df: pd.DataFrame, metric: str, label: str, log_scale: bool = False) -> Figure:
    """One panel per language: `metric` against the share pruned, per method, each language with its own mask.

    Each method as its table entry (methods.METHODS) says: sorting and layer-wise lines; random the mean
    over seeds with the min-max band; threshold and dynamic single points at the share they prune; the
    unpruned model a horizontal dashed line.
    """
    part = df[(df["metric"] == metric) & (df["language"] == df["target"])]
    langs = list(dict.fromkeys(part["language"]))
    ncols = min(3, len(langs))
    nrows = math.ceil(len(langs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.8, 3.1 * nrows + 0.6), squeeze=False,
                             sharex=True, constrained_layout=True)
    for ax, lang in zip(axes.flat, langs):
        sub = part[part["language"] == lang]
        dense = sub.loc[sub["method"] == "dense", "value"]
        if len(dense):
            ax.axhline(float(dense.iloc[0]), color="black", ls="--", lw=1, label="unpruned")
        for name, method in METHODS.items():
            _draw_method(ax, sub[sub["method"] == name], method)
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(language_name(lang))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:.0%}"))
    for ax in axes.flat[len(langs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("share of experts pruned")
    for ax in axes[:, 0]:
        ax.set_ylabel(label)
    outside_legend(fig, axes.flat[0])
    fig.suptitle(f"{label[:1].upper()}{label[1:]} against the pruning ratio (each language with its own masks)")
    return fig


def benchmark_plot(df: pd.DataFrame, ratio: float) -> Figure:
    """Grouped bars of every benchmark metric drawn by its task (tasks.TASKS[...].plotted): per language (x) one
    bar per mask (colour) with its value written on it, one panel per metric; a note where no task had data."""
    shown = [m for task in TASKS.values() for m in task.plotted if (df["metric"] == m).any()] if len(df) else []
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(5.5 * max(1, len(shown)) + 1.5, 3.8), squeeze=False,
                             constrained_layout=True)
    if not shown:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "No benchmark has data for this run's languages", ha="center", va="center")
        return fig
    masks, langs = list(dict.fromkeys(df["mask"])), list(dict.fromkeys(df["language"]))
    width = 0.8 / len(masks)
    for ax, metric in zip(axes[0], shown):
        part = df[df["metric"] == metric]
        present = [lang for lang in langs if (part["language"] == lang).any()]
        x = np.arange(len(present))
        for i, mask in enumerate(masks):
            vals = [part.loc[(part["mask"] == mask) & (part["language"] == lang), "value"].mean() for lang in present]
            method = mask.split("@")[0]
            colour = method_colour(method) if method in METHODS or method == DENSE else f"C{i}"
            bars = ax.bar(x + (i - (len(masks) - 1) / 2) * width, vals, width, label=mask, color=colour,
                          edgecolor="white", lw=0.5)
            ax.bar_label(bars, fmt="%.2f", fontsize="x-small", padding=1)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(x, [language_name(c) for c in present])
        ax.set(xlabel="language", ylabel=textwrap.fill(metric_label(metric), 30, break_on_hyphens=False))
        if "accuracy" in metric:
            ax.set_ylim(0, 1.05)
            if (part["value"] == 0).all():  # bars of height 0 look like a missing panel: say what they mean
                ax.text(0.5, 0.5, "no item answered correctly\nunder any mask, in any language", ha="center",
                        va="center", transform=ax.transAxes, color="0.3")
    axes[0, 0].legend(frameon=False, fontsize="small", title="mask")
    fig.suptitle(f"Benchmarks of the unpruned model and of masks with {ratio:.0%} of the experts pruned")
    return fig


def split_comparison_plot(df: pd.DataFrame, label: str) -> Figure:
    """Per split method (panel): the relative change of the metric against the unpruned model, per language,
    for frequency-guided and random masks (`df` columns: split, language, method, value, with 'dense' rows;
    random: mean over seeds, whiskers: their range)."""
    splits = list(dict.fromkeys(df["split"]))
    langs = list(dict.fromkeys(df["language"]))
    dense = df[df["method"] == "dense"].groupby("language")["value"].first()
    rel = df[df["method"] != "dense"].assign(rel=lambda d: d["value"] / d["language"].map(dense) - 1.0)
    methods = [m for m in METHODS if m in set(rel["method"])]
    fig, axes = plt.subplots(1, len(splits), figsize=(3.6 * len(splits) + 1.5, 3.8), sharey=True,
                             squeeze=False, constrained_layout=True)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(langs))
    for ax, split in zip(axes[0], splits):
        part = rel[rel["split"] == split]
        for i, method in enumerate(methods):
            sub = part[part["method"] == method].groupby("language")["rel"].agg(["mean", "min", "max"]).reindex(langs)
            spread = METHODS[method].plot == "band"  # several seeds: whiskers over their range
            err = np.vstack([sub["mean"] - sub["min"], sub["max"] - sub["mean"]]) if spread else None
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, sub["mean"], width, yerr=err, capsize=2,
                   color=METHODS[method].colour, label=method)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [language_name(c) for c in langs])
        ax.set(title=f"experts from the {split} split", xlabel="language")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.0%}" if abs(v) >= 0.1 else f"{v:+.1%}"))
    axes[0, 0].set_ylabel(f"change of {label} vs unpruned")
    axes[0, -1].legend(frameon=False, fontsize="small")
    return fig


def against_dense_plot(comparison: pd.DataFrame, tolerance: float) -> Figure:
    """evaluation.against_dense as dots with whiskers: per mask (row) and language (colour), the relative change
    of bits per byte against the unpruned model and its paired interval; the band is the "matches" tolerance.
    Languages are spread within a row; beyond 12 languages the rows show the languages' median and range."""
    masks = list(dict.fromkeys(comparison["mask"]))
    langs = list(dict.fromkeys(comparison["language"]))
    fig, ax = plt.subplots(figsize=(8.0, 0.45 * len(masks) + 1.6), constrained_layout=True)
    ax.axvspan(-1, tolerance, color="0.92", lw=0, zorder=0, label=f"at most {tolerance:.0%} worse")
    ax.axvline(0, color="black", lw=0.8)
    if len(langs) <= 12:
        step = 0.7 / max(1, len(langs))
        for i, lang in enumerate(langs):
            part = comparison[comparison["language"] == lang].set_index("mask").reindex(masks)
            y = np.arange(len(masks)) + (i - (len(langs) - 1) / 2) * step
            ax.errorbar(part["relative"], y, xerr=[part["relative"] - part["low"], part["high"] - part["relative"]],
                        fmt="o", ms=3, lw=0.8, color=f"C{i % 10}", label=language_name(lang))
    else:
        stats = comparison.groupby("mask", sort=False)["relative"].agg(["median", "min", "max"]).reindex(masks)
        ax.errorbar(stats["median"], np.arange(len(masks)), xerr=[stats["median"] - stats["min"],
                                                               stats["max"] - stats["median"]],
                    fmt="o", ms=3, lw=0.8, color="C0", label=f"median and range over {len(langs)} languages")
    ax.set_yticks(np.arange(len(masks)), masks)
    ax.invert_yaxis()
    low = float(min(comparison["low"].min(), 0.0))
    ax.set_xlim(low - 0.02, float(comparison["high"].max()) + 0.02)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.0%}"))
    level = float(comparison["level"].iloc[0])
    ax.set(xlabel=f"change of bits per byte against the unpruned model ({level:.0%} paired interval)", ylabel="mask")
    outside_legend(fig, ax)
    return fig
