"""Figures of notebooks 03-06: one style, one imshow+colorbar helper, atomic saving (PNG and PDF).

Every plot function returns a pyplot Figure with labelled axes; nothing is closed, so the
notebook's inline backend displays it.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path
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
from ..core import paths
from ..core.languages import LANGUAGES, PAPER_LANGUAGES, language_name
from ..core.results import atomic_write
from ..prune.masks import DENSE
from ..prune.methods import METHODS, Method
from ..prune.methods import colour as method_colour

log = logging.getLogger(__name__)

# Above this many languages the per-language views switch to ones that scale (to the UDHR's ~500): a language x
# layer matrix ordered by family instead of a line and a legend entry per language, thin grey lines with their
# median, the closest and farthest pairs instead of every pair, a taller tree with smaller labels.
MANY_LANGUAGES = 12
MANY_PAIRS = 25  # pairs shown at each end of the ranking when there are too many to show all
FREQ_LABEL = "activation frequency (share of tokens)"
DIFF_LABEL = "change in activation frequency (share of tokens)"
DPI = 150


def set_style() -> None:
    """The one plotting style of the project."""
    sns.set_theme(context="notebook", style="ticks", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight",
                         "axes.titlesize": "medium", "image.interpolation": "nearest"})


# No creation dates in the files: a rerun writes the same bytes.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}


def save_figure(fig: Figure, name: str, run_dir: str | Path | None = None) -> None:
    """Save `fig` as PNG (dpi 150) and PDF, atomically, into <run_dir>/figures/ and the repo's figures/.

    The repository copy goes to `paths.figures_dir(<run name>)` (figures/<run name>/, or figures/
    without a run). Returns nothing, so a notebook cell ending with it shows only the figure.
    """
    stem = re.sub(r"\.(png|pdf)$", "", name)
    run_name = Path(run_dir).name if run_dir is not None else ""
    folders = [paths.figures_dir(run_name)] + ([paths.run_figures_dir(Path(run_dir))] if run_dir is not None else [])
    written = []
    for fmt in ("png", "pdf"):
        # Render once per format (a tight bounding box draws the figure twice), then copy the bytes.
        first = Path(folders[0]) / f"{stem}.{fmt}"
        atomic_write(first, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight",
                                                           metadata=_METADATA[fmt]))
        written.append(first)
        for folder in folders[1:]:
            copy = Path(folder) / f"{stem}.{fmt}"
            atomic_write(copy, lambda tmp, first=first: shutil.copyfile(first, tmp))
            written.append(copy)
    log.info("Saved figure %s to %s", stem, ", ".join(str(f) for f in written))


def _imshow(ax, data: np.ndarray, *, vmin: float, vmax: float, cmap: str, xlabel: str, ylabel: str,
            title: str = "", cbar_label: str | None = None):
    """imshow with auto aspect, few integer ticks, labels, and (optionally) a labelled colour bar."""
    im = ax.imshow(data, aspect="auto", interpolation="nearest", origin="lower", vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(6, integer=True))
    if cbar_label is not None:
        ax.figure.colorbar(im, ax=ax, shrink=0.9).set_label(cbar_label)
    return im


def order_by_mean_frequency(F: np.ndarray) -> np.ndarray:
    """[L, E] expert indices per layer, sorted by mean frequency across languages (descending)."""
    return np.argsort(-np.asarray(F).mean(axis=0), axis=-1, kind="stable")


def _grid(F: np.ndarray, languages: Sequence[str], title: str, *, cmap: str, vmin: float, vmax: float,
          cbar_label: str, order: np.ndarray | None = None) -> Figure:
    """One layer x expert panel per language with one shared colour scale and colour bar."""
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 3 or F.shape[0] != len(languages):
        raise ValueError(f"Expected frequencies [n_languages={len(languages)}, layers, experts]; got {F.shape}.")
    xlabel = "expert"
    if order is not None:
        F = np.take_along_axis(F, np.asarray(order)[None], axis=2)
        xlabel = "expert rank (by mean frequency)"
    if len(languages) > MANY_LANGUAGES:
        return _language_expert_matrix(F, languages, title, cmap=cmap, vmin=vmin, vmax=vmax, cbar_label=cbar_label,
                                       ranked=order is not None)
    ncols = min(3, len(languages))
    nrows = math.ceil(len(languages) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1.2, 3.0 * nrows + 1.2),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    for ax, f, lang in zip(axes.flat, F, languages):
        im = _imshow(ax, f, vmin=vmin, vmax=vmax, cmap=cmap, xlabel="", ylabel="", title=language_name(lang))
    for ax in axes.flat[len(languages):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes, shrink=0.9).set_label(cbar_label)
    fig.suptitle(title)
    return fig


def _language_expert_matrix(F: np.ndarray, languages: Sequence[str], title: str, *, cmap: str, vmin: float,
                            vmax: float, cbar_label: str, ranked: bool) -> Figure:
    """Above MANY_LANGUAGES the panels become one language x (layer, expert) matrix: a row per language in
    family order, each layer's experts side by side (the layers marked on the axis)."""
    n_layers, n_experts = F.shape[1:]
    values = pd.DataFrame(F.reshape(len(languages), -1), index=list(languages))
    within = "ranked by mean frequency" if ranked else "by id"
    marked = range(0, n_layers, max(1, math.ceil(n_layers / 12)))
    fig = language_matrix(values, title, cbar_label, cmap=cmap, vmin=vmin, vmax=vmax,
                          xlabel=f"layer (its {n_experts} experts side by side, {within})",
                          xticks=([layer * n_experts + n_experts / 2 for layer in marked], [str(x) for x in marked]))
    for layer in range(1, n_layers):
        fig.axes[1].axvline(layer * n_experts - 0.5, color="white", lw=0.4)
    return fig


