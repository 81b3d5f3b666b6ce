"""Hooks on the FFN's down projection, as context managers (in the spirit of baukit's TraceDict)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from .adapters import down_projs

# fn(layer, h) sees h = act(gate(x)) * up(x), the input of down_proj; it may return a replacement.
FFNInputFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


@contextmanager
def ffn_input_hooks(model: nn.Module, fn: FFNInputFn) -> Iterator[None]:
    """Call `fn(layer, h)` on every layer's down_proj input; hooks are removed on exit, always."""
    def make_hook(layer: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            out = fn(layer, args[0])
            return None if out is None else (out, *args[1:])
        return hook

    handles = [down.register_forward_pre_hook(make_hook(i)) for i, down in enumerate(down_projs(model))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
