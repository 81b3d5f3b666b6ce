"""The pruning methods, one table entry each: how a method builds the masks of a target language, how its
masks are applied, how they are checked, compared and drawn (notebooks 07 and 08).

A new method is one `Method` in `METHODS`: `build_masks` makes its masks, stages evaluate them (in shared
batches when `hooks` is None), the tables and verdicts of `evaluate.comparisons` and the figures of `figures.pruning` take it up.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import nn

from .apply import apply_mask, dynamic_topk
from .masks import (
    DENSE,
    MaskSpec,
    check_mode,
    check_ratio,
    dynamic_spec,
    language_frequencies,
    layerwise_mask,
    n_to_prune,
    pruned_per_layer,
    pruned_share,
    random_masks_like,
    resolve_top_k,
    sorting_mask,
    threshold_mask,
)

if TYPE_CHECKING:
    from ..core.config import BabelConfig

log = logging.getLogger(__name__)

Builder = Callable[[str, np.ndarray, np.ndarray, "BabelConfig"], list[MaskSpec]]
Hooks = Callable[[nn.Module, np.ndarray, MaskSpec, str], ContextManager[None]]
Check = Callable[[MaskSpec, Sequence[MaskSpec], np.ndarray, "BabelConfig"], None]


@dataclass(frozen=True)
class Method:
    """One pruning method."""

    name: str
    build: Builder  # (target language, frequencies [L, E], activation levels [L], config) -> its masks
    hooks: Hooks | None = None  # how a spec runs when not a static mask (None: row masks in shared batches)
    guided: bool = False  # frequency-guided, with a random baseline of the same size to beat
    check: Check | None = None  # asserts what its masks must satisfy (notebook 07)
    colour: str = "C0"
    plot: str = "line"  # in figures over the pruning ratio: "line", "band" (the seeds' range) or "point"
    marker: str = "o"
    legend: str = ""
    ratio_in_label: bool = True  # False: tables name its masks by the method alone (its share differs by language)


def _threshold(lang: str, f: np.ndarray, levels: np.ndarray, cfg: BabelConfig) -> list[MaskSpec]:
    mask = threshold_mask(f, cfg.high_freq_threshold)
    return [MaskSpec(lang, "threshold", pruned_share(mask), None, mask)]


def _sorting(lang: str, f: np.ndarray, levels: np.ndarray, cfg: BabelConfig) -> list[MaskSpec]:
    return [MaskSpec(lang, "sorting", float(r), None, sorting_mask(f, r, cfg.prune_layer_mode))
            for r in cfg.prune_ratios]


def _layerwise(lang: str, f: np.ndarray, levels: np.ndarray, cfg: BabelConfig) -> list[MaskSpec]:
    return [MaskSpec(lang, "layerwise", float(r), None, layerwise_mask(f, levels, r)) for r in cfg.prune_ratios]


def _random(lang: str, f: np.ndarray, levels: np.ndarray, cfg: BabelConfig) -> list[MaskSpec]:
    """Per ratio and seed: random experts, as many per layer as the sorting mask of that ratio prunes."""
    specs = []
    for ratio in cfg.prune_ratios:
        reference = sorting_mask(f, ratio, cfg.prune_layer_mode)
        specs += [MaskSpec(lang, "random", float(ratio), int(seed), mask)
                  for seed, mask in zip(cfg.random_seeds, random_masks_like(reference, cfg.random_seeds))]
    return specs


def _dynamic(lang: str, f: np.ndarray, levels: np.ndarray, cfg: BabelConfig) -> list[MaskSpec]:
    return [dynamic_spec(lang, *f.shape, resolve_top_k(cfg, f.shape[1]))]


def _dynamic_hooks(model: nn.Module, labels: np.ndarray, spec: MaskSpec, score: str) -> ContextManager[None]:
    return dynamic_topk(model, labels, int(spec.top_k), score)


def _check_threshold(spec: MaskSpec, own: Sequence[MaskSpec], f: np.ndarray, cfg: BabelConfig) -> None:
    assert np.array_equal(spec.mask, f >= cfg.high_freq_threshold), f"{spec.name}: not the threshold rule"


def _check_sorting(spec: MaskSpec, own: Sequence[MaskSpec], f: np.ndarray, cfg: BabelConfig) -> None:
    n_layers, n_experts = f.shape
    want = (n_to_prune(spec.ratio, n_layers * n_experts) if cfg.prune_layer_mode == "global"
            else n_to_prune(spec.ratio, n_experts) * n_layers)
    assert pruned_per_layer(spec.mask).sum() == want, f"{spec.name}: prunes {pruned_per_layer(spec.mask).sum()}"


def _check_layerwise(spec: MaskSpec, own: Sequence[MaskSpec], f: np.ndarray, cfg: BabelConfig) -> None:
    want = n_to_prune(spec.ratio, f.shape[1]) * f.shape[0]
    assert pruned_per_layer(spec.mask).sum() == want, f"{spec.name}: prunes {pruned_per_layer(spec.mask).sum()}"


def _check_random(spec: MaskSpec, own: Sequence[MaskSpec], f: np.ndarray, cfg: BabelConfig) -> None:
    ref = next(s for s in own if s.method == "sorting" and s.ratio == spec.ratio)
    assert np.array_equal(pruned_per_layer(spec.mask), pruned_per_layer(ref.mask)), \
        f"{spec.name}: per-layer counts differ from {ref.name}'s"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("threshold", _threshold, check=_check_threshold, colour="C3", plot="point", marker="D",
           legend="threshold (f below threshold)", ratio_in_label=False),
    Method("sorting", _sorting, guided=True, check=_check_sorting, colour="C0", legend="frequency sorting"),
    Method("layerwise", _layerwise, guided=True, check=_check_layerwise, colour="C2",
           legend="frequency layerwise"),
    Method("random", _random, check=_check_random, colour="0.45", plot="band", marker="s",
           legend="random (mean; band: seeds' range)"),
    Method("dynamic", _dynamic, hooks=_dynamic_hooks, colour="C4", plot="point", marker="^",
           legend="dynamic (per-token top-k)"),
)}
DENSE_COLOUR = "black"  # the unpruned model in figures
BASELINE = "random"  # what frequency-guided methods are compared with: the same per-layer counts, random experts


def check_method(name: str) -> Method:
    """The table entry of a method name, or an error naming the known methods."""
    if name not in METHODS:
        raise ValueError(f"Unknown pruning method {name!r}; known methods: {', '.join(METHODS)}.")
    return METHODS[name]


def guided_methods() -> list[str]:
    """The frequency-guided methods, which have a random baseline of the same size."""
    return [name for name, m in METHODS.items() if m.guided]


def colour(method: str) -> str:
    """A method's colour in every figure (the unpruned model's too)."""
    return DENSE_COLOUR if method == DENSE else check_method(method).colour


def hooks(model: nn.Module, labels: np.ndarray, spec: MaskSpec, score: str = "abs") -> ContextManager[None]:
    """The hooks that realise one spec on its own: none (unpruned), the method's own, or its static mask."""
    if spec.method == DENSE:
        return nullcontext()
    own = check_method(spec.method).hooks
    return own(model, labels, spec, score) if own else apply_mask(model, labels, spec.mask)