def heatmap_grid(F: np.ndarray, languages: Sequence[str], title: str, order: np.ndarray | None = None) -> Figure:
    """Frequency heatmaps (layers x experts), one per language, on one colour scale from 0."""
    vmax = float(np.max(F)) or 1.0
    return _grid(F, languages, title, cmap="viridis", vmin=0.0, vmax=vmax, cbar_label=FREQ_LABEL, order=order)


def one_by_one(chosen: Sequence[str], languages: Sequence[str]) -> list[str]:
    """The languages whose heatmaps are drawn one by one: `chosen` (03's heatmap_languages) where given, else
    every language up to MANY_LANGUAGES, else the paper's nine among them."""
    if chosen:
        return [lang for lang in languages if lang in chosen]
    if len(languages) <= MANY_LANGUAGES:
        return list(languages)
    return [lang for lang in languages if lang in PAPER_LANGUAGES]


def heatmap_single(f: np.ndarray, language: str, title: str | None = None, order: np.ndarray | None = None,
                   vmax: float | None = None) -> Figure:
    """Frequency heatmap (layers x experts) of one language."""
    f = np.asarray(f, dtype=np.float64)
    if order is not None:
        f = np.take_along_axis(f, np.asarray(order), axis=1)
    fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
    _imshow(ax, f, vmin=0.0, vmax=vmax or float(f.max()) or 1.0, cmap="viridis",
            xlabel="expert rank (by mean frequency)" if order is not None else "expert", ylabel="layer",
            title=title or language_name(language), cbar_label=FREQ_LABEL)
    return fig


def diff_heatmap(D: np.ndarray, languages: Sequence[str],
                 title: str = "Instruction tuning: f_tuned − f_base") -> Figure:
    """Heatmaps of frequency changes on a diverging colour map centred at 0."""
    m = float(np.max(np.abs(D))) or 1.0
    return _grid(D, languages, title, cmap="RdBu_r", vmin=-m, vmax=m, cbar_label=DIFF_LABEL)


