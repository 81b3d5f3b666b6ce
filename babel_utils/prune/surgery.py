"""Physically pruned models: `physically_prune` returns a copy whose pruned experts' neurons (rows of the first
matrix and the gate, columns of the second) are gone, computing what `apply.apply_mask` computes, faster;
`save_pruned` and `load_pruned` store and reload such a copy."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core.results import atomic_folder
from ..models.adapters import config_of_text, get_adapter, layer_width, mlps, n_layers, neuron_parts
from .apply import check_labels, neuron_keep

log = logging.getLogger(__name__)


def _sliced(module: nn.Module, index: torch.Tensor, dim: int, transposed: bool) -> nn.Module:
    """A new linear map (nn.Linear, or GPT-2's Conv1D when `transposed`) holding only output rows (dim 0) or
    input columns (dim 1) `index` of `module`; the bias follows the rows (a column slice keeps it whole)."""
    stored_dim = 1 - dim if transposed else dim
    weight = module.weight.detach().index_select(stored_dim, index.to(module.weight.device))
    out_f, in_f = weight.shape[::-1] if transposed else weight.shape
    if transposed:
        from transformers.pytorch_utils import Conv1D

        new = Conv1D(out_f, in_f).to(device=weight.device, dtype=weight.dtype)
    else:
        new = torch.nn.utils.skip_init(nn.Linear, in_f, out_f, bias=module.bias is not None,
                                       device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if module.bias is not None:
        bias = module.bias.detach()
        new.bias.data.copy_(bias.index_select(0, index.to(bias.device)) if dim == 0 else bias)
    new.requires_grad_(module.weight.requires_grad)
    return new


def _keep_neurons(model: nn.Module, layer: int, index: torch.Tensor) -> None:
    """Replace one layer's FFN matrices by their slices holding neurons `index` (adapters.neuron_parts)."""
    adapter, mlp = get_adapter(model), mlps(model)[layer]
    for name, dim, positions in neuron_parts(model, layer, index):
        setattr(mlp, name, _sliced(getattr(mlp, name), positions, dim, adapter.transposed))
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(index)


def _set_widths(model: nn.Module, widths: Sequence[int]) -> None:
    """Record per-layer FFN widths in the config; its width key too when every layer agrees."""
    model.config.pruned_intermediate_sizes = [int(w) for w in widths]
    key = get_adapter(model).width
    if len(set(widths)) == 1 and key:
        setattr(config_of_text(model.config), key, int(widths[0]))


def physically_prune(model: nn.Module, labels: np.ndarray, mask: np.ndarray) -> nn.Module:
    """A copy of the model whose FFNs hold only the kept experts' neurons (rows of the first matrix and of the
    gate, columns of the second; the second matrix's bias stays: it is the layer's, not an expert's).

    Per-layer widths may differ (global or layer-wise masks). The config's width key (its adapter row's) is
    updated only when every layer keeps the same width; the widths are in `config.pruned_intermediate_sizes`
    (with differing widths such a model is not reloadable by from_pretrained: use `load_pruned`).
    """
    labels = check_labels(model, labels, mask)
    pruned = copy.deepcopy(model)
    widths = []
    for layer in range(n_layers(pruned)):
        index = torch.as_tensor(np.flatnonzero(neuron_keep(mask, labels, layer)), dtype=torch.long)
        _keep_neurons(pruned, layer, index)
        widths.append(len(index))
    _set_widths(pruned, widths)
    log.info("Physically pruned FFN widths: %s", widths if len(set(widths)) > 1 else f"{widths[0]} in every layer")
    return pruned


# --------------------------------------------------------------------------- exporting and timing pruned models


PRUNED_WEIGHTS = "model.safetensors"


def save_pruned(model: nn.Module, folder: str | Path, tokenizer: object | None = None) -> Path:
    """Export a physically pruned model (from `physically_prune`): its state dict as safetensors (under the
    module names, shared tensors once) and a config.json whose `pruned_intermediate_sizes` lists every layer's
    FFN width; `load_pruned` reads it back. Written to a temporary folder and renamed when complete."""
    from safetensors.torch import save_model

    folder = Path(folder)
    if getattr(model.config, "pruned_intermediate_sizes", None) is None:
        model.config.pruned_intermediate_sizes = [layer_width(model, i) for i in range(n_layers(model))]

    def write(tmp: Path) -> None:
        model.config.save_pretrained(tmp)
        save_model(model, str(tmp / PRUNED_WEIGHTS))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    atomic_folder(folder, write)
    return folder


def _resize_ffns(model: nn.Module, widths: Sequence[int]) -> None:
    """Cut every layer's FFN to the given width (its first neurons): the shapes `load_pruned` fills."""
    for layer, width in enumerate(widths):
        _keep_neurons(model, layer, torch.arange(int(width)))


def load_pruned(folder: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
    """Load a model exported by `save_pruned` (per-layer FFN widths may differ, which from_pretrained
    cannot read): the architecture from config.json, each FFN resized, then the safetensors weights."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    widths = getattr(config, "pruned_intermediate_sizes", None)
    if widths is None:
        raise ValueError(f"{folder} holds no pruned model: its config.json lacks pruned_intermediate_sizes "
                         "(export one with babel_utils.prune.masks.save_pruned).")
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    _resize_ffns(model, widths)
    weights = folder / PRUNED_WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"No {PRUNED_WEIGHTS} in {folder} (export with babel_utils.prune.masks.save_pruned).")
    model.tie_weights()  # before loading: a tied pair is stored once, under either name
    missing, unexpected = load_model(model, str(weights), strict=False)
    state = model.state_dict()
    loaded = {state[k].data_ptr() for k in state if k not in missing}
    missing = [k for k in missing if state[k].data_ptr() not in loaded]  # a tied tensor is stored once
    if missing or unexpected:
        raise ValueError(f"The weights in {folder} do not fit its config: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}.")
    return model.to(device).eval().requires_grad_(False)
