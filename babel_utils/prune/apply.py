"""Applying masks with hooks: `apply_mask` zeroes the pruned experts' neurons in h (the input of the FFN's second
matrix), `apply_row_masks` gives each row of a batch its own mask, `dynamic_topk` keeps the top-k experts of
each token."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..models.adapters import down_projs, n_layers
from ..models.experts import ExpertSplit
from ..models.hooks import ffn_input_hooks
from ..models.topk import top_mask
from ..record.counting import expert_scores, real_device
from .masks import check_mask

log = logging.getLogger(__name__)


def check_labels(model: nn.Module, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != n_layers(model):
        raise ValueError(f"labels must be [n_layers={n_layers(model)}, d_ff]; got shape {labels.shape}.")
    if mask is not None:
        mask = check_mask(mask)
        if mask.shape[0] != labels.shape[0] or mask.shape[1] <= labels.max():
            raise ValueError(f"Mask of shape {mask.shape} does not fit labels with {labels.shape[0]} layers "
                             f"and {ExpertSplit(labels).n_experts} experts.")
    return labels


def neuron_keep(mask: np.ndarray, labels: np.ndarray, layer: int) -> np.ndarray:
    """Bool [d_ff] of one layer: is each neuron's expert kept."""
    return np.asarray(mask[layer])[np.asarray(labels[layer])]


@contextmanager
def apply_mask(model: nn.Module, labels: np.ndarray, mask: np.ndarray) -> Iterator[None]:
    """Zero the neurons of pruned experts in h (input of down_proj) of every layer; hooks removed on exit."""
    labels = check_labels(model, labels, mask)
    downs = down_projs(model)
    keep = [torch.as_tensor(neuron_keep(mask, labels, i)).to(device=real_device(d.weight.device),
                                                              dtype=d.weight.dtype)
            for i, d in enumerate(downs)]

    def fn(layer: int, h: torch.Tensor) -> torch.Tensor:
        if keep[layer].device != h.device or keep[layer].dtype != h.dtype:  # offloaded layers run elsewhere
            keep[layer] = keep[layer].to(device=h.device, dtype=h.dtype)
        return h * keep[layer]
    with ffn_input_hooks(model, fn):
        yield


@contextmanager
def dynamic_topk(model: nn.Module, labels: np.ndarray, k: int, score: str = "abs") -> Iterator[None]:
    """Per token and layer keep only the top-k experts by score (counting.expert_scores); zero the rest of h."""
    split = ExpertSplit(check_labels(model, labels))
    labels, n_experts = split.labels, split.n_experts
    if not 1 <= k <= n_experts:
        raise ValueError(f"top-k {k} must lie in 1..{n_experts} (the number of experts).")
    downs = down_projs(model)
    perms = [torch.as_tensor(split.permutation(i)).to(real_device(d.weight.device)) for i, d in enumerate(downs)]
    neuron_expert = [torch.as_tensor(labels[i], dtype=torch.long).to(real_device(d.weight.device))
                     for i, d in enumerate(downs)]

    def fn(layer: int, h: torch.Tensor) -> torch.Tensor:
        if perms[layer].device != h.device:  # offloaded layers run elsewhere
            perms[layer], neuron_expert[layer] = perms[layer].to(h.device), neuron_expert[layer].to(h.device)
        scores = expert_scores(h, neuron_expert[layer], n_experts, score, perms[layer])  # [..., E]
        kept = top_mask(scores, k)  # ties: the lower expert id, on every machine
        return h * kept.index_select(-1, neuron_expert[layer]).to(h.dtype)
    with ffn_input_hooks(model, fn):
        yield


@contextmanager
def apply_row_masks(model: nn.Module, labels: np.ndarray, masks: np.ndarray) -> Iterator[Callable[[Sequence[int]], None]]:
    """Several masks [K, L, E] in one batch: yields `select(indices)`, to be called before every forward,
    saying which mask each row of the coming batch uses (row i uses masks[indices[i]]). Each row computes
    exactly what `apply_mask` with its own mask computes (rows do not interact); hooks removed on exit."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or len(masks) == 0:
        raise ValueError(f"apply_row_masks needs masks [K, layers, experts]; got shape {masks.shape}.")
    labels = check_labels(model, labels, masks[0])
    downs = down_projs(model)
    keep = [torch.as_tensor(np.stack([neuron_keep(m, labels, i) for m in masks])).to(device=d.weight.device,
                                                                                     dtype=d.weight.dtype)
            for i, d in enumerate(downs)]
    current: list[torch.Tensor | None] = [None] * len(keep)

    def select(indices: Sequence[int]) -> None:
        idx = [int(i) for i in indices]
        if min(idx, default=0) < 0 or max(idx, default=0) >= len(masks):
            raise ValueError(f"Mask indices {idx} outside 0..{len(masks) - 1}.")
        for layer, k in enumerate(keep):
            current[layer] = k.index_select(0, torch.as_tensor(idx, device=k.device))

    def fn(layer: int, h: torch.Tensor) -> torch.Tensor:
        k = current[layer]
        if k is None or k.shape[0] != h.shape[0]:
            raise RuntimeError(f"apply_row_masks: select() named {None if k is None else k.shape[0]} rows for a "
                               f"batch of {h.shape[0]}; call select(indices) before every forward.")
        k = k.view(k.shape[0], *([1] * (h.dim() - 2)), k.shape[1])
        return h * (k if k.dtype == h.dtype else k.to(h.dtype))
    with ffn_input_hooks(model, fn):
        yield select