def _language_lines(ax, df: pd.DataFrame, y: str, **kwargs) -> None:
    """One line per language of a tidy frame (language, layer, y), in the frame's language order; above
    MANY_LANGUAGES thin grey lines and their median across languages (one legend entry)."""
    groups = list(df.groupby("language", sort=False))
    if len(groups) > MANY_LANGUAGES:
        for _, part in groups:
            part = part.sort_values("layer")
            ax.plot(part["layer"], part[y], color="0.6", lw=0.5, alpha=0.35, ls=kwargs.get("ls", "-"))
        median = df.groupby("layer")[y].median()
        ax.plot(median.index, median.to_numpy(), color="black", lw=1.8, ls=kwargs.get("ls", "-"),
                label=f"median of {len(groups)} languages")
    else:
        for i, (lang, part) in enumerate(groups):
            part = part.sort_values("layer")
            ax.plot(part["layer"], part[y], color=f"C{i % 10}", label=language_name(lang), **kwargs)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _outside_legend(fig: Figure, ax) -> None:
    """The axes' legend entries once, to the right of the figure."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize="small")


def family_order(languages: Sequence[str]) -> list[str]:
    """The languages grouped by family, then genus, then name (unknown codes last, as given)."""
    def key(code: str) -> tuple:
        lang = LANGUAGES.get(code)
        return (0, lang.family, lang.genus, lang.name) if lang else (1, "", "", code)
    return sorted(languages, key=key)


GREY = (0.7, 0.7, 0.7)  # the families beyond the palette's 20 colours


def _family_palette(languages: Sequence[str]) -> dict[str, tuple]:
    """A colour per family, the largest families first (the rest share grey in big sets)."""
    counts = pd.Series([LANGUAGES[c].family for c in languages if c in LANGUAGES]).value_counts()
    colours = sns.color_palette("tab20", 20)
    return {family: (colours[i] if i < 20 else GREY) for i, family in enumerate(counts.index)}


def _family_colour(palette: dict[str, tuple], code: str) -> tuple:
    """A language's family colour in `palette` (grey for a family outside it or a code outside the table)."""
    return palette.get(LANGUAGES[code].family, GREY) if code in LANGUAGES else GREY


def language_matrix(values: pd.DataFrame, title: str, cbar_label: str, cmap: str = "viridis",
                    xlabel: str = "layer", vmin: float | None = None, vmax: float | None = None,
                    xticks: tuple[Sequence[float], Sequence[str]] | None = None) -> Figure:
    """A language x column matrix (rows in family order) with a family colour strip at the left and a
    legend of the largest families: readable from 13 to 500 languages (names shown up to 80 rows). The x
    axis names up to 12 of the columns, or the (positions, labels) of `xticks`."""
    order = family_order(list(values.index))
    values = values.loc[order]
    n = len(order)
    height = 2.2 + min(0.22, 12.0 / n) * n  # rows shrink from 0.22 in as the set grows (about 14 in at 500)
    fig, (strip, ax) = plt.subplots(1, 2, figsize=(9.5, height), sharey=True,
                                    gridspec_kw={"width_ratios": [0.35, 12]}, constrained_layout=True)
    palette = _family_palette(order)
    rgb = np.array([[_family_colour(palette, c)] for c in order])
    strip.imshow(rgb, aspect="auto", interpolation="nearest", origin="upper")
    strip.set_xticks([])
    data = values.to_numpy(dtype=np.float64)
    finite = data[np.isfinite(data)]
    low = vmin if vmin is not None else float(finite.min()) if finite.size else 0.0
    high = vmax if vmax is not None else float(finite.max()) if finite.size else 1.0
    im = ax.imshow(data, aspect="auto", interpolation="nearest", origin="upper", cmap=cmap, vmin=low, vmax=high)
    fig.colorbar(im, ax=ax, shrink=min(1.0, 8.0 / height + 0.2)).set_label(cbar_label)
    ax.set(xlabel=xlabel, title=title)
    if xticks is not None:
        ax.set_xticks(*xticks)
    else:
        ax.set_xticks(range(data.shape[1]), [str(c) for c in values.columns])
        ax.xaxis.set_major_locator(MaxNLocator(12, integer=True))
    if n <= 80:
        strip.set_yticks(range(n), [language_name(c) for c in order], fontsize=6 if n > 40 else "small")
    else:
        strip.set_yticks([])
        strip.set_ylabel(f"{n} languages, grouped by family and genus")
    _family_legend(fig, palette, order)
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
    _language_lines(ax, tidy, "mean", marker=".")
    _outside_legend(fig, ax)
    _language_lines(ax, tidy, "p90", ls="--", lw=0.8)
    ax.set(xlabel="layer", ylabel=FREQ_LABEL, ylim=(0, None),
           title="Frequency per layer: mean (solid) and 90th percentile (dashed) of experts")
    return fig


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
            _language_lines(ax, part, "count", marker=".")
        ax.set(xlabel="layer", ylabel="number of experts", title=title)
    _outside_legend(fig, axes[0])
    return fig


