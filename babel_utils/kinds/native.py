"""Native mixtures of experts (Mixtral, Qwen-MoE, OLMoE, GPT-OSS, DeepSeek-V3): the experts are the model's own.

- Recording (`record_routes`): per language, how often each (MoE layer, expert) is among the router's top-k
  for a counted token: the model's real routing with its own k, in the same `LanguageCounts` as the split
  experts' (so the frequency analyses read them unchanged).
- Pruning (`route_masks`): a pruned expert's router logit is set to -inf before the router's own rule
  (ROUTING, one entry per rule, each proved equal to its router in tests/test_native.py), so it is never
  chosen and takes no probability mass; one mask per batch row. `remove_experts` takes the pruned experts
  out of the layer (router rows and stacked weights): the same function, which a test checks.
- A shared expert (Qwen2-MoE's and DeepSeek-V3's, always on) is not routed: it is neither counted nor pruned.
- A layer that keeps fewer experts than the router's top-k sends every token to all it keeps (the pruned ones
  take weight 0); a mask must keep at least one expert per MoE layer.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.progress import tqdm
from ..models.adapters import NATIVE, get_adapter, layers, model_device
from ..models.hooks import removed_on_exit
from ..record.counting import ExpertCounter, LanguageCounts

Route = tuple[torch.Tensor, torch.Tensor]  # (scores [N, k], indices [N, k])


def _softmax_topk(router: nn.Module, logits: torch.Tensor, renorm: bool | None = None) -> Route:
    """Qwen-MoE and OLMoE: softmax, top-k, renormalised when the router says so, cast to the logits' dtype."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float)
    top, index = torch.topk(probs, router.top_k, dim=-1)
    if router.norm_topk_prob if renorm is None else renorm:
        top /= top.sum(dim=-1, keepdim=True)
    return (top if renorm else top.to(logits.dtype)), index


def _softmax_topk_renorm(router: nn.Module, logits: torch.Tensor) -> Route:
    """Mixtral: softmax in float32, top-k, always renormalised (scores stay float32)."""
    return _softmax_topk(router, logits.float(), renorm=True)


def _topk_softmax(router: nn.Module, logits: torch.Tensor) -> Route:
    """GPT-OSS: top-k of the logits, softmax over those k."""
    top, index = torch.topk(logits, router.top_k, dim=-1)
    return torch.softmax(top, dim=1, dtype=top.dtype), index


