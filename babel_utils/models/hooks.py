"""Hooks on the FFN's second matrix, as context managers (in the spirit of baukit's TraceDict)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from .adapters import down_projs, get_adapter, layers

# fn(layer, h) sees h [batch, tokens, d_ff], the input of the second matrix (act(gate x) * up x for a gated
# FFN, act(fc1 x + b) for a plain one); it may return a replacement of the same shape.
FFNInputFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


@contextmanager
def removed_on_exit(handles: list) -> Iterator[list]:
    """Hook handles removed when the block ends, however it ends (append more to the list inside)."""
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def ffn_input_hooks(model: nn.Module, fn: FFNInputFn) -> Iterator[None]:
    """Call `fn(layer, h)` on every layer's second-matrix input; hooks are removed on exit, always.

    A model whose FFN sees the tokens flattened ([batch * tokens, d_ff], OPT) shows `fn` the batch's shape,
    taken from the decoder layer's input, so row-wise hooks (one mask per batch row) work unchanged.
    """
    flat = get_adapter(model).flat_tokens
    batch: dict[int, torch.Size] = {}

    def keep_shape(layer: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            batch[layer] = hidden.shape[:-1]
        return hook

    def make_hook(layer: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            h = args[0].view(*batch[layer], args[0].shape[-1]) if flat else args[0]
            out = fn(layer, h)
            if out is None:
                return None
            return (out.reshape(args[0].shape) if flat else out, *args[1:])
        return hook

    handles = [down.register_forward_pre_hook(make_hook(i)) for i, down in enumerate(down_projs(model))]
    if flat:
        handles += [layer.register_forward_pre_hook(keep_shape(i), with_kwargs=True)
                    for i, layer in enumerate(layers(model))]
    with removed_on_exit(handles):
        yield