def threshold_sweep_plot(df: pd.DataFrame) -> Figure:
    """Counts of shared, specific and mean high-frequency experts against the threshold."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
    sns.lineplot(data=df, x="threshold", y="count", hue="category", marker="o", ax=ax)
    ax.set(xlabel="frequency threshold (share of tokens)", ylabel="number of experts",
           title="Expert counts against the high-frequency threshold")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    return fig


def matrix_heatmap(df: pd.DataFrame, title: str, cbar_label: str, cmap: str = "viridis") -> Figure:
    """A language x language matrix with names on the axes and values written in small matrices."""
    values = df.to_numpy(dtype=np.float64)
    n = len(df)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n + 1.5, 1.0 + 0.6 * n), constrained_layout=True)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    _imshow(ax, values, vmin=vmin, vmax=vmax, cmap=cmap, xlabel="language", ylabel="language",
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


def dendrogram_plot(linkage: np.ndarray, languages: Sequence[str], distance_label: str = "distance",
                    title: str = "Hierarchical clustering of languages") -> Figure:
    """Dendrogram with each leaf labelled by name and its family / genus / script, coloured by family."""
    many = len(languages) > MANY_LANGUAGES  # a tall tree with small labels (zoom into the PDF)
    fig, ax = plt.subplots(figsize=(9.0, (0.16 if many else 0.45) * len(languages) + 1.5), constrained_layout=True)
    hierarchy.dendrogram(linkage, labels=[_leaf_label(c) for c in languages], orientation="left",
                         ax=ax, color_threshold=0, above_threshold_color="0.3", leaf_font_size=6 if many else None)
    families = sorted({LANGUAGES[c].family for c in languages if c in LANGUAGES})
    palette = (_family_palette(languages) if many else
               dict(zip(families, sns.color_palette("colorblind", len(families)))))
    by_label = {_leaf_label(c): c for c in languages}
    for tick in ax.get_yticklabels():
        code = by_label.get(tick.get_text())
        if code in LANGUAGES:
            tick.set_color(palette[LANGUAGES[code].family])
    ax.set(xlabel=distance_label, ylabel="language (family / genus / script)", title=title)
    return fig


SCRIPT_MARKERS = "osD^v<>phX*P8H+x"  # one marker per script, the commonest first


def mds_plot(coords: pd.DataFrame, explained: Sequence[float], distance_label: str) -> Figure:
    """The languages on a 2-D map of their distances (classical MDS), coloured by family and marked by script;
    names beside the points up to 40 languages, the largest families in the legend."""
    codes = list(coords.index)
    many = len(codes) > MANY_LANGUAGES
    palette = _family_palette(codes)
    scripts = pd.Series([LANGUAGES[c].script if c in LANGUAGES else "?" for c in codes]).value_counts().index
    marker = {s: SCRIPT_MARKERS[i % len(SCRIPT_MARKERS)] for i, s in enumerate(scripts)}
    fig, ax = plt.subplots(figsize=(8.5, 7) if many else (6.5, 5), constrained_layout=True)
    for code, (x, y) in zip(codes, coords.iloc[:, :2].to_numpy()):
        lang = LANGUAGES.get(code)
        shape = marker[lang.script if lang else "?"]
        ax.scatter(x, y, s=18 if many else 45, color=_family_colour(palette, code), marker=shape,
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
    _imshow(ax, values, vmin=float(np.nanmin(values)), vmax=float(np.nanmax(values)), cmap="viridis",
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


def mean_abs_change_plot(df: pd.DataFrame) -> Figure:
    """Per-layer mean absolute frequency change per language (from instruction_tuning_diff)."""
    fig, ax = plt.subplots(figsize=(8.0, 4.0), constrained_layout=True)
    _language_lines(ax, df, "mean_abs_change", marker=".")
    ax.set(xlabel="layer", ylabel="mean |Δ activation frequency| (share of tokens)", ylim=(0, None),
           title="Instruction tuning: change per layer")
    _outside_legend(fig, ax)
    return fig


def activation_level_plot(levels: pd.DataFrame) -> Figure:
    """Per-layer activation level (share of a language's selected experts) per language."""
    fig, ax = plt.subplots(figsize=(8.0, 4.0), constrained_layout=True)
    _language_lines(ax, levels, "level", marker=".")
    n_layers = levels["layer"].nunique()
    ax.axhline(1 / n_layers, color="0.5", ls=":", lw=1, label="uniform (1 / L)")
    _outside_legend(fig, ax)
    ax.set(xlabel="layer", ylabel="activation level (share of selected experts)", ylim=(0, None),
           title="Where the selected experts sit, per language")
    return fig


def split_objective_plot(split_layers: pd.DataFrame) -> Figure:
    """Per layer: the split's objective against a random balanced split."""
    fig, ax = plt.subplots(figsize=(7.0, 3.6), constrained_layout=True)
    ax.plot(split_layers["layer"], split_layers["objective"], marker="o", label="this split")
    ax.plot(split_layers["layer"], split_layers["objective_random"], marker=".", ls="--", color="0.5",
            label="random balanced split")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="layer", ylabel="mean cosine of a neuron to its expert centroid",
           title="Clustering objective per layer")
    ax.legend(frameon=False)
    return fig