def _sigmoid_group_topk(router: nn.Module, logits: torch.Tensor) -> Route:
    """DeepSeek-V3: sigmoid scores plus the correction bias choose the top-k within the best groups; the weights
    are the sigmoid scores, renormalised when the router says so, times the routed scaling factor. A pruned
    expert (logit -inf) is excluded from the choice, not only given score 0."""
    scores = logits.sigmoid()
    choice = (scores + router.e_score_correction_bias).masked_fill(torch.isneginf(logits), float("-inf"))
    grouped = choice.view(-1, router.num_group, router.num_experts // router.num_group)
    group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
    groups = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
    in_group = torch.zeros_like(group_scores).scatter_(1, groups, 1).bool()
    choice = choice.masked_fill(~in_group.repeat_interleave(router.num_experts // router.num_group, dim=1),
                                float("-inf"))
    index = torch.topk(choice, k=router.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, index)
    if router.norm_topk_prob:
        weights /= weights.sum(dim=-1, keepdim=True) + 1e-20
    return weights * router.routed_scaling_factor, index


ROUTING: dict[str, Callable[[nn.Module, torch.Tensor], Route]] = {
    "softmax_topk": _softmax_topk,
    "softmax_topk_renorm": _softmax_topk_renorm,
    "topk_softmax": _topk_softmax,
    "sigmoid_group_topk": _sigmoid_group_topk,
}


def is_native(model: nn.Module) -> bool:
    """Whether the model is a mixture of experts with its own router."""
    return get_adapter(model).kind == NATIVE


def moe_blocks(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(decoder layer index, MoE block) of every layer whose FFN is routed (some models keep dense layers)."""
    adapter = get_adapter(model)
    if adapter.kind != NATIVE:
        raise ValueError(f"{model.config.model_type} is not a native mixture of experts (its FFN is {adapter.kind}).")
    blocks = [(i, getattr(layer, adapter.mlp)) for i, layer in enumerate(layers(model))]
    return [(i, block) for i, block in blocks if hasattr(block, adapter.router)]


def routers(model: nn.Module) -> list[nn.Module]:
    """The router of every MoE layer."""
    name = get_adapter(model).router
    return [getattr(block, name) for _, block in moe_blocks(model)]


def n_native_experts(model: nn.Module) -> int:
    """Routed experts per MoE layer (of the first; removal may leave fewer)."""
    return int(routers(model)[0].num_experts)


def structure(model: nn.Module) -> pd.DataFrame:
    """The native structure (what 01 shows instead of a split): per MoE layer its experts, top-k, each
    expert's FFN width and the shared expert's, if any."""
    adapter = get_adapter(model)
    rows = []
    for layer, block in moe_blocks(model):
        router, experts = getattr(block, adapter.router), getattr(block, adapter.experts)
        shared = getattr(block, adapter.shared, None) if adapter.shared else None
        rows.append({"layer": layer, "experts": int(router.num_experts), "top_k": int(router.top_k),
                     "expert_width": int(getattr(experts, "intermediate_dim", None) or experts.intermediate_size),
                     "shared_expert_width": int(shared.down_proj.in_features) if shared is not None else 0})
    return pd.DataFrame(rows)


def route(model: nn.Module, router: nn.Module, logits: torch.Tensor) -> Route:
    """The router's own (scores, indices) from its logits, by its row's rule."""
    return ROUTING[get_adapter(model).routing](router, logits)


@contextmanager
def router_hooks(model: nn.Module, fn: Callable[[int, nn.Module, tuple], tuple | None]) -> Iterator[None]:
    """Call `fn(moe_layer, router, output)` on every router's (logits, scores, indices); it may return a
    replacement. Hooks removed on exit, always."""
    with removed_on_exit([r.register_forward_hook(lambda m, args, out, i=i: fn(i, m, out))
                          for i, r in enumerate(routers(model))]):
        yield


@contextmanager
def route_masks(model: nn.Module, masks: np.ndarray) -> Iterator[Callable[[Sequence[int]], None]]:
    """Masks [K, L_moe, E] (True = kept) on the routers: yields `select(indices)`, to be called before every
    forward with the mask of each batch row (one mask: select([0] * batch)). A pruned expert's logit is -inf
    before the router's rule, so no token is routed to it."""
    masks = np.asarray(masks, dtype=bool)
    found = routers(model)
    n_layers, n_experts = len(found), int(found[0].num_experts)
    if masks.ndim != 3 or masks.shape[1:] != (n_layers, n_experts):
        raise ValueError(f"Router masks must be [K, {n_layers} MoE layers, {n_experts} experts]; got {masks.shape}.")
    _check_keeps_one(masks)
    keep = torch.as_tensor(masks, device=model_device(model))
    rows: dict[str, torch.Tensor] = {}

    def select(indices: Sequence[int]) -> None:
        rows["keep"] = keep[torch.as_tensor([int(i) for i in indices], device=keep.device)]  # [B, L, E]

    def fn(layer: int, router: nn.Module, out: tuple) -> tuple:
        logits = out[0]
        k = rows["keep"][:, layer].to(logits.device)  # [B, E]; the router sees the tokens flattened [B * T, E]
        k = k.repeat_interleave(logits.shape[0] // k.shape[0], dim=0)
        masked = logits.masked_fill(~k, float("-inf"))
        return (masked, *route(model, router, masked))
    with router_hooks(model, fn):
        yield select


@contextmanager
def route_mask(model: nn.Module, mask: np.ndarray) -> Iterator[None]:
    """One mask [L_moe, E] on every row of every batch."""
    with route_masks(model, np.asarray(mask)[None]) as select:
        def fn(module: nn.Module, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            rows = ids.shape[0] if ids is not None else kwargs["inputs_embeds"].shape[0]
            select([0] * rows)
        with removed_on_exit([model.register_forward_pre_hook(fn, with_kwargs=True)]):
            yield


def _check_keeps_one(masks: np.ndarray) -> None:
    """Every mask keeps at least one expert in every MoE layer (a layer with none has no output)."""
    empty = np.argwhere(masks.sum(-1) == 0)
    if len(empty):
        raise ValueError(f"A mask prunes every expert of MoE layer {int(empty[0][-1])}; a native layer must keep at "
                         "least one (lower the pruning ratio or the threshold).")


def remove_experts(model: nn.Module, mask: np.ndarray) -> nn.Module:
    """A copy without the pruned experts [L_moe, E]: their router rows (and biases) and stacked weights removed
    per layer; a layer keeping fewer than top-k experts routes to all of them."""
    mask = np.asarray(mask, dtype=bool)
    _check_keeps_one(mask[None])
    pruned = copy.deepcopy(model)
    adapter = get_adapter(pruned)
    for (_, block), keep in zip(moe_blocks(pruned), mask):
        index = torch.as_tensor(np.flatnonzero(keep))
        router, experts = getattr(block, adapter.router), getattr(block, adapter.experts)
        if getattr(router, "num_group", 1) > 1 and not keep.all():
            raise ValueError("This router chooses experts within groups (DeepSeek-V3's n_group > 1): removing "
                             "experts would change the groups. Prune it by masking (route_masks), which is exact.")
        for module in (router, experts):
            for name, param in list(module.named_parameters(recurse=False)):
                module.register_parameter(name, nn.Parameter(param.detach()[index.to(param.device)].clone(),
                                                             requires_grad=param.requires_grad))
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer[index.to(buffer.device)].clone())
            module.num_experts = len(index)
        router.top_k = min(int(router.top_k), len(index))
    pruned.config.pruned_num_experts = [int(k.sum()) for k in mask]
    return pruned


class RouterCounter(ExpertCounter):
    """Counts, token by token, the experts each router puts in its top-k (same blocks and results as
    ExpertCounter; the selection is the model's own)."""

    def __init__(self, model: nn.Module, block: int = 32, start: int = 0) -> None:  # noqa: D107 (no labels)
        self.model, self.block, self.start = model, block, start
        self.n_layers, self.n_experts = len(routers(model)), n_native_experts(model)
        self.device = model_device(model)
        self._start_counting()

    def _route(self, layer: int, router: nn.Module, out: tuple) -> None:
        index = out[2].to(self.device)[self._mask.to(out[2].device)]  # [counted tokens, k]
        self._scores[layer] = index + layer * self.n_experts

    def add_batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, count_mask: torch.Tensor) -> None:
        """Run one batch through the model body and count the routers' choices for its counted tokens."""
        from ..models.adapters import body

        with torch.inference_mode():
            self._begin(count_mask)
            with router_hooks(self.model, self._route):
                body(self.model)(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                                 use_cache=False)
            self._finish()

    def _chosen(self) -> torch.Tensor:
        return torch.cat(self._scores, dim=1)  # the routers' own choices: [N, L * k] flat (layer, expert) ids


def record_routes(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, count_mask: torch.Tensor,
                  batch_size: int = 8, block: int = 32, desc: str = "record") -> LanguageCounts:
    """The routers' choices over packed sequences, batch by batch, with a progress bar."""
    counter = RouterCounter(model, block=block)
    for start in tqdm(range(0, input_ids.shape[0], batch_size), desc=desc, unit="batch"):
        rows = slice(start, start + batch_size)
        counter.add_batch(input_ids[rows], attention_mask[rows], count_mask[rows])
    return counter.result()
