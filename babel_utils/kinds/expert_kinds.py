"""What an "expert" is, one table entry per kind of model; the stages and notebooks ask the entry, not the model.

- split: a dense FFN's neurons clustered into `n_experts` balanced groups per layer (01's split); labels
  [L, d_ff] give each neuron's expert, recording scores the groups, pruning zeroes or slices their neurons.
- native: a mixture of experts with its own router (babel_utils.kinds.native); the experts are the model's own, the
  labels are the identity [L_moe, E] (expert e of a layer is "neuron" e), recording counts the router's top-k,
  pruning masks the router's logits or removes the experts. There is nothing to regroup: no other split, no
  expert grid and no dynamic top-k (the router is already dynamic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.config import BabelConfig
from ..models.adapters import d_ff, layer_width, model_device, n_layers
from ..prune import apply, surgery
from ..record.counting import ExpertCounter, LanguageCounts, n_selected, record_counts_many
from ..split import clustering
from . import native


@dataclass(frozen=True)
class ExpertKind:
    """How one kind of expert is made, recorded, masked and removed."""

    name: str
    meaning: str  # what an expert is, in words (01 prints it, docs/models.md lists it)
    regroups: bool  # other splits and granularities exist (01's comparison, 05's grid, 08's split comparison)
    skipped_methods: tuple[str, ...]  # pruning methods of methods.METHODS that do not apply
    label_shape: Callable[[nn.Module], tuple[int, int]]
    split: Callable[[BabelConfig, nn.Module], dict]  # {"labels": [L, width] int64, "split_layers": table}
    record: Callable[..., list[LanguageCounts]]  # (model, ids, attention, count, splits, desc, **options)
    counter: Callable[..., ExpertCounter]  # (model, labels, n_experts, start, **options): one stream's counter
    mask: Callable[[nn.Module, np.ndarray, np.ndarray], ContextManager[None]]  # (model, labels, mask)
    row_masks: Callable[[nn.Module, np.ndarray, np.ndarray], ContextManager[Callable[[Sequence[int]], None]]]
    prune: Callable[[nn.Module, np.ndarray, np.ndarray], nn.Module]  # a physically pruned copy
    unit: str  # what a pruned model's width counts, per layer
    widths: Callable[[nn.Module], list[int]]  # that width of every layer of a model (pruned or not)
    describe: Callable[[np.ndarray, pd.DataFrame, int], str]  # (labels, 01's table, n_experts): in one sentence
    recording: Callable[[BabelConfig, int], str]  # (cfg, layers): what one token is counted as

    def kept_share(self, pruned: nn.Module, model: nn.Module) -> float:
        """Share of the FFN (neurons or routed experts) a pruned copy keeps, over all layers."""
        return float(np.sum(self.widths(pruned))) / float(np.sum(self.widths(model)))

    def describe_pruned(self, pruned: nn.Module, model: nn.Module) -> str:
        """A pruned copy's widths in words: their range against the full width, and their mean."""
        widths, full = self.widths(pruned), max(self.widths(model))
        return f"{self.unit} from {min(widths)} to {max(widths)} of {full} (mean {np.mean(widths):.0f})"


def _split_labels(cfg: BabelConfig, model: nn.Module) -> dict:
    result = clustering.split_model(model, cfg.n_experts, method=cfg.split_method, matrix=cfg.cluster_matrix,
                                    iters=cfg.kmeans_iters, seed=cfg.seed, swap_rounds=cfg.kmeans_swap_rounds)
    return {"labels": result.labels.astype(np.int64), "split_layers": result.layers}


def _native_shape(model: nn.Module) -> tuple[int, int]:
    return len(native.routers(model)), native.n_native_experts(model)


def _native_labels(cfg: BabelConfig, model: nn.Module) -> dict:
    n_moe, n_experts = _native_shape(model)
    if cfg.n_experts != n_experts:
        raise ValueError(f"n_experts={cfg.n_experts}, but {cfg.model} ({model.config.model_type}) routes among "
                         f"{n_experts} experts per MoE layer: set n_experts: {n_experts} (a native model's experts "
                         "are its own).")
    labels = np.tile(np.arange(n_experts, dtype=np.int64), (n_moe, 1))
    return {"labels": labels, "split_layers": native.structure(model)}


def _native_record(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   count_mask: torch.Tensor, splits: Sequence[tuple[np.ndarray, int]], batch_size: int = 8,
                   desc: str = "record", block: int = 32, **_scoring) -> list[LanguageCounts]:
    # the router's own top-k: the dense recording's score, normalisation and selection do not apply
    counts = native.record_routes(model, input_ids, attention_mask, count_mask, batch_size, block, desc)
    return [counts for _ in splits]