# --------------------------------------------------------------------------- notebooks 03-06 (more figures)

CATEGORY_COLOURS = {"not high-frequency": "#f2f2f2", "high in some languages": "#9ecae1",
                    "language-specific": "#e6550d", "shared by all": "#08306b"}


def layer_boxplot(F: np.ndarray, languages: Sequence[str], threshold: float | None = None) -> Figure:
    """Per layer, the distribution of expert frequencies pooled over languages (box: quartiles, whiskers:
    5th-95th percentile), with the high-frequency threshold and each layer's share of experts above it."""
    F = np.asarray(F, dtype=np.float64)
    n_layers = F.shape[1]
    values = [F[:, layer, :].ravel() for layer in range(n_layers)]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.3 * n_layers + 3.0), 4.2), constrained_layout=True)
    ax.boxplot(values, positions=range(n_layers), whis=(5, 95), showfliers=False, widths=0.6,
               medianprops={"color": "C3"}, patch_artist=True, boxprops={"facecolor": "0.85"})
    ax.set_xticks(range(n_layers), [str(i) if n_layers <= 40 or i % 5 == 0 else "" for i in range(n_layers)])
    ax.set(xlabel="layer", ylabel=FREQ_LABEL, ylim=(0, None),
           title=f"Expert frequencies per layer ({len(languages)} languages pooled; whiskers 5th-95th percentile)")
    if threshold is not None:
        ax.axhline(threshold, color="C0", ls="--", lw=1, label=f"high-frequency threshold {threshold:g}")
        share = (F >= threshold).mean(axis=(0, 2))
        ax2 = ax.twinx()
        ax2.plot(range(n_layers), share, color="C0", marker=".", lw=1, label="share of experts above it")
        ax2.set_ylabel("share of experts >= threshold", color="C0")
        ax2.set_ylim(0, max(0.05, float(share.max()) * 1.1))
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", frameon=False, fontsize="small")
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


