"""Low-rank adapters (LoRA) on the linear maps of every decoder layer, as forward hooks that add scale * B A x, and
their merge into the weights (06's offline tuning)."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ..models.adapters import ffn_linear_names, get_adapter, layers

log = logging.getLogger(__name__)

TUNING_PARAMS: tuple[str, ...] = ("layers", "mlp", "attention")  # which linear maps: every layer's, FFN, attention


LORA_SCALE = 1.0  # the adapter adds scale * B A x


def target_linears(model: PreTrainedModel, which: str) -> dict[str, nn.Module]:
    """The linear maps that tuning touches, by name ("layers.3.mlp.up_proj"): every linear map (nn.Linear, or
    GPT-2's Conv1D) of every decoder layer ("layers"), only the FFNs ("mlp") or only the attention ("attention")."""
    if which not in TUNING_PARAMS:
        raise ValueError(f"Unknown tuning_params {which!r}; allowed: {', '.join(TUNING_PARAMS)}.")
    ffn, attention = ffn_linear_names(model), get_adapter(model).attention + "."
    chosen = {}
    for i, layer in enumerate(layers(model)):
        for name, module in layer.named_modules():
            if not isinstance(module, (nn.Linear, Conv1D)):
                continue
            if which == "layers" or (which == "mlp" and name in ffn) or \
                    (which == "attention" and name.startswith(attention)):
                chosen[f"layers.{i}.{name}"] = module
    if not chosen:
        raise ValueError(f"tuning_params={which!r} selects no linear map of this {model.config.model_type} model.")
    return chosen


def out_in(linear: nn.Module) -> tuple[int, int]:
    """(output, input) width of a linear map: nn.Linear's weight is [out, in], GPT-2's Conv1D's [in, out]."""
    w = linear.weight
    return (w.shape[1], w.shape[0]) if isinstance(linear, Conv1D) else (w.shape[0], w.shape[1])


class LoRA:
    """Low-rank adapters `W x + scale * B A x` on linear maps, as forward hooks; `merge` folds them into W.

    A starts random (seeded), B at zero, so the tuned model starts as the base model. Every selected
    map of every layer gets an adapter of the same rank: no layer is favoured.
    """

    def __init__(self, linears: dict[str, nn.Linear], rank: int, seed: int, scale: float = LORA_SCALE) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.linears, self.rank, self.scale = linears, rank, scale
        self.A, self.B = {}, {}
        for name, lin in linears.items():
            w, (n_out, n_in) = lin.weight, out_in(lin)
            a = torch.randn(rank, n_in, generator=gen) / math.sqrt(n_in)
            self.A[name] = nn.Parameter(a.to(w.device, w.dtype))
            self.B[name] = nn.Parameter(torch.zeros(n_out, rank, device=w.device, dtype=w.dtype))
        self._handles: list = []

    def parameters(self) -> list[nn.Parameter]:
        return [p for name in self.linears for p in (self.A[name], self.B[name])]

    def attach(self) -> None:
        for name, lin in self.linears.items():
            A, B, scale = self.A[name], self.B[name], self.scale
            self._handles.append(lin.register_forward_hook(
                lambda module, args, out, A=A, B=B, scale=scale: out + scale * ((args[0] @ A.T) @ B.T)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.linears:
            out[f"{name}.lora_A"] = self.A[name].detach().cpu().contiguous()
            out[f"{name}.lora_B"] = self.B[name].detach().cpu().contiguous()
        return out


def merge_adapter(model: PreTrainedModel, adapter: dict[str, torch.Tensor], scale: float) -> None:
    """Fold LoRA weights into the model in place: W += scale * B @ A (a clear error for a foreign adapter)."""
    linears = target_linears(model, "layers")
    names = sorted({key.rsplit(".", 1)[0] for key in adapter})
    unknown = [n for n in names if n not in linears]
    if unknown:
        raise ValueError(f"The adapter names linear maps this model does not have, e.g. {unknown[:3]}.")
    with torch.no_grad():
        for name in names:
            w, (n_out, n_in) = linears[name].weight, out_in(linears[name])
            A, B = adapter[f"{name}.lora_A"], adapter[f"{name}.lora_B"]
            if B.shape[0] != n_out or A.shape[1] != n_in:
                raise ValueError(f"Adapter {name} has shape {tuple(B.shape)} x {tuple(A.shape)}; the model's "
                                 f"map is {n_out} x {n_in}: the adapter belongs to another model.")
            delta = scale * (B.double() @ A.double())  # [out, in]
            w += (delta.T if isinstance(linears[name], Conv1D) else delta).to(w.dtype).to(w.device)
