"""Exact top-k: the same selected set on every machine, ties going to the lower index (recording, pruning
and the split's swaps share it)."""

from __future__ import annotations

import torch


def stable_top_indices(values: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` largest values along the last dim; ties go to the lower index (unlike topk)."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices[..., :count]


def top_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [..., k] of the k largest values along the last dim (as a set); among equal values the lower
    index wins, so the set is the same on every machine (`topk` leaves ties at the boundary to the kernel)."""
    top, idx = values.topk(k, dim=-1, sorted=False)
    kth = top.amin(-1, keepdim=True)
    straddle = (values == kth).sum(-1) != (top == kth).sum(-1)  # equal values on both sides of the cut
    if bool(straddle.any()):
        rows = straddle.nonzero(as_tuple=True)
        idx[rows] = stable_top_indices(values[rows], k)  # a stable sort: slow, for the rare tied rows
    return idx


def top_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of `top_indices`."""
    return torch.zeros_like(values, dtype=torch.bool).scatter_(-1, top_indices(values, k), True)