def _family_legend(fig: Figure, palette: dict[str, tuple], codes: Sequence[str], shown: int = 12) -> None:
    """A legend of the largest families (with their language counts) below the figure."""
    families = list(palette)[:shown]
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[f]) for f in families]
    fig.legend(handles, [f"{f} ({sum(LANGUAGES[c].family == f for c in codes if c in LANGUAGES)})" for f in families],
               loc="outside lower center", ncols=4, frameon=False, fontsize="small",
               title="largest families (languages)" + ("; the others grey" if len(palette) > 20 else ""))


def _category_points(totals: pd.DataFrame) -> Figure:
    """Above MANY_LANGUAGES: each language's high-frequency and language-specific counts as points in family
    order, coloured by family."""
    order = family_order(list(totals["language"]))
    rows = totals.set_index("language").loc[order]
    palette = _family_palette(order)
    colours = [_family_colour(palette, c) for c in order]
    fig, axes = plt.subplots(2, 1, figsize=(10.0, 6.5), sharex=True, constrained_layout=True)
    for ax, column, label in [(axes[0], "high_frequency", "high-frequency experts"),
                              (axes[1], "specific", "language-specific experts")]:
        ax.scatter(np.arange(len(order)), rows[column], c=colours, s=9, linewidths=0)
        ax.set(ylabel=label, ylim=(0, None))
    axes[1].set_xlabel(f"{len(order)} languages, grouped by family and genus")
    axes[1].set_xticks([])
    shared = int(rows["shared"].iloc[0]) if len(rows) else 0
    axes[0].set_title(f"High-frequency and language-specific experts per language ({shared} shared by all)")
    _family_legend(fig, palette, order)
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


def family_summary_plot(table: pd.DataFrame, alpha: float = 0.05, kind: str = "family") -> Figure:
    """Per family (rows, largest first): its shared and own experts (bars) against random groups of as many
    languages (black ticks: their mean), a star where the family's count is beyond them (p < alpha)."""
    n = max(1, len(table))
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
        _imshow(ax, values, vmin=float(finite.min()), vmax=float(finite.max()), cmap=cmap, xlabel="", ylabel="",
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
    axes[1].set_yscale("log")
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


def tuning_loss_plot(history: pd.DataFrame, meta: dict) -> Figure:
    """Training loss per step of the offline instruction tuning, with the full-set losses before and after."""
    fig, ax = plt.subplots(figsize=(7.0, 3.8), constrained_layout=True)
    ax.plot(history["step"], history["loss"], marker=".", color="0.3", label="batch loss")
    if meta:
        last = int(history["step"].max()) if len(history) else 1
        for key, colour, name in [("train", "C0", "training instructions"), ("heldout", "C1", "held-out instructions")]:
            ax.plot([0, last], [meta[f"loss_before_{key}"], meta[f"loss_after_{key}"]], ls="--", marker="o",
                    color=colour, label=f"{name}: before → after")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="step", ylabel="target-token loss (nats)", title="Short instruction tuning")
    ax.legend(frameon=False, fontsize="small")
    return fig


