"""Pruning experts by activation frequency (docs/method.md section 5, notebook 07).

Conventions: a mask is a bool array [L, E] with True = expert KEPT; a frequency array F [L, E] holds
one language's `count / n_tokens`; activation levels [L] are each layer's share of the selections.

Mask builders (every tie is broken by a stable sort on (frequency, layer, expert)):
- `threshold_mask`: prune every expert with f < threshold (docs/method.md section 5: 0.05 = `cfg.high_freq_threshold`).
- `sorting_mask`: prune the lowest-frequency share `ratio`, globally (round(ratio * L * E) experts
  over all layers) or per layer (round(ratio * E) in every layer).
- `layerwise_mask`: the uniform per-layer total, round(ratio * E) * L, spread over the layers in
  inverse proportion to their activation levels (see `layerwise_counts` for the formula).
- `random_mask`: the per-layer counts of another mask, experts chosen uniformly at random.
Rounding is half-up (2.5 -> 3) after rounding away floating-point noise (0.1 * 2560 = 256.00000000000003).

Masks are applied by prune/apply.py (hooks) and prune/surgery.py (copies without the pruned neurons).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd

from ..record.frequencies import layer_shares

if TYPE_CHECKING:
    from ..core.config import BabelConfig

log = logging.getLogger(__name__)

DENSE = "dense"  # the unpruned reference "method" (every expert kept, no hooks)
LAYER_MODES: tuple[str, ...] = ("global", "per_layer")
DEFAULT_THRESHOLD = 0.05  # docs/method.md section 5: prune experts with f < 0.05 (cfg.high_freq_threshold)
DYNAMIC_DEFAULT_DROP = 0.25  # docs/method.md section 5.1: dynamic_top_k = 0 keeps n_experts * (1 - 0.25)
MIN_LEVEL = 1e-12  # activation levels are floored here before inversion (a silent layer loses most)


# --------------------------------------------------------------------------- validation


def check_ratio(ratio: float) -> float:
    """The ratio as a float, or a ValueError naming it and the allowed range [0, 1)."""
    if not (isinstance(ratio, (int, float, np.floating)) and 0.0 <= float(ratio) < 1.0):
        raise ValueError(f"Pruning ratio {ratio!r} is outside [0, 1): give the share of experts to prune, "
                         "e.g. 0.25 (1.0 would prune every expert).")
    return float(ratio)


def check_mode(mode: str) -> str:
    """The layer mode, or a ValueError naming the known modes."""
    if mode not in LAYER_MODES:
        raise ValueError(f"Unknown prune_layer_mode {mode!r}; known modes: {', '.join(LAYER_MODES)}.")
    return mode


def _check_frequencies(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.size == 0:
        raise ValueError(f"Frequencies must be a non-empty array [layers, experts]; got shape {f.shape}.")
    if not np.isfinite(f).all():
        raise ValueError("Frequencies contain NaN or infinite values.")
    return f


def check_mask(mask: np.ndarray) -> np.ndarray:
    """A mask as a bool array [layers, experts] (True = kept), or an error saying what it is instead."""
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"A mask must be a bool array [layers, experts] (True = kept); got "
                         f"{mask.dtype} of shape {mask.shape}.")
    return mask


def language_frequencies(F_by_lang: Mapping[str, np.ndarray], lang: str) -> np.ndarray:
    """The [L, E] frequencies of a target language, or an error naming the languages that have some."""
    if lang not in F_by_lang:
        raise ValueError(f"Language {lang!r} has no activation frequencies (languages with frequencies: "
                         f"{', '.join(F_by_lang) or 'none'}); record it in notebook 02 before pruning for it.")
    return _check_frequencies(F_by_lang[lang])


def n_to_prune(ratio: float, n: int) -> int:
    """round(ratio * n), half up, after rounding away floating-point noise."""
    return int(math.floor(round(check_ratio(ratio) * n, 9) + 0.5))


# --------------------------------------------------------------------------- masks


def _prune_lowest(f: np.ndarray, n: int) -> np.ndarray:
    """Keep-mask of a 1-D or flattened frequency vector with its n lowest entries pruned (stable)."""
    order = np.argsort(f, kind="stable")  # ties: lower flat index (layer, expert) first
    keep = np.ones(f.shape, dtype=bool)
    keep[order[:n]] = False
    return keep


def threshold_mask(f: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Prune every expert whose frequency is below `threshold` (docs/method.md section 5: f < 0.05)."""
    return _check_frequencies(f) >= threshold


