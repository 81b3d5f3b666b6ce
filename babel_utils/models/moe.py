"""The MoE view of a dense FFN: the same weights, computed expert by expert and summed.

Expert e of a layer holds the neurons the labels give it: its rows of the first matrix (and of the gate,
with their biases) and its columns of the second. The second matrix's bias is the layer's, not an expert's:
it is added once, whichever experts are on (as pruning keeps it).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .adapters import FFNWeights, activation, down_projs, ffn_weights, first_module, n_layers
from .experts import ExpertSplit
from .hooks import removed_on_exit


def _rows(t: torch.Tensor | None, perm: torch.Tensor, n_experts: int) -> torch.Tensor | None:
    return None if t is None else t[perm].unflatten(0, (n_experts, -1))


def expert_weights(model: nn.Module, labels: np.ndarray, layer: int) -> FFNWeights:
    """The layer's FFN grouped by expert: up, gate [E, m, d_model], their biases [E, m], down [d_model, E, m]."""
    w = ffn_weights(model, layer)
    split = ExpertSplit(labels)
    n = split.n_experts
    perm = torch.as_tensor(split.permutation(layer), device=w.up.device)
    return FFNWeights(up=_rows(w.up, perm, n), down=w.down[:, perm].unflatten(1, (n, -1)), gate=_rows(w.gate, perm, n),
                      up_bias=_rows(w.up_bias, perm, n), gate_bias=_rows(w.gate_bias, perm, n),
                      down_bias=w.down_bias)


def _project(x: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = torch.einsum("...i,emi->...em", x, rows)
    return out if bias is None else out + bias


def moe_ffn(x: torch.Tensor, w: FFNWeights, act: nn.Module, expert_mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum over experts e of down_e(h_e) (+ the layer's down bias), h_e = act(gate_e x) * up_e x for a gated
    FFN and act(up_e x + b_e) for a plain one; optionally with experts switched off."""
    up = _project(x, w.up, w.up_bias)
    h = act(up) if w.gate is None else act(_project(x, w.gate, w.gate_bias)) * up
    if expert_mask is not None:
        h = h * expert_mask.to(h.dtype).unsqueeze(-1)
    y = torch.einsum("...em,oem->...o", h, w.down)
    return y if w.down_bias is None else y + w.down_bias


@contextmanager
def moe_view(model: nn.Module, labels: np.ndarray, expert_masks: np.ndarray | None = None) -> Iterator[None]:
    """Run every FFN as a sum of its experts (optionally masked [L, E]); the dense model on exit.

    The FFN's input is taken where its first matrix reads it and the sum replaces its second matrix's output,
    so the view works whatever module holds the FFN (and whatever the layer adds after it, as BLOOM's residual).
    """
    handles = []
    for layer, down in enumerate(down_projs(model)):
        weights = expert_weights(model, labels, layer)
        mask = None if expert_masks is None else torch.as_tensor(expert_masks[layer], device=weights.up.device)
        seen: dict[str, torch.Tensor] = {}

        def keep_input(module: nn.Module, args: tuple, seen=seen) -> None:
            seen["x"] = args[0]

        def replace_output(module: nn.Module, args: tuple, output: torch.Tensor, w=weights,
                           a=activation(model, layer), m=mask, seen=seen) -> torch.Tensor:
            return moe_ffn(seen.pop("x"), w, a, m)
        handles.append(first_module(model, layer).register_forward_pre_hook(keep_input))
        handles.append(down.register_forward_hook(replace_output))
    assert len(handles) == 2 * n_layers(model)
    with removed_on_exit(handles):
        yield


@torch.no_grad()
def max_logit_difference(model: nn.Module, labels: np.ndarray, input_ids: torch.Tensor) -> float:
    """Largest |logit| difference between the dense model and its MoE view with every expert on."""
    input_ids = input_ids.to(model.get_input_embeddings().weight.device)
    dense = model(input_ids=input_ids).logits
    with moe_view(model, labels):
        experts = model(input_ids=input_ids).logits
    return float((dense - experts).abs().max())
