"""The one style of every figure and what the views share: saving (PNG and PDF, atomically), the
imshow-with-colour-bar helper, the family palette, and the switch to views that scale past MANY_LANGUAGES.

Every plot function returns a pyplot Figure with labelled axes; nothing is closed, so the notebook's inline
backend displays it."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core import paths
from ..core.languages import LANGUAGES, PAPER_LANGUAGES, language_name
from ..core.results import atomic_write

log = logging.getLogger(__name__)


# Above this many languages the per-language views switch to ones that scale (to the UDHR's ~500): a language x
# layer matrix ordered by family instead of a line and a legend entry per language, thin grey lines with their
# median, the closest and farthest pairs instead of every pair, a taller tree with smaller labels.
MANY_LANGUAGES = 12


MANY_PAIRS = 25  # pairs shown at each end of the ranking when there are too many to show all


FREQ_LABEL = "activation frequency (share of tokens)"


# Frequencies span three orders of magnitude (a rare expert 0.001, a busy one 1): heatmaps colour them on a log
# scale from this floor, where every smaller frequency (never selected included) takes the floor's colour.
FREQ_FLOOR = 1e-3
LOG_FREQ_LABEL = f"activation frequency (share of tokens; log scale, below {FREQ_FLOOR:g} as {FREQ_FLOOR:g})"


DIFF_LABEL = "change in activation frequency (share of tokens)"


DPI = 150


def set_style() -> None:
    """The one plotting style of the project."""
    sns.set_theme(context="notebook", style="ticks", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight",
                         "axes.titlesize": "medium", "image.interpolation": "nearest"})


# No creation dates in the files: a rerun writes the same bytes.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}


@dataclass(frozen=True)
class Skipped:
    """In place of a figure that would mean nothing for this run's languages or data: why there is none. A notebook
    shows the sentence where the figure would be, and `save_figure` writes no file for it."""

    reason: str

    def _repr_markdown_(self) -> str:
        return f"*No figure: {self.reason}*"

    def __repr__(self) -> str:
        return f"No figure: {self.reason}"


def save_figure(fig: Figure | Skipped, name: str, run_dir: str | Path | None = None) -> Skipped | None:
    """Save `fig` as PNG (dpi 150) and PDF, atomically, into <run_dir>/figures/ (without a run: the repository's
    figures/). A run never writes into the repository: `babel run --publish` copies its figures there.
    Returns nothing for a figure, so a notebook cell ending with it shows only the figure; a `Skipped` is returned
    (the cell shows why there is no figure) and writes nothing."""
    if isinstance(fig, Skipped):
        log.info("No figure %s: %s", name, fig.reason)
        return fig
    stem = re.sub(r"\.(png|pdf)$", "", name)
    folder = paths.run_figures_dir(Path(run_dir)) if run_dir is not None else paths.figures_dir("")
    written = []
    for fmt in ("png", "pdf"):
        path = Path(folder) / f"{stem}.{fmt}"
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight",
                                                          metadata=_METADATA[fmt]))
        written.append(path)
    log.info("Saved figure %s to %s", stem, ", ".join(str(f) for f in written))
    return None


def readable(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """A table of numbers as a reader reads them: `digits` decimals below 10,000, whole numbers with thousands
    separators above (pandas would switch the whole table to 1.283412e+09)."""
    def one(value: float) -> str:
        if pd.isna(value):
            return ""
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return table.apply(lambda column: column.map(one))


def colour_scale(data: np.ndarray, vmin: float, vmax: float, log: bool) -> tuple[np.ndarray, dict]:
    """The data to draw and imshow's scale arguments: linear from vmin to vmax, or logarithmic from FREQ_FLOOR
    (smaller values drawn at the floor)."""
    if not log:
        return data, {"vmin": vmin, "vmax": vmax}
    top = max(vmax, FREQ_FLOOR * 10)
    return np.clip(data, FREQ_FLOOR, None), {"norm": LogNorm(vmin=FREQ_FLOOR, vmax=top)}


def imshow(ax, data: np.ndarray, *, vmin: float, vmax: float, cmap: str, xlabel: str, ylabel: str,
            title: str = "", cbar_label: str | None = None, log: bool = False):
    """imshow with auto aspect, few integer ticks, labels, and (optionally) a labelled colour bar; `log` colours
    on a log scale from FREQ_FLOOR (see colour_scale)."""
    data, scale = colour_scale(np.asarray(data, dtype=np.float64), vmin, vmax, log)
    im = ax.imshow(data, aspect="auto", interpolation="nearest", origin="lower", cmap=cmap, **scale)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(6, integer=True))
    if cbar_label is not None:
        ax.figure.colorbar(im, ax=ax, shrink=0.9).set_label(cbar_label)
    return im


def order_by_mean_frequency(F: np.ndarray) -> np.ndarray:
    """[L, E] expert indices per layer, sorted by mean frequency across languages (descending)."""
    return np.argsort(-np.asarray(F).mean(axis=0), axis=-1, kind="stable")


def frequency_grid(F: np.ndarray, languages: Sequence[str], title: str, *, cmap: str, vmin: float, vmax: float,
          cbar_label: str, order: np.ndarray | None = None, log: bool = False) -> Figure:
    """One layer x expert panel per language with one shared colour scale and colour bar (`log`: see imshow)."""
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 3 or F.shape[0] != len(languages):
        raise ValueError(f"Expected frequencies [n_languages={len(languages)}, layers, experts]; got {F.shape}.")
    xlabel = "expert"
    if order is not None:
        F = np.take_along_axis(F, np.asarray(order)[None], axis=2)
        xlabel = "expert rank (by mean frequency)"
    if len(languages) > MANY_LANGUAGES:
        return language_expert_matrix(F, languages, title, cmap=cmap, vmin=vmin, vmax=vmax, cbar_label=cbar_label,
                                       ranked=order is not None, log=log)
    ncols = min(3, len(languages))
    nrows = math.ceil(len(languages) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1.2, 3.0 * nrows + 1.2),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    for ax, f, lang in zip(axes.flat, F, languages):
        im = imshow(ax, f, vmin=vmin, vmax=vmax, cmap=cmap, xlabel="", ylabel="", title=language_name(lang), log=log)
    for ax in axes.flat[len(languages):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes, shrink=0.9).set_label(cbar_label)
    fig.suptitle(title)
    return fig


def language_expert_matrix(F: np.ndarray, languages: Sequence[str], title: str, *, cmap: str, vmin: float,
                            vmax: float, cbar_label: str, ranked: bool, log: bool = False) -> Figure:
    """Above MANY_LANGUAGES the panels become one language x (layer, expert) matrix: a row per language in
    family order, each layer's experts side by side (the layers marked on the axis)."""
    n_layers, n_experts = F.shape[1:]
    values = pd.DataFrame(F.reshape(len(languages), -1), index=list(languages))
    within = "ranked by mean frequency" if ranked else "by id"
    marked = range(0, n_layers, max(1, math.ceil(n_layers / 12)))
    fig = language_matrix(values, title, cbar_label, cmap=cmap, vmin=vmin, vmax=vmax, log=log,
                          xlabel=f"layer (its {n_experts} experts side by side, {within})",
                          xticks=([layer * n_experts + n_experts / 2 for layer in marked], [str(x) for x in marked]))
    for layer in range(1, n_layers):
        fig.axes[1].axvline(layer * n_experts - 0.5, color="white", lw=0.4)
    return fig