def _native_counter(model: nn.Module, labels: np.ndarray, n_experts: int, start: int = 0, block: int = 32,
                    **_scoring) -> ExpertCounter:
    return native.RouterCounter(model, block=block, start=start)


def _split_widths(model: nn.Module) -> list[int]:
    return [layer_width(model, i) for i in range(n_layers(model))]


def _native_widths(model: nn.Module) -> list[int]:
    return [int(router.num_experts) for router in native.routers(model)]


def _describe_split(labels: np.ndarray, table: pd.DataFrame, n_experts: int) -> str:
    return clustering.describe_sizes(labels, n_experts)


def _split_recording(cfg: BabelConfig, n_layers_: int) -> str:
    return (f"each token activates {n_selected(n_layers_, cfg.n_experts, cfg.top_fraction, cfg.selection)} "
            f"(layer, expert) pairs ({cfg.selection}, top {cfg.top_fraction:.0%})")


def _native_recording(cfg: BabelConfig, n_layers_: int) -> str:
    return ("each token counts the experts its router puts in the top-k of each MoE layer (the model's own routing; "
            "score, normalize, selection and top_fraction do not apply)")


KINDS: dict[str, ExpertKind] = {
    "split": ExpertKind(
        "split", "a balanced cluster of the FFN's neurons (01's split of each dense layer)", regroups=True,
        skipped_methods=(), label_shape=lambda model: (n_layers(model), d_ff(model)), split=_split_labels,
        record=record_counts_many, counter=ExpertCounter, mask=apply.apply_mask, row_masks=apply.apply_row_masks,
        prune=surgery.physically_prune, unit="FFN widths", widths=_split_widths, describe=_describe_split,
        recording=_split_recording),
    "native": ExpertKind(
        "native", "one of the model's own routed experts (its router's top-k choose them per token)",
        regroups=False, skipped_methods=("dynamic",), label_shape=_native_shape, split=_native_labels,
        record=_native_record, counter=_native_counter, mask=lambda model, labels, mask: native.route_mask(model, mask),
        row_masks=lambda model, labels, masks: native.route_masks(model, masks),
        prune=lambda model, labels, mask: native.remove_experts(model, mask), unit="experts per MoE layer",
        widths=_native_widths, describe=lambda labels, table, n_experts: describe_native(table),
        recording=_native_recording),
}


def kind_of(model: nn.Module) -> ExpertKind:
    """The expert kind of a model: native for a mixture with its own router, else split."""
    return KINDS["native" if native.is_native(model) else "split"]


def check_kind(name: str) -> ExpertKind:
    """The table entry of a kind name, or an error naming the known kinds."""
    if name not in KINDS:
        raise ValueError(f"Unknown expert kind {name!r}; known kinds: {', '.join(KINDS)}.")
    return KINDS[name]


def kind_table(kind: ExpertKind, labels: np.ndarray) -> pd.DataFrame:
    """The one-row table 01 writes (results/expert_kind) so that notebooks without the model know the kind."""
    return pd.DataFrame([{"kind": kind.name, "meaning": kind.meaning, "layers": int(labels.shape[0]),
                          "experts": int(labels.max()) + 1}])


def describe_model(cfg: BabelConfig, model: nn.Module) -> str:
    """The model and its experts in one line (01's first output)."""
    if native.is_native(model):
        return f"{cfg.model} ({model.config.model_type}): a native mixture of experts"
    L, width = n_layers(model), d_ff(model)
    return (f"{cfg.model} ({model.config.model_type}): {L} layers, d_ff = {width} -> "
            f"{cfg.n_experts} experts of {width // cfg.n_experts} neurons per layer")


def describe_native(structure: pd.DataFrame) -> str:
    """A native model's structure in one sentence (what 01 prints instead of the split's sizes)."""
    shared = structure["shared_expert_width"]
    return (f"{len(structure)} MoE layers (decoder layers {structure['layer'].min()}-{structure['layer'].max()}), "
            f"{structure['experts'].iloc[0]} routed experts each, top-{structure['top_k'].iloc[0]} per token, "
            f"expert FFN width {structure['expert_width'].iloc[0]}; "
            + (f"an always-on shared expert of width {shared.iloc[0]} (neither counted nor pruned)."
               if (shared > 0).any() else "no shared expert."))


def max_view_difference(model: nn.Module, labels: np.ndarray, input_ids: torch.Tensor) -> float:
    """Largest |logit difference| between the model and its expert view with every expert kept (0 when exact)."""
    from ..models import moe

    if not native.is_native(model):
        return moe.max_logit_difference(model, labels, input_ids)
    ids = input_ids.to(model_device(model))
    with torch.inference_mode():
        plain = model(input_ids=ids).logits
        with native.route_mask(model, np.ones(labels.shape, dtype=bool)):
            viewed = model(input_ids=ids).logits
    return float((plain - viewed).abs().max())