def batches_with_others(spec: MaskSpec) -> bool:
    """Whether a spec is a static mask that can share a batch with other masks (each row its own mask)."""
    return spec.method == DENSE or check_method(spec.method).hooks is None


def build_language_masks(lang: str, f: np.ndarray, levels: np.ndarray, cfg: BabelConfig,
                         methods: Sequence[str] | None = None) -> list[MaskSpec]:
    """The masks of one target language, method by method in table order (default: every method)."""
    names = list(METHODS) if methods is None else list(methods)
    return [spec for name in names for spec in check_method(name).build(lang, f, levels, cfg)]


def build_masks(F_by_lang: Mapping[str, np.ndarray], levels_by_lang: Mapping[str, np.ndarray],
                cfg: BabelConfig, languages: Sequence[str] | None = None,
                methods: Sequence[str] | None = None) -> list[MaskSpec]:
    """Masks of every target language (default cfg.languages) and method (default all of METHODS).

    threshold: f < cfg.high_freq_threshold, ratio = the share it actually prunes. sorting and layerwise:
    each of cfg.prune_ratios (sorting in cfg.prune_layer_mode). random: for each ratio and each of
    cfg.random_seeds, the sorting mask's per-layer counts. dynamic: one spec (top_k from `resolve_top_k`).
    """
    for ratio in cfg.prune_ratios:
        check_ratio(ratio)
    check_mode(cfg.prune_layer_mode)
    specs: list[MaskSpec] = []
    for lang in cfg.languages if languages is None else languages:
        f = language_frequencies(F_by_lang, lang)
        if lang not in levels_by_lang:
            raise ValueError(f"Language {lang!r} has no activation levels (languages with levels: "
                             f"{', '.join(levels_by_lang) or 'none'}).")
        specs += build_language_masks(lang, f, np.asarray(levels_by_lang[lang]), cfg, methods)
    log.info("Built %d masks for %d language(s)", len(specs), len({s.language for s in specs}))
    return specs


def static_mask_summary(table: pd.DataFrame, language: str, n_total: int) -> pd.DataFrame:
    """A language's masks of the methods with a fixed mask (not those applied by their own hooks, as dynamic
    top-k): experts pruned in all, fewest and most in a layer, and the share of all `n_total` experts (from
    `mask_table`)."""
    fixed = [name for name, method in METHODS.items() if method.hooks is None]
    part = table[(table["language"] == language) & table["method"].isin(fixed)]
    summary = (part.groupby(["name", "method", "ratio", "seed"], dropna=False, sort=False)["pruned"]
               .agg(pruned="sum", fewest_in_a_layer="min", most_in_a_layer="max").reset_index())
    return summary.assign(share_pruned=(summary["pruned"] / n_total).round(4), ratio=summary["ratio"].round(4))


def describe_specs(specs: Sequence[MaskSpec], n_languages: int, top_k: int, n_experts: int) -> str:
    """How many masks there are, and what the dynamic spec keeps if there is one."""
    text = f"{len(specs)} mask specs ({len(specs) // n_languages} per language)"
    if not any(s.method == "dynamic" for s in specs):
        return text + "; no dynamic sparse activation (a native router already chooses its top-k per token)"
    return (text + f"; dynamic sparse activation keeps the top {top_k} of {n_experts} experts per token and layer "
            f"({1 - top_k / n_experts:.0%} of them off for each token)")


def check_masks(specs: Sequence[MaskSpec], F_by_lang: Mapping[str, np.ndarray], cfg: BabelConfig) -> int:
    """Run every method's check on its masks (AssertionError naming the mask otherwise); how many were checked."""
    checked = 0
    for lang in dict.fromkeys(s.language for s in specs):
        own = [s for s in specs if s.language == lang]
        for spec in own:
            check = check_method(spec.method).check
            if check is not None:
                check(spec, own, np.asarray(F_by_lang[lang]), cfg)
                checked += 1
    return checked
