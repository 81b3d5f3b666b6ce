"""Figures of 06: what instruction tuning changes.

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
from .style import DIFF_LABEL, frequency_grid, language_lines, outside_legend


def diff_heatmap(D: np.ndarray, languages: Sequence[str],
                 title: str = "Instruction tuning: f_tuned − f_base") -> Figure:
    """Heatmaps of frequency changes on a diverging colour map centred at 0."""
    m = float(np.max(np.abs(D))) or 1.0
    return frequency_grid(D, languages, title, cmap="RdBu_r", vmin=-m, vmax=m, cbar_label=DIFF_LABEL)


def mean_abs_change_plot(df: pd.DataFrame) -> Figure:
    """Per-layer mean absolute frequency change per language (from instruction_tuning_diff)."""
    fig, ax = plt.subplots(figsize=(8.0, 4.0), constrained_layout=True)
    language_lines(ax, df, "mean_abs_change", marker=".")
    ax.set(xlabel="layer", ylabel="mean |Δ activation frequency| (share of tokens)", ylim=(0, None),
           title="Instruction tuning: change per layer")
    outside_legend(fig, ax)
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
