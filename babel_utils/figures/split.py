"""The figure of 01_split: the objective of the split per layer.

Every plot function returns a pyplot Figure with labelled axes; nothing is closed, so the notebook's inline
backend displays it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


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
