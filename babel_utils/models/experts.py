"""An expert split: which expert each FFN neuron belongs to, and what follows from it, said once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class ExpertSplit:
    """Labels [n_layers, d_ff] (the expert of every neuron, 0..n_experts-1) with the facts derived from them."""

    labels: np.ndarray

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(f"Expert labels must be non-negative integers [n_layers, d_ff]; got {labels.dtype} "
                             f"of shape {labels.shape}.")
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))

    @property
    def n_layers(self) -> int:
        """Layers of the model."""
        return int(self.labels.shape[0])

    @property
    def d_ff(self) -> int:
        """Neurons per FFN layer."""
        return int(self.labels.shape[1])

    @cached_property
    def n_experts(self) -> int:
        """Experts per layer: the largest label + 1."""
        return int(self.labels.max()) + 1

    def permutation(self, layer: int) -> np.ndarray:
        """Neuron indices grouped by expert (expert 0's neurons first), in index order within an expert:
        the stable sort of the layer's labels, the same on every machine."""
        return np.argsort(self.labels[layer], kind="stable")
