"""Counting expert activations (docs/method.md section 3): score, normalise, select, count. No activations are kept."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.progress import tqdm
from ..models.adapters import body, down_projs, model_device
from ..models.experts import ExpertSplit
from ..models.hooks import ffn_input_hooks
from ..models.topk import top_indices
from .frequencies import make_table


@dataclass
class LanguageCounts:
    """Counts of one language: how often each (layer, expert) was selected, over how many tokens."""

    counts: np.ndarray  # int64 [L, E]
    n_tokens: int
    block_counts: np.ndarray  # int32 [n_blocks, L, E]: counts per block of consecutive tokens (bootstrap)
    block_tokens: np.ndarray  # int64 [n_blocks]

    def state_dict(self) -> dict:
        """The counts as named results (arrays and a JSON-able n_tokens): what the record stage caches."""
        return {"counts": self.counts, "block_counts": self.block_counts, "block_tokens": self.block_tokens,
                "n_tokens": {"n_tokens": int(self.n_tokens)}}

    @classmethod
    def from_state_dict(cls, state: dict) -> "LanguageCounts":
        """The counts back from `state_dict` (or from the record stage's cache)."""
        return cls(counts=np.asarray(state["counts"]), n_tokens=int(state["n_tokens"]["n_tokens"]),
                   block_counts=np.asarray(state["block_counts"]), block_tokens=np.asarray(state["block_tokens"]))

    def merge(self, later: "LanguageCounts", block: int) -> "LanguageCounts":
        """The counts of this stream of tokens followed by `later`'s (counted with the same `block` size): counts
        and tokens add, blocks follow on. Exact when this stream ends on a block boundary (else an error)."""
        if self.counts.shape != later.counts.shape:
            raise ValueError(f"Cannot merge counts of shape {later.counts.shape} into {self.counts.shape}.")
        if block > 0 and self.n_tokens % block and len(later.block_counts):
            raise ValueError(f"The first stream ends inside a block ({self.n_tokens} tokens, blocks of {block}): "
                             "its last block and the next stream's first cannot be told apart. Merge streams "
                             "that end on block boundaries (or count the continuation with ExpertCounter.load_state_dict).")
        return LanguageCounts(counts=self.counts + later.counts, n_tokens=self.n_tokens + later.n_tokens,
                              block_counts=np.concatenate([self.block_counts, later.block_counts]),
                              block_tokens=np.concatenate([self.block_tokens, later.block_tokens]))


def real_device(device: torch.device) -> torch.device:
    """A device that holds data: "meta" (weights offloaded by accelerate) means the CPU."""
    return torch.device("cpu") if device.type == "meta" else device


def n_selected(n_layers: int, n_experts: int, top_fraction: float, selection: str) -> int:
    """Experts selected per token: ceil(top_fraction * L * E) across layers, or per layer."""
    pool = n_layers * n_experts if selection == "cross_layer" else n_experts
    # round() first: 0.1 * 2560 is 256.00000000000003 in floating point, whose ceil would be 257.
    return math.ceil(round(top_fraction * pool, 9))


def ordered_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim by pairwise halving: elementwise adds in a fixed order, so the same bits on every
    CPU kernel and thread count (`Tensor.sum` reduces in an order that depends on the vector width)."""
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        total = x[..., :half] + x[..., half:2 * half]
        if x.shape[-1] % 2:
            total[..., :1] += x[..., 2 * half:]
        x = total
    return x[..., 0]


def expert_scores(h: torch.Tensor, labels: torch.Tensor, n_experts: int, score: str,
                  perm: torch.Tensor | None = None) -> torch.Tensor:
    """Per-expert scores [..., E] of FFN activations h [..., d_ff]; `labels` [d_ff] names each neuron's expert.

    Summed in a fixed order, so a score depends on h alone, not on the machine: on the CPU neuron by neuron
    (`index_add_` along the last dim adds whole columns in index order), on a GPU (whose index_add_ uses
    atomics) by pairwise halving of the neurons grouped by `perm` (argsort of labels; derived if None).
    """
    if score == "abs":
        h = h.abs()
    elif score == "relu":
        h = h.clamp(min=0)
    if h.device.type == "cpu":
        out = torch.zeros(*h.shape[:-1], n_experts, dtype=h.dtype)
        return out.index_add_(-1, labels, h)
    perm = torch.argsort(labels, stable=True) if perm is None else perm
    return ordered_sum(h.index_select(-1, perm).unflatten(-1, (n_experts, -1)))


def zscore(scores: torch.Tensor) -> torch.Tensor:
    """Standardise scores across the experts of a layer (last dim), per token, in float64 and a fixed order."""
    scores = scores.to(torch.float64)
    n = scores.shape[-1]
    mean = ordered_sum(scores)[..., None] / n
    centred = scores - mean
    std = (ordered_sum(centred * centred)[..., None] / n).sqrt()
    return centred / std.clamp(min=1e-12)


def select(scores: torch.Tensor, k: int, selection: str) -> torch.Tensor:
    """Flat (layer * E + expert) indices of the selected experts, [N, k] or [N, L * k] (as sets)."""
    n, n_layers, n_experts = scores.shape
    if selection == "cross_layer":
        return top_indices(scores.reshape(n, -1), k)
    per_layer = top_indices(scores, k)  # [N, L, k]
    offsets = torch.arange(n_layers, device=scores.device).view(1, -1, 1) * n_experts
    return (per_layer + offsets).reshape(n, -1)


class ExpertCounter:
    """Counts selected experts token by token, with hooks on every layer's down_proj.

    Memory does not grow with the number of tokens: per batch it holds one [tokens, L, E] score
    buffer; across batches only int64 counters (and the per-block counts used for bootstraps).
    """

    def __init__(self, model: nn.Module, labels: np.ndarray, n_experts: int, score: str = "abs",
                 normalize: str = "zscore", selection: str = "cross_layer", top_fraction: float = 0.10,
                 block: int = 32, start: int = 0) -> None:
        self.model = model
        self.start = start  # stream position of its first token: one shard of a longer stream numbers its blocks on
        self.n_layers, self.d_ff = labels.shape
        self.n_experts = n_experts
        self.score, self.normalize, self.selection, self.block = score, normalize, selection, block
        self.k = n_selected(self.n_layers, n_experts, top_fraction, selection)
        self.device = real_device(model_device(model))
        downs = down_projs(model)
        # Each layer's labels (and the permutation grouping its neurons by expert, for the GPU) live on its
        # layer's device (the CPU for a layer offloaded by accelerate, whose weights sit on "meta"; see _hook).
        split = ExpertSplit(labels)
        self.labels = [torch.as_tensor(split.labels[i]).to(real_device(downs[i].weight.device))
                       for i in range(self.n_layers)]
        self.perms = [torch.as_tensor(split.permutation(i)).to(lab.device) for i, lab in enumerate(self.labels)]
        self._start_counting()

    def _start_counting(self) -> None:
        """Empty counts, blocks and per-layer buffers for n_layers x n_experts on self.device."""
        self.counts = torch.zeros(self.n_layers * self.n_experts, dtype=torch.int64, device=self.device)
        self.n_tokens = 0
        self.blocks: list[torch.Tensor] = []
        self.block_tokens: list[int] = []
        self._mask: torch.Tensor | None = None
        self._scores: list[torch.Tensor | None] = [None] * self.n_layers

    def _hook(self, layer: int, h: torch.Tensor) -> None:
        if self.labels[layer].device != h.device:  # an offloaded layer (accelerate) runs elsewhere than its weights
            self.labels[layer], self.perms[layer] = self.labels[layer].to(h.device), self.perms[layer].to(h.device)
        s = expert_scores(h.reshape(-1, h.shape[-1]), self.labels[layer], self.n_experts, self.score,
                          self.perms[layer])
        s = s[self._mask.to(s.device)]  # mask the small score matrix, not the wide activations
        if self.normalize == "zscore":
            s = zscore(s)
        self._scores[layer] = s.to(self.device, non_blocking=True)

    def add_batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, count_mask: torch.Tensor) -> None:
        """Run one batch through the model body (prefill, no LM head) and count its selected experts."""
        _forward_counting([self], input_ids, attention_mask, count_mask)

    def _begin(self, count_mask: torch.Tensor) -> None:
        """Before a forward: which tokens of the batch count."""
        self._mask = count_mask.reshape(-1).to(self.device)

    def _chosen(self) -> torch.Tensor:
        """The flat (layer * E + expert) ids each counted token of the batch selected, from the hooks' scores."""
        return select(torch.stack(self._scores, dim=1), self.k, self.selection)  # scores [N, L, E]

    def _finish(self) -> None:
        """After a forward: select and count what the hooks left."""
        chosen = self._chosen()
        self._scores = [None] * self.n_layers
        self.counts += torch.bincount(chosen.reshape(-1), minlength=self.counts.numel())
        self._add_blocks(chosen)
        self.n_tokens += chosen.shape[0]

    def _add_blocks(self, chosen: torch.Tensor) -> None:
        """Per-block counts over consecutive counted tokens (blocks continue across batches)."""
        if self.block <= 0:
            return
        n, size = chosen.shape[0], self.counts.numel()
        start = self.start + self.n_tokens
        block_of = (torch.arange(start, start + n, device=chosen.device) // self.block)
        first = start // self.block
        n_blocks = int(block_of[-1]) - first + 1 if n else 0
        flat = (block_of - first).unsqueeze(1) * size + chosen
        per_block = torch.bincount(flat.reshape(-1), minlength=n_blocks * size).view(n_blocks, size)
        tokens = torch.bincount(block_of - first, minlength=n_blocks).cpu().tolist()
        if self.blocks and start % self.block:  # the first block continues the last one
            self.blocks[-1] = self.blocks[-1] + per_block[0].to(torch.int32).cpu()
            self.block_tokens[-1] += tokens[0]
            per_block, tokens = per_block[1:], tokens[1:]
        self.blocks += list(per_block.to(torch.int32).cpu())
        self.block_tokens += tokens

    def state_dict(self) -> dict:
        """What the counter has counted so far (LanguageCounts.state_dict): enough to resume it."""
        return self.result().state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue from counts made before (same labels, options and block size): later batches add to them
        and their blocks follow on, as if one counter had seen every token."""
        counts = LanguageCounts.from_state_dict(state)
        if counts.counts.shape != (self.n_layers, self.n_experts):
            raise ValueError(f"Counts of shape {counts.counts.shape} do not fit this counter "
                             f"({self.n_layers} layers x {self.n_experts} experts).")
        self.counts = torch.tensor(counts.counts.reshape(-1), dtype=torch.int64, device=self.device)  # a copy
        self.n_tokens = counts.n_tokens
        self.blocks = [torch.tensor(b.reshape(-1), dtype=torch.int32) for b in counts.block_counts]
        self.block_tokens = [int(t) for t in counts.block_tokens]

    def merge(self, later: "ExpertCounter | LanguageCounts") -> LanguageCounts:
        """This counter's counts followed by another stream's (LanguageCounts.merge)."""
        other = later.result() if isinstance(later, ExpertCounter) else later
        return self.result().merge(other, self.block)

    def result(self) -> LanguageCounts:
        """The counts so far, on the CPU."""
        shape = (self.n_layers, self.n_experts)
        blocks = (torch.stack(self.blocks).view(-1, *shape).numpy() if self.blocks
                  else np.zeros((0, *shape), dtype=np.int32))
        # copies: the counter keeps counting into its own tensors after a result was taken
        return LanguageCounts(counts=self.counts.view(shape).cpu().numpy().copy(), n_tokens=self.n_tokens,
                              block_counts=blocks, block_tokens=np.asarray(self.block_tokens, dtype=np.int64))


def _forward_counting(counters: Sequence[ExpertCounter], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      count_mask: torch.Tensor) -> None:
    """One forward of the model body (prefill, no LM head) that feeds every counter (same model)."""
    def hook(layer: int, h: torch.Tensor) -> None:
        for counter in counters:
            counter._hook(layer, h)

    model, device = counters[0].model, counters[0].device
    with torch.inference_mode():
        for counter in counters:
            counter._begin(count_mask)
        with ffn_input_hooks(model, hook):
            body(model)(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
        for counter in counters:
            counter._finish()


def record_counts(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  count_mask: torch.Tensor, labels: np.ndarray, n_experts: int, batch_size: int = 8,
                  desc: str = "record", **options) -> LanguageCounts:
    """Count selected experts over packed sequences, batch by batch, with a progress bar."""
    return record_counts_many(model, input_ids, attention_mask, count_mask, [(labels, n_experts)],
                              batch_size, desc, **options)[0]


def record_counts_many(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       count_mask: torch.Tensor, splits: Sequence[tuple[np.ndarray, int]], batch_size: int = 8,
                       desc: str = "record", **options) -> list[LanguageCounts]:
    """`record_counts` under several expert splits (labels, n_experts) at once: one forward pass feeds them all.

    The FFN activations do not depend on how neurons are grouped, so every extra split costs only its
    scoring and selection, not another pass over the text (notebook 05's expert grid, 08's split comparison).
    """
    counters = [ExpertCounter(model, labels, n_experts, **options) for labels, n_experts in splits]
    for start in tqdm(range(0, input_ids.shape[0], batch_size), desc=desc, unit="batch"):
        rows = slice(start, start + batch_size)
        _forward_counting(counters, input_ids[rows], attention_mask[rows], count_mask[rows])
    return [counter.result() for counter in counters]


def frequency_table(counts: dict[str, LanguageCounts]) -> pd.DataFrame:
    """Tidy table (language, layer, expert, count, n_tokens) of recorded counts (frequencies.make_table)."""
    return make_table({lang: c.counts for lang, c in counts.items()}, {lang: c.n_tokens for lang, c in counts.items()})
