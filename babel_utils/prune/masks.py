"""Pruning experts by activation frequency (SPEC section 5, notebook 07).

Conventions: a mask is a bool array [L, E] with True = expert KEPT; a frequency array F [L, E] holds
one language's `count / n_tokens`; activation levels [L] are each layer's share of the selections.

Mask builders (every tie is broken by a stable sort on (frequency, layer, expert)):
- `threshold_mask`: prune every expert with f < threshold (SPEC: 0.05 = `cfg.high_freq_threshold`).
- `sorting_mask`: prune the lowest-frequency share `ratio`, globally (round(ratio * L * E) experts
  over all layers) or per layer (round(ratio * E) in every layer).
- `layerwise_mask`: the uniform per-layer total, round(ratio * E) * L, spread over the layers in
  inverse proportion to their activation levels (see `layerwise_counts` for the formula).
- `random_mask`: the per-layer counts of another mask, experts chosen uniformly at random.
Rounding is half-up (2.5 -> 3) after rounding away floating-point noise (0.1 * 2560 = 256.00000000000003).

Applying a mask: `apply_mask` zeroes the pruned experts' neurons in h (the input of down_proj) with
hooks; `physically_prune` returns a copy whose neurons of pruned experts (rows of the first matrix and
the gate, columns of the second) are gone (the same function, computed faster); `dynamic_topk` keeps the top-k experts per token.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models.adapters import config_of_text, down_projs, get_adapter, layer_width, mlps, n_layers, neuron_parts
from ..models.experts import ExpertSplit
from ..models.hooks import ffn_input_hooks
from ..models.topk import top_mask
from ..record.counting import expert_scores, real_device
from ..record.frequencies import layer_shares

if TYPE_CHECKING:
    from ..core.config import BabelConfig

log = logging.getLogger(__name__)

DENSE = "dense"  # the unpruned reference "method" (every expert kept, no hooks)
LAYER_MODES: tuple[str, ...] = ("global", "per_layer")
DEFAULT_THRESHOLD = 0.05  # SPEC 5: prune experts with f < 0.05 (cfg.high_freq_threshold)
DYNAMIC_DEFAULT_DROP = 0.25  # SPEC/config: dynamic_top_k = 0 means keep n_experts * (1 - 0.25)
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


def _check_mask(mask: np.ndarray) -> np.ndarray:
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
    """Prune every expert whose frequency is below `threshold` (SPEC 5: f < 0.05)."""
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
    mask = _check_mask(mask)
    return [random_mask(pruned_per_layer(mask), mask.shape[1], seed) for seed in seeds]


def pruned_per_layer(mask: np.ndarray) -> np.ndarray:
    """Number of pruned experts in every layer, [L]."""
    return (~_check_mask(mask)).sum(axis=1)


def pruned_share(mask: np.ndarray) -> float:
    """Share of all experts that a mask prunes."""
    return float((~_check_mask(mask)).mean())


def mask_overlap(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Jaccard index of the pruned sets of two masks (1.0 when neither prunes anything)."""
    a, b = ~_check_mask(mask_a), ~_check_mask(mask_b)
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


def masks_from_results(results: Mapping[str, pd.DataFrame | np.ndarray]) -> list[MaskSpec]:
    """The mask specs stored by `masks_to_results`."""
    table, masks = results["mask_specs"], results["masks"]

    def _int(value: object) -> int | None:
        return None if pd.isna(value) else int(value)
    return [MaskSpec(str(r.language), str(r.method), float(r.ratio), _int(r.seed), masks[i].astype(bool),
                     _int(r.top_k)) for i, r in enumerate(table.itertuples(index=False))]


# --------------------------------------------------------------------------- applying masks