def one_by_one(chosen: Sequence[str], languages: Sequence[str]) -> list[str]:
    """The languages whose heatmaps are drawn one by one: `chosen` (03's heatmap_languages) where given, else
    every language up to MANY_LANGUAGES, else the paper's nine among them."""
    if chosen:
        return [lang for lang in languages if lang in chosen]
    if len(languages) <= MANY_LANGUAGES:
        return list(languages)
    return [lang for lang in languages if lang in PAPER_LANGUAGES]


def language_lines(ax, df: pd.DataFrame, y: str, **kwargs) -> None:
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


def outside_legend(fig: Figure, ax) -> None:
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


def family_palette(languages: Sequence[str]) -> dict[str, tuple]:
    """A colour per family, the largest families first (the rest share grey in big sets)."""
    counts = pd.Series([LANGUAGES[c].family for c in languages if c in LANGUAGES]).value_counts()
    colours = sns.color_palette("tab20", 20)
    return {family: (colours[i] if i < 20 else GREY) for i, family in enumerate(counts.index)}


def family_colour(palette: dict[str, tuple], code: str) -> tuple:
    """A language's family colour in `palette` (grey for a family outside it or a code outside the table)."""
    return palette.get(LANGUAGES[code].family, GREY) if code in LANGUAGES else GREY


def language_matrix(values: pd.DataFrame, title: str, cbar_label: str, cmap: str = "viridis",
                    xlabel: str = "layer", vmin: float | None = None, vmax: float | None = None,
                    xticks: tuple[Sequence[float], Sequence[str]] | None = None, log: bool = False) -> Figure:
    """A language x column matrix (rows in family order) with a family colour strip at the left and a
    legend of the largest families: readable from 13 to 500 languages (names shown up to 80 rows). The x
    axis names up to 12 of the columns, or the (positions, labels) of `xticks`."""
    order = family_order(list(values.index))
    values = values.loc[order]
    n = len(order)
    height = 2.2 + min(0.22, 12.0 / n) * n  # rows shrink from 0.22 in as the set grows (about 14 in at 500)
    fig, (strip, ax) = plt.subplots(1, 2, figsize=(9.5, height), sharey=True,
                                    gridspec_kw={"width_ratios": [0.35, 12]}, constrained_layout=True)
    palette = family_palette(order)
    rgb = np.array([[family_colour(palette, c)] for c in order])
    strip.imshow(rgb, aspect="auto", interpolation="nearest", origin="upper")
    strip.set_xticks([])
    data = values.to_numpy(dtype=np.float64)
    finite = data[np.isfinite(data)]
    low = vmin if vmin is not None else float(finite.min()) if finite.size else 0.0
    high = vmax if vmax is not None else float(finite.max()) if finite.size else 1.0
    data, scale = colour_scale(data, low, high, log)
    im = ax.imshow(data, aspect="auto", interpolation="nearest", origin="upper", cmap=cmap, **scale)
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
    family_legend(fig, palette, order)
    return fig


def family_legend(fig: Figure, palette: dict[str, tuple], codes: Sequence[str], shown: int = 12) -> None:
    """A legend of the largest families (with their language counts) below the figure."""
    families = list(palette)[:shown]
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[f]) for f in families]
    fig.legend(handles, [f"{f} ({sum(LANGUAGES[c].family == f for c in codes if c in LANGUAGES)})" for f in families],
               loc="outside lower center", ncols=4, frameon=False, fontsize="small",
               title="largest families (languages)" + ("; the others grey" if len(palette) > 20 else ""))
