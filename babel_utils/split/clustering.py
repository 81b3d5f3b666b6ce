"""Splitting each FFN into experts (docs/method.md section 2): which rows are clustered, by which method, per layer.

The balanced K-Means itself is `split/kmeans.py` (exact arithmetic, so the labels are the same on every
machine); this module applies it, or a baseline (`random`, `contiguous`), to every layer of a model,
and races it against `k-means-constrained`, the peers' tool.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.progress import tqdm
from ..models.adapters import ffn_weights, n_layers
from .kmeans import MAX_BITS, balanced_kmeans, balanced_kmeans_batch, check_divisible, exact_bits, quantize_rows

log = logging.getLogger(__name__)

METHODS = ("kmeans", "random", "contiguous")
MATRICES = ("up", "gate", "gate+up")


@dataclass
class SplitResult:
    """Expert labels of every layer and the per-layer table of how they were found."""

    labels: np.ndarray  # int64 [n_layers, d_ff]
    layers: pd.DataFrame  # layer, n_iter, converged, objective, objective_random, seconds, ...
    method: str
    matrix: str
    n_experts: int


def objective(x: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> float:
    """Mean cosine of each row to its cluster's normalised centroid (rows quantized as the K-Means sees them)."""
    m = check_divisible(x.shape[0], n_clusters)
    bits = exact_bits(m)
    q, _ = quantize_rows(x, bits)
    labels = torch.as_tensor(labels, device=q.device).long()
    sums = torch.zeros(n_clusters, q.shape[1], dtype=q.dtype, device=q.device).index_add_(0, labels, q)
    return float(sums.norm(dim=1).sum().item() / (q.shape[0] * 2.0 ** bits))


def random_split(n_rows: int, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """A random balanced partition: labels [n_rows] with n_rows / n_clusters rows per cluster."""
    m = check_divisible(n_rows, n_clusters)
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))
    labels = torch.empty(n_rows, dtype=torch.long)
    labels[perm] = torch.arange(n_rows) // m
    return labels


def contiguous_split(n_rows: int, n_clusters: int) -> torch.Tensor:
    """Consecutive neurons (index order) form each cluster."""
    m = check_divisible(n_rows, n_clusters)
    return torch.arange(n_rows) // m


# ------------------------------------------------------------------------------ whole models