def overlap_plot(overlap: pd.DataFrame) -> Figure:
    """Per language: Jaccard overlap of the base and tuned high-frequency expert sets."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(overlap) + 2.5), 3.6), constrained_layout=True)
    x = np.arange(len(overlap))
    ax.bar(x, overlap["jaccard"], color="C0")
    for xi, (j, nb, nt) in enumerate(zip(overlap["jaccard"], overlap["n_base"], overlap["n_tuned"])):
        ax.text(xi, j, f"{int(nb)}/{int(nt)}", ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(x, [language_name(c) for c in overlap["language"]], rotation=30, ha="right")
    ax.set(xlabel="language", ylabel="Jaccard index", ylim=(0, 1.08),
           title="Overlap of high-frequency experts, base vs tuned (labels: n base / n tuned)")
    return fig


# --------------------------------------------------------------------------- notebooks 07-08 (pruning)

KEEP_DROP_COLOURS = {"kept by both": "#f2f2f2", "pruned by both": "#08306b", "kept by A only": "#e6550d",
                     "kept by B only": "#31a354"}


def pruned_share_plot(table: pd.DataFrame, threshold: float = 0.05) -> Figure:
    """Share of each layer's experts pruned, per method (from pruning.mask_table of every language).

    Threshold: one line per language. Sorting and layer-wise: one line per ratio, the mean over target
    languages with their range as a band (random masks copy sorting's per-layer counts).
    """
    t = table.assign(share=table["pruned"] / table["n_experts"])
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.2), sharey=True, constrained_layout=True)
    thr = t[t["method"] == "threshold"]
    _language_lines(axes[0], thr, "share", marker=".", lw=1)
    mean_thr = thr.groupby("language")["share"].mean()
    axes[0].set_title(f"Threshold f < {threshold:g} ({mean_thr.min():.0%}-{mean_thr.max():.0%} of all experts)"
                      if len(mean_thr) else "Threshold")
    axes[0].legend(frameon=False, fontsize="x-small", ncols=2, title="target language", title_fontsize="x-small")
    ratios = sorted(t.loc[t["method"].isin(["sorting", "layerwise"]), "ratio"].unique())
    shades = plt.get_cmap("plasma")(np.linspace(0.1, 0.75, max(1, len(ratios))))
    for ax, method, title in [(axes[1], "sorting", "Frequency sorting (random masks copy these counts)"),
                              (axes[2], "layerwise", "Layer-wise rates (from activation levels)")]:
        part = t[t["method"] == method]
        for ratio, grp in part.groupby("ratio"):
            colour = shades[ratios.index(ratio)]
            stats = grp.groupby("layer")["share"].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker=".", color=colour, label=f"{ratio:.0%} pruned")
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.2, lw=0)
            ax.axhline(ratio, color=colour, ls=":", lw=0.8)
        ax.set_title(title)
        ax.legend(frameon=False, fontsize="small", title="mean over languages\n(band: their range; dotted: p)",
                  title_fontsize="x-small")
    for ax in axes:
        ax.set(xlabel="layer", ylim=(0, 1.02))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("share of the layer's experts pruned")
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
    _outside_legend(fig, axes.flat[0])
    fig.suptitle(f"{label[:1].upper()}{label[1:]} against the pruning ratio (each language with its own masks)")
    return fig


def task_bars_plot(df: pd.DataFrame, metrics: Sequence[str], labels: Sequence[str], title: str) -> Figure:
    """Grouped bars: per language (x) one bar per mask (colour), one panel per metric."""
    masks = list(dict.fromkeys(df["mask"]))
    langs = list(dict.fromkeys(df["language"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 1.5, 3.8), squeeze=False,
                             constrained_layout=True)
    width = 0.8 / max(1, len(masks))
    x = np.arange(len(langs))
    for ax, metric, label in zip(axes[0], metrics, labels):
        part = df[df["metric"] == metric]
        for i, mask in enumerate(masks):
            vals = [part.loc[(part["mask"] == mask) & (part["language"] == lang), "value"].mean() for lang in langs]
            method = mask.split("@")[0]
            colour = method_colour(method) if method in METHODS or method == DENSE else f"C{i}"
            ax.bar(x + (i - (len(masks) - 1) / 2) * width, vals, width, label=mask, color=colour,
                   edgecolor="white", lw=0.5)
        ax.set_xticks(x, [language_name(c) for c in langs])
        ax.set(xlabel="language", ylabel=label)
        if "accuracy" in metric:
            ax.set_ylim(0, 1)
    axes[0, 0].legend(frameon=False, fontsize="small")
    fig.suptitle(title)
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
    _outside_legend(fig, ax)
    return fig