def _check_labels(model: nn.Module, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != n_layers(model):
        raise ValueError(f"labels must be [n_layers={n_layers(model)}, d_ff]; got shape {labels.shape}.")
    if mask is not None:
        mask = _check_mask(mask)
        if mask.shape[0] != labels.shape[0] or mask.shape[1] <= labels.max():
            raise ValueError(f"Mask of shape {mask.shape} does not fit labels with {labels.shape[0]} layers "
                             f"and {ExpertSplit(labels).n_experts} experts.")
    return labels


def neuron_keep(mask: np.ndarray, labels: np.ndarray, layer: int) -> np.ndarray:
    """Bool [d_ff] of one layer: is each neuron's expert kept."""
    return np.asarray(mask[layer])[np.asarray(labels[layer])]


@contextmanager
def apply_mask(model: nn.Module, labels: np.ndarray, mask: np.ndarray) -> Iterator[None]:
    """Zero the neurons of pruned experts in h (input of down_proj) of every layer; hooks removed on exit."""
    labels = _check_labels(model, labels, mask)
    downs = down_projs(model)
    keep = [torch.as_tensor(neuron_keep(mask, labels, i)).to(device=real_device(d.weight.device),
                                                              dtype=d.weight.dtype)
            for i, d in enumerate(downs)]

    def fn(layer: int, h: torch.Tensor) -> torch.Tensor:
        if keep[layer].device != h.device or keep[layer].dtype != h.dtype:  # offloaded layers run elsewhere
            keep[layer] = keep[layer].to(device=h.device, dtype=h.dtype)
        return h * keep[layer]
    with ffn_input_hooks(model, fn):
        yield


@contextmanager
def dynamic_topk(model: nn.Module, labels: np.ndarray, k: int, score: str = "abs") -> Iterator[None]:
    """Per token and layer keep only the top-k experts by score (counting.expert_scores); zero the rest of h."""
    split = ExpertSplit(_check_labels(model, labels))
    labels, n_experts = split.labels, split.n_experts
    if not 1 <= k <= n_experts:
        raise ValueError(f"top-k {k} must lie in 1..{n_experts} (the number of experts).")
    downs = down_projs(model)
    perms = [torch.as_tensor(split.permutation(i)).to(real_device(d.weight.device)) for i, d in enumerate(downs)]
    neuron_expert = [torch.as_tensor(labels[i], dtype=torch.long).to(real_device(d.weight.device))
                     for i, d in enumerate(downs)]

    def fn(layer: int, h: torch.Tensor) -> torch.Tensor:
        if perms[layer].device != h.device:  # offloaded layers run elsewhere
            perms[layer], neuron_expert[layer] = perms[layer].to(h.device), neuron_expert[layer].to(h.device)
        scores = expert_scores(h, neuron_expert[layer], n_experts, score, perms[layer])  # [..., E]
        kept = top_mask(scores, k)  # ties: the lower expert id, on every machine
        return h * kept.index_select(-1, neuron_expert[layer]).to(h.dtype)
    with ffn_input_hooks(model, fn):
        yield


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
    labels = _check_labels(model, labels, mask)
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
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.config.save_pretrained(tmp)
        save_model(model, str(tmp / PRUNED_WEIGHTS))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def paired_median_ms(fns: Mapping[str, Callable[[], object]], device: torch.device | str = "cpu",
                     warmup: int = 1, repeats: int = 5) -> dict[str, float]:
    """Median wall time (ms) of each callable after warm-up; repeats interleaved (A B A B ...) so that load
    changes on a shared machine hit every contender alike; the GPU is synchronised around each call."""
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


# --------------------------------------------------------------------------- comparing languages' masks


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


# --------------------------------------------------------------------------- several masks in one batch


@contextmanager
def apply_row_masks(model: nn.Module, labels: np.ndarray, masks: np.ndarray) -> Iterator[Callable[[Sequence[int]], None]]:
    """Several masks [K, L, E] in one batch: yields `select(indices)`, to be called before every forward,
    saying which mask each row of the coming batch uses (row i uses masks[indices[i]]). Each row computes
    exactly what `apply_mask` with its own mask computes (rows do not interact); hooks removed on exit."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or len(masks) == 0:
        raise ValueError(f"apply_row_masks needs masks [K, layers, experts]; got shape {masks.shape}.")
    labels = _check_labels(model, labels, masks[0])
    downs = down_projs(model)
    keep = [torch.as_tensor(np.stack([neuron_keep(m, labels, i) for m in masks])).to(device=d.weight.device,
                                                                                     dtype=d.weight.dtype)
            for i, d in enumerate(downs)]
    current: list[torch.Tensor | None] = [None] * len(keep)

    def select(indices: Sequence[int]) -> None:
        idx = [int(i) for i in indices]
        if min(idx, default=0) < 0 or max(idx, default=0) >= len(masks):
            raise ValueError(f"Mask indices {idx} outside 0..{len(masks) - 1}.")
        for layer, k in enumerate(keep):
            current[layer] = k.index_select(0, torch.as_tensor(idx, device=k.device))

    def fn(layer: int, h: torch.Tensor) -> torch.Tensor:
        k = current[layer]
        if k is None or k.shape[0] != h.shape[0]:
            raise RuntimeError(f"apply_row_masks: select() named {None if k is None else k.shape[0]} rows for a "
                               f"batch of {h.shape[0]}; call select(indices) before every forward.")
        k = k.view(k.shape[0], *([1] * (h.dim() - 2)), k.shape[1])
        return h * (k if k.dtype == h.dtype else k.to(h.dtype))
    with ffn_input_hooks(model, fn):
        yield select


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