def cluster_matrix(model: nn.Module, layer: int, which: str = "up") -> torch.Tensor:
    """The rows clustered for one layer: rows of the first matrix ("up": up_proj, or fc1 of a plain FFN),
    of the gate, or both (each L2-normalised) side by side."""
    w = ffn_weights(model, layer)
    if which not in MATRICES:
        raise ValueError(f"Unknown cluster matrix {which!r}; allowed: {', '.join(MATRICES)}.")
    if which != "up" and w.gate is None:
        raise ValueError(f"cluster_matrix={which!r} needs a gated FFN, and this {model.config.model_type} model's "
                         "FFN is plain (fc2(act(fc1 x))): use cluster_matrix='up' (the rows of fc1).")
    if which == "up":
        return w.up.detach()
    if which == "gate":
        return w.gate.detach()
    # each half made a unit row exactly (quantize_rows), so the joint rows do not depend on the kernels
    scale = 2.0 ** -MAX_BITS
    return torch.cat([quantize_rows(w.gate, MAX_BITS)[0] * scale, quantize_rows(w.up, MAX_BITS)[0] * scale], dim=1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def auto_batch_layers(x: torch.Tensor, n_experts: int) -> int:
    """Layers per batch: all that fit half the free GPU memory; one at a time on the CPU."""
    if x.device.type != "cuda":
        return 1
    n, d = x.shape
    m = n // n_experts
    # float64 copies of the rows (quantized, grouped, gathered), similarities, projections, move gains
    per_layer = 8 * (4 * n * d + 4 * n * n_experts + 4 * n_experts * n_experts * m)
    free, _ = torch.cuda.mem_get_info(x.device)
    return max(1, int(0.5 * free // per_layer))


def split_model(model: nn.Module, n_experts: int, method: str = "kmeans", matrix: str = "up",
                iters: int = 20, seed: int = 0, batch_layers: int | None = None,
                swap_rounds: int = 1000) -> SplitResult:
    """Split every layer's FFN neurons into n_experts equal experts; labels [n_layers, d_ff] and a per-layer table.

    K-Means runs several layers at once on a GPU (`batch_layers`; None = as many as fit), which amortises
    the per-operation overhead; the labels do not depend on the batching (nor on the device, the CPU
    kernels or the thread count: see split/kmeans.py). Layer i uses seed + i; `swap_rounds` caps the refinement.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown split method {method!r}; allowed: {', '.join(METHODS)}.")
    if matrix not in MATRICES:
        raise ValueError(f"Unknown cluster matrix {matrix!r}; allowed: {', '.join(MATRICES)}.")
    total = n_layers(model)
    labels: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * total
    rows: list[dict] = []
    progress = tqdm(total=total, desc=f"split ({method}, {matrix})")
    layer = 0
    while layer < total:
        first = cluster_matrix(model, layer, matrix)
        check_divisible(first.shape[0], n_experts)
        size = 1 if method != "kmeans" else (batch_layers or auto_batch_layers(first, n_experts))
        batch = [first]
        while len(batch) < size and layer + len(batch) < total:  # same device and shape only
            nxt = cluster_matrix(model, layer + len(batch), matrix)
            if nxt.device != first.device or nxt.shape != first.shape:
                break
            batch.append(nxt)
        ids = list(range(layer, layer + len(batch)))
        _sync(first.device)
        start = time.perf_counter()
        if method == "kmeans":
            results = balanced_kmeans_batch(torch.stack(batch), n_experts, iters, [seed + i for i in ids],
                                            swap_rounds)
            found = [(r.labels, r.n_iter, r.converged) for r in results]
        elif method == "random":
            found = [(random_split(first.shape[0], n_experts, seed + layer), 0, True)]
        else:
            found = [(contiguous_split(first.shape[0], n_experts), 0, True)]
        _sync(first.device)
        seconds = (time.perf_counter() - start) / len(batch)
        for i, w, (lab, n_iter, converged) in zip(ids, batch, found):
            obj = objective(w, lab, n_experts)
            obj_random = objective(w, random_split(w.shape[0], n_experts, seed + i), n_experts)
            log.debug("layer %d: objective %.4f (random %.4f), %.2f s", i, obj, obj_random, seconds)
            labels[i] = lab.cpu().numpy().astype(np.int64)
            rows.append({"layer": i, "n_iter": n_iter, "converged": bool(converged), "objective": obj,
                         "objective_random": obj_random, "seconds": seconds, "batch_layers": len(batch)})
        progress.update(len(batch))
        layer += len(batch)
    progress.close()
    if len({len(lab) for lab in labels}) > 1:
        raise ValueError("Layers have different d_ff (a pruned model?); split_model needs equal widths.")
    return SplitResult(np.stack(labels), pd.DataFrame(rows), method, matrix, n_experts)


SPEEDUP_TARGET = 10.0  # issue 9: at least this much faster than k-means-constrained, objective at least as good


def compare_with_kmeans_constrained(model: nn.Module, layers: list[int], n_experts: int, iters: int = 20,
                                    seed: int = 0, matrix: str = "up",
                                    swap_budgets: Sequence[int] = (1000,)) -> pd.DataFrame:
    """Our balanced K-Means (one row per swap budget) against k-means-constrained (min-cost flow, CPU) on some
    layers: objective, seconds, speed-up and whether the target (SPEEDUP_TARGET, objective as good) is met."""
    if not layers:
        return pd.DataFrame()
    try:
        from k_means_constrained import KMeansConstrained
    except ImportError as err:
        raise ImportError("compare_with_kmeans_constrained needs the package k-means-constrained "
                          "(pip install k-means-constrained).") from err
    rows = []
    for layer in layers:
        x = cluster_matrix(model, layer, matrix)
        m = check_divisible(x.shape[0], n_experts)
        unit = (quantize_rows(x.cpu(), MAX_BITS)[0] * 2.0 ** -MAX_BITS).numpy()
        kmc = KMeansConstrained(n_clusters=n_experts, size_min=m, size_max=m, n_init=1, max_iter=iters,
                                random_state=seed)
        start = time.perf_counter()
        kmc.fit(unit)
        kmc_seconds = time.perf_counter() - start
        kmc_objective = objective(torch.from_numpy(unit), torch.from_numpy(kmc.labels_.astype(np.int64)),
                                  n_experts)
        for budget in swap_budgets:
            _sync(x.device)
            start = time.perf_counter()
            ours = balanced_kmeans(x, n_experts, iters=iters, seed=seed, swap_rounds=budget)
            _sync(x.device)
            seconds = time.perf_counter() - start
            gap = (ours.objective - kmc_objective) / kmc_objective
            speedup = kmc_seconds / max(seconds, 1e-9)
            log.info("layer %d, swap budget %d: ours %.4f in %.2f s, k-means-constrained %.4f in %.2f s", layer,
                     budget, ours.objective, seconds, kmc_objective, kmc_seconds)
            rows.append({"layer": layer, "swap_budget": budget, "objective": ours.objective, "seconds": seconds,
                         "n_iter": ours.n_iter, "swap_rounds": ours.swap_rounds, "kmc_objective": kmc_objective,
                         "kmc_seconds": kmc_seconds, "kmc_n_iter": int(kmc.n_iter_), "speedup": speedup,
                         "rel_gap": gap, "meets_target": bool(gap >= 0 and speedup >= SPEEDUP_TARGET)})
    return pd.DataFrame(rows)


def named_layers(spec: str, n_layers: int) -> list[int]:
    """Layer indices from 'shallow,middle,deep' names and/or numbers ("" = none)."""
    names = {"shallow": 0, "middle": n_layers // 2, "deep": n_layers - 1}
    layers = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part not in names and not part.lstrip("-").isdigit():
            raise ValueError(f"Layer {part!r} is neither a number nor one of {', '.join(names)}.")
        layer = names[part] if part in names else int(part) % n_layers
        if layer not in layers:
            layers.append(layer)
    return layers


def describe_sizes(labels: np.ndarray, n_experts: int) -> str:
    """A sentence checking that every layer has n_experts experts of exactly d_ff / n_experts neurons."""
    sizes = np.stack([np.bincount(layer, minlength=n_experts) for layer in labels])
    expected = labels.shape[1] // n_experts
    verdict = "all equal" if (sizes == expected).all() else "NOT all equal"
    return (f"{labels.shape[0]} layers x {n_experts} experts; neurons per expert: min {sizes.min()}, "
            f"max {sizes.max()} (expected {expected}: {verdict})")


def describe_comparison(compare: pd.DataFrame) -> str:
    """Sentences on how our split fared against k-means-constrained, one per swap budget, from the measured table."""
    if compare.empty:
        return "No layer was compared."
    sentences = []
    for budget, rows in compare.groupby("swap_budget", sort=False):
        met = int(rows["meets_target"].sum())
        sentences.append(
            f"Swap budget {budget}: on {met} of {len(rows)} layers ours is at least {SPEEDUP_TARGET:.0f}x faster with "
            f"an objective at least as good. Objective: ours {rows['objective'].mean():.4f} vs k-means-constrained "
            f"{rows['kmc_objective'].mean():.4f} (mean relative gap {rows['rel_gap'].mean():+.2%}); time per layer: "
            f"ours {rows['seconds'].mean():.2f} s vs {rows['kmc_seconds'].mean():.2f} s ({rows['speedup'].min():.1f}x "
            f"to {rows['speedup'].max():.1f}x faster); Lloyd iterations: ours {rows['n_iter'].tolist()} (then "
            f"{rows['swap_rounds'].tolist()} rounds of improving swaps), theirs {rows['kmc_n_iter'].tolist()}.")
    return "\n".join(sentences)
