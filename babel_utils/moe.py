"""The MoE view of a dense FFN: the same weights, computed expert by expert and summed."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .adapters import activation, mlps, n_layers, projections
from .experts import ExpertSplit


def expert_weights(model: nn.Module, labels: np.ndarray, layer: int) -> tuple[torch.Tensor, ...]:
    """gate, up [E, m, d_model] and down [d_model, E, m]: each expert's rows and columns."""
    gate, up, down = projections(model, layer)
    split = ExpertSplit(labels)
    n_experts = split.n_experts
    perm = torch.as_tensor(split.permutation(layer), device=up.weight.device)
    g = gate.weight[perm].unflatten(0, (n_experts, -1))
    u = up.weight[perm].unflatten(0, (n_experts, -1))
    d = down.weight[:, perm].unflatten(1, (n_experts, -1))
    return g, u, d


def moe_ffn(x: torch.Tensor, g: torch.Tensor, u: torch.Tensor, d: torch.Tensor, act: nn.Module,
            expert_mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum over experts e of down_e(act(gate_e x) * up_e x), optionally with experts switched off."""
    h = act(torch.einsum("...i,emi->...em", x, g)) * torch.einsum("...i,emi->...em", x, u)
    if expert_mask is not None:
        h = h * expert_mask.to(h.dtype).unsqueeze(-1)
    return torch.einsum("...em,oem->...o", h, d)


@contextmanager
def moe_view(model: nn.Module, labels: np.ndarray, expert_masks: np.ndarray | None = None) -> Iterator[None]:
    """Run every FFN as a sum of its experts (optionally masked [L, E]); the dense model on exit."""
    handles = []
    for layer, mlp in enumerate(mlps(model)):
        weights = expert_weights(model, labels, layer)
        act = activation(model, layer)
        mask = None if expert_masks is None else torch.as_tensor(expert_masks[layer], device=weights[0].device)

        def hook(module: nn.Module, args: tuple, output: torch.Tensor, w=weights, a=act, m=mask) -> torch.Tensor:
            return moe_ffn(args[0], *w, a, m)
        handles.append(mlp.register_forward_hook(hook))
    assert len(handles) == n_layers(model)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def max_logit_difference(model: nn.Module, labels: np.ndarray, input_ids: torch.Tensor) -> float:
    """Largest |logit| difference between the dense model and its MoE view with every expert on."""
    input_ids = input_ids.to(model.get_input_embeddings().weight.device)
    dense = model(input_ids=input_ids).logits
    with moe_view(model, labels):
        experts = model(input_ids=input_ids).logits
    return float((dense - experts).abs().max())