def sorting_mask(f: np.ndarray, ratio: float, mode: str = "global") -> np.ndarray:
    """Prune the lowest-frequency share `ratio`: round(ratio*L*E) over all layers, or round(ratio*E) per layer."""
    f = _check_frequencies(f)
    n_layers_, n_experts = f.shape
    if check_mode(mode) == "global":
        return _prune_lowest(f.ravel(), n_to_prune(ratio, f.size)).reshape(f.shape)
    n = n_to_prune(ratio, n_experts)
    return np.stack([_prune_lowest(f[layer], n) for layer in range(n_layers_)])


def per_layer_mask(f: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Prune the counts[l] lowest-frequency experts of each layer l."""
    f = _check_frequencies(f)
    return np.stack([_prune_lowest(f[layer], int(n)) for layer, n in enumerate(counts)])


def _water_fill(total: float, weights: np.ndarray, cap: int) -> np.ndarray:
    """Real quotas proportional to `weights`, summing to `total`, none above `cap` (excess re-spread)."""
    quotas = np.zeros(len(weights))
    free = np.ones(len(weights), dtype=bool)
    while free.any():
        left = total - quotas[~free].sum()
        share = weights[free] / weights[free].sum() * left
        over = share > cap
        if not over.any():
            quotas[free] = share
            break
        idx = np.flatnonzero(free)[over]
        quotas[idx] = cap
        free[idx] = False
    return quotas


def _largest_remainder(quotas: np.ndarray, total: int, cap: int) -> np.ndarray:
    """Integers summing to `total`: floors, then +1 for the largest fractional parts (ties: lower layer)."""
    counts = np.floor(quotas + 1e-9).astype(int)
    remainder = quotas - counts
    order = np.lexsort((np.arange(len(quotas)), -remainder))
    for idx in order:
        if counts.sum() >= total:
            break
        if counts[idx] < cap:
            counts[idx] += 1
    return counts


def activation_levels(f: np.ndarray) -> np.ndarray:
    """Each layer's share of a language's selections, [L] (from its frequencies: row sums / total)."""
    return layer_shares(_check_frequencies(f))


def layerwise_counts(levels: np.ndarray, ratio: float, n_experts: int) -> np.ndarray:
    """Experts to prune per layer: total round(ratio*E)*L, n_l proportional to 1 / level_l.

    Formula: with activation levels a_l (a layer's share of the selections, floored at MIN_LEVEL),
    quota_l = T * (1/a_l) / sum_k (1/a_k), T = round(ratio * E) * L: a layer twice as active as
    another loses half as many experts, and the total equals uniform per-layer sorting. Quotas are
    capped at E - 1 (a layer keeps at least one expert; the excess is re-spread over the other
    layers in the same proportions) and rounded to integers by largest remainder, so the total is exact.
    Only when T exceeds L * (E - 1) (ratio so close to 1 that uniform sorting empties every layer)
    is the cap raised to E.
    """
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or not np.isfinite(levels).all() or (levels < 0).any() or levels.sum() <= 0:
        raise ValueError(f"Activation levels must be finite, non-negative, one per layer and not all zero; "
                         f"got {levels}.")
    n_layers_ = len(levels)
    total = n_to_prune(ratio, n_experts) * n_layers_
    cap = n_experts - 1 if total <= n_layers_ * (n_experts - 1) else n_experts
    if cap == n_experts:
        log.warning("ratio %.4f prunes every expert of every layer; layer-wise rates cannot differ.", ratio)
    weights = 1.0 / np.maximum(levels / levels.sum(), MIN_LEVEL)
    counts = _largest_remainder(_water_fill(total, weights, cap), total, cap)
    assert counts.sum() == total and counts.max(initial=0) <= cap
    return counts


def layerwise_mask(f: np.ndarray, levels: np.ndarray, ratio: float) -> np.ndarray:
    """Prune as many experts as uniform per-layer sorting, each layer in inverse proportion to its activity."""
    f = _check_frequencies(f)
    if len(np.asarray(levels)) != f.shape[0]:
        raise ValueError(f"{len(np.asarray(levels))} activation levels for {f.shape[0]} layers.")
    return per_layer_mask(f, layerwise_counts(levels, ratio, f.shape[1]))


def random_mask(per_layer_counts: Sequence[int], n_experts: int, seed: int) -> np.ndarray:
    """Prune per_layer_counts[l] experts of each layer l, chosen uniformly at random (numpy seed)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((len(per_layer_counts), n_experts), dtype=bool)
    for layer, n in enumerate(per_layer_counts):
        if not 0 <= int(n) <= n_experts:
            raise ValueError(f"Cannot prune {n} of {n_experts} experts in layer {layer}.")
        mask[layer, rng.choice(n_experts, size=int(n), replace=False)] = False
    return mask


def random_masks_like(mask: np.ndarray, seeds: Sequence[int]) -> list[np.ndarray]:
    """Random masks with the same per-layer pruned counts as `mask`, one per seed."""
    mask = check_mask(mask)
    return [random_mask(pruned_per_layer(mask), mask.shape[1], seed) for seed in seeds]


def pruned_per_layer(mask: np.ndarray) -> np.ndarray:
    """Number of pruned experts in every layer, [L]."""
    return (~check_mask(mask)).sum(axis=1)


def pruned_share(mask: np.ndarray) -> float:
    """Share of all experts that a mask prunes."""
    return float((~check_mask(mask)).mean())


def mask_overlap(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Jaccard index of the pruned sets of two masks (1.0 when neither prunes anything)."""
    a, b = ~check_mask(mask_a), ~check_mask(mask_b)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


# --------------------------------------------------------------------------- mask specs


@dataclass
class MaskSpec:
    """One pruning setting: target language, method, ratio (share pruned), seed (random only), mask [L, E]."""

    language: str
    method: str
    ratio: float
    seed: int | None
    mask: np.ndarray
    top_k: int | None = None  # experts kept per token and layer, method "dynamic" only

    @property
    def name(self) -> str:
        """A short unique label, e.g. 'sorting@0.25' or 'random@0.25#1'."""
        if self.method == "dynamic":
            return f"dynamic@top{self.top_k}"
        seed = "" if self.seed is None else f"#{self.seed}"
        return f"{self.method}@{self.ratio:.4g}{seed}"


def dense_spec(language: str, n_layers_: int, n_experts: int) -> MaskSpec:
    """The unpruned reference (method 'dense', every expert kept)."""
    return MaskSpec(language, DENSE, 0.0, None, np.ones((n_layers_, n_experts), dtype=bool))


def resolve_top_k(cfg: BabelConfig, n_experts: int) -> int:
    """cfg.dynamic_top_k, or when 0 the default n_experts * (1 - DYNAMIC_DEFAULT_DROP)."""
    k = cfg.dynamic_top_k or n_to_prune(1.0 - DYNAMIC_DEFAULT_DROP, n_experts)
    if not 1 <= k <= n_experts:
        raise ValueError(f"dynamic_top_k={k} must lie in 1..{n_experts} (the number of experts).")
    return k


def dynamic_spec(language: str, n_layers_: int, n_experts: int, top_k: int) -> MaskSpec:
    """Dynamic sparse activation: keep the top_k experts per token and layer (ratio = 1 - top_k / E)."""
    return MaskSpec(language, "dynamic", 1.0 - top_k / n_experts, None,
                    np.ones((n_layers_, n_experts), dtype=bool), top_k=top_k)


def mask_table(masks: Mapping[str, MaskSpec | np.ndarray] | Sequence[MaskSpec]) -> pd.DataFrame:
    """Tidy table of pruned experts per layer: name, language, method, ratio, seed, layer, pruned, n_experts.

    Takes a list of MaskSpec, or a dict name -> MaskSpec or bare mask (a bare mask's method is its name,
    its ratio the share it prunes, its language and seed empty).
    """
    items = masks.items() if isinstance(masks, Mapping) else [(s.name, s) for s in masks]
    rows = []
    for name, item in items:
        spec = item if isinstance(item, MaskSpec) else MaskSpec("", name, pruned_share(item), None, item)
        for layer, pruned in enumerate(pruned_per_layer(spec.mask)):
            rows.append({"name": name, "language": spec.language, "method": spec.method,
                         "ratio": float(spec.ratio), "seed": spec.seed, "layer": layer, "pruned": int(pruned),
                         "n_experts": spec.mask.shape[1]})
    table = pd.DataFrame(rows)
    return table.astype({"seed": "Int64"}) if len(table) else table


def masks_to_results(specs: Sequence[MaskSpec]) -> dict[str, pd.DataFrame | np.ndarray]:
    """Storable form of mask specs (for cache.cached): a table of specs and one bool array [n, L, E]."""
    if not specs:
        raise ValueError("No mask spec to store.")
    table = pd.DataFrame([{"language": s.language, "method": s.method, "ratio": float(s.ratio),
                           "seed": s.seed, "top_k": s.top_k} for s in specs])
    table = table.astype({"seed": "Int64", "top_k": "Int64"})
    return {"mask_specs": table, "masks": np.stack([np.asarray(s.mask, dtype=bool) for s in specs])}


def spec_table(specs: Sequence[MaskSpec]) -> pd.DataFrame:
    """One row per spec: name, language, method, ratio, seed, top_k."""
    table = masks_to_results(specs)["mask_specs"]
    table.insert(0, "name", [s.name for s in specs])
    return table


def masks_from_results(results: Mapping[str, pd.DataFrame | np.ndarray]) -> list[MaskSpec]:
    """The mask specs stored by `masks_to_results`."""
    table, masks = results["mask_specs"], results["masks"]

    def _int(value: object) -> int | None:
        return None if pd.isna(value) else int(value)
    return [MaskSpec(str(r.language), str(r.method), float(r.ratio), _int(r.seed), masks[i].astype(bool),
                     _int(r.top_k)) for i, r in enumerate(table.itertuples(index=False))]


# --------------------------------------------------------------------------- comparing languages' masks


def method_shares(table: pd.DataFrame, method: str) -> pd.Series:
    """Per language: the mean share of a layer's experts that a method's masks prune (from `mask_table`)."""
    part = table[table["method"] == method]
    return (part["pruned"] / part["n_experts"]).groupby(part["language"], sort=False).mean()


def overlap_tables(specs: Sequence[MaskSpec], languages: Sequence[str], method: str,
                   ratio: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Between the languages' masks of one method at one ratio: the Jaccard overlap of their pruned sets, and
    (row A, column B) how many experts A keeps that B prunes."""
    by_lang = {s.language: s.mask for s in specs if s.method == method and s.ratio == ratio}
    missing = [lang for lang in languages if lang not in by_lang]
    if missing:
        raise ValueError(f"No {method} mask at ratio {ratio} for {missing}; rerun 07_pruning with them.")
    jaccard = pd.DataFrame([[mask_overlap(by_lang[a], by_lang[b]) for b in languages] for a in languages],
                           index=pd.Index(languages, name="language A"), columns=pd.Index(languages, name="language B"))
    kept_dropped = pd.DataFrame([[int((by_lang[a] & ~by_lang[b]).sum()) for b in languages] for a in languages],
                                index=pd.Index(languages, name="language A (keeps)"),
                                columns=pd.Index(languages, name="language B (prunes)"))
    return jaccard, kept_dropped


def overlap_long(jaccard: pd.DataFrame, kept_dropped: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """`overlap_tables` as one long table: language A, language B, jaccard, kept_by_a_pruned_by_b, ratio."""
    kept = (kept_dropped.stack().rename("kept_by_a_pruned_by_b").reset_index()
            .rename(columns={"language A (keeps)": "language A", "language B (prunes)": "language B"}))
    return jaccard.stack().rename("jaccard").reset_index().merge(kept).assign(ratio=ratio)


def most_different_pair(jaccard: pd.DataFrame) -> tuple[str, str]:
    """The two languages whose pruned sets overlap least (first such pair in table order)."""
    langs = list(jaccard.index)
    if len(langs) < 2:
        return langs[0], langs[0]
    pairs = [(jaccard.iloc[i, j], i, j) for i in range(len(langs)) for j in range(i + 1, len(langs))]
    _, i, j = min(pairs)
    return langs[i], langs[j]


def describe_overlap(jaccard: pd.DataFrame, kept_dropped: pd.DataFrame, n_total: int) -> str:
    """A sentence, from the numbers, on how much languages' pruned sets overlap and which pairs differ most."""
    from ..core.languages import language_name as name

    langs = list(jaccard.index)
    if len(langs) < 2:
        return "Only one language: nothing to compare."
    pairs = [(float(jaccard.iloc[i, j]), langs[i], langs[j]) for i in range(len(langs))
             for j in range(i + 1, len(langs))]
    lo, hi = min(pairs), max(pairs)
    worst = kept_dropped.stack().idxmax()
    return (f"Pruned sets overlap with a Jaccard index from {lo[0]:.2f} ({name(lo[1])}-{name(lo[2])}) to "
            f"{hi[0]:.2f} ({name(hi[1])}-{name(hi[2])}), mean {np.mean([p[0] for p in pairs]):.2f}. "
            f"Pruning for {name(worst[1])} would take most from {name(worst[0])}: "
            f"{int(kept_dropped.loc[worst])} experts ({kept_dropped.loc[worst] / n_total:.1%} of all) that "
            f"{name(worst[0])} keeps.")


def nearest_ratio(ratios: Sequence[float], ratio: float) -> float:
    """The ratio of `ratios` nearest to `ratio` (masks exist only at the configured ratios)."""
    return min(ratios, key=lambda r: abs(r - ratio))


def find_spec(specs: Sequence[MaskSpec], lang: str, method: str, ratio: float, seed: int | None = None,
              default_seed: int = 0) -> MaskSpec:
    """The mask spec of a target language, method and ratio (and seed, for random masks)."""
    seed = default_seed if method == "random" and seed is None else seed
    for spec in specs:
        if (spec.language, spec.method, spec.seed) == (lang, method, seed) and spec.ratio == ratio:
            return spec
    raise ValueError(f"No {method} mask at ratio {ratio} (seed {seed}) for {lang!r}; rerun 07_pruning "
                     "with this language, method and ratio.")
