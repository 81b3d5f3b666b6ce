"""Balanced spherical K-Means in exact arithmetic: the same labels on every machine (docs/method.md section 2).

Rows are split into `k` clusters of exactly `m = n / k` rows. The objective is the mean cosine of
a row to its cluster's centroid (the normalised mean of its members); for unit rows it equals
`sum_a ||s_a|| / n`, where `s_a` is the sum of cluster `a`'s rows.

**Why exact.** torch picks its CPU kernels by instruction set (AVX2, AVX-512, ...) and a float
matrix product's last bits depend on the kernel's summation order. A search that compares floats
turns those bits into different partitions on different machines. Here every row is first rounded
to integers (`quantize_rows`: unit rows times `2**bits`), and `bits` is chosen so that every dot
product the search takes (a row with a row, or with a sum of up to `m + 1` rows) and every partial
sum on the way is an integer below 2**53: float64 products of such integers are exact in any
summation order, on any CPU kernel and on the GPU. Norms are exact int64 sums. Everything else the
search decides on comes from exact integers through correctly rounded IEEE operations (`+ - * /`,
`sqrt`), float reductions are replaced by int64 sums, and ties go to the lower index (stable
sorts). So the labels are a function of the weights' bits, the seed and the parameters alone.
Rounding the unit rows to `bits` (22-23) bits changes a cosine by about 1e-7.

The search, vectorised over a batch of problems (layers) on the input's device:

1. **Balanced Lloyd.** Spherical k-means++ seeds (uniforms drawn on the CPU from the seed), then up
   to `iters` iterations of: similarities to the centroids; cluster *prices* from a few subgradient
   steps on the dual of the transport problem (so that `argmax_j S_ij - p_j` is nearly balanced);
   a greedy-with-capacity auction on `S - p`; centroid update. It stops when the labels stop
   changing. With small clusters in high dimension every row dominates its own centroid, so Lloyd
   stops after a few iterations in a poor local optimum (so does `k-means-constrained`).
2. **Exact swap refinement.** A Hartigan-style local search on the objective: each round takes the
   gain of moving every row to every cluster, keeps the `candidates` best partner clusters of each
   cluster, shortlists the 2 best movers on each side of every candidate pair, evaluates the exact
   change of `||s_a|| + ||s_b||` of those swaps, and applies a greedy matching of locally dominant
   improving pairs (each cluster in at most one swap per round), so the objective rises
   monotonically and sizes stay equal. It stops at a local optimum (no swap gains more than `tol`
   of the pair's norms) or after `swap_rounds` rounds: the budget trades time for objective.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from ..models.topk import stable_top_indices

log = logging.getLogger(__name__)

MAX_BITS = 24  # finer than float32 weights need
_FIX_BITS = 18  # fixed-point bits of the similarities summed for the price step size
PRICE_STEPS = 20  # subgradient steps on the cluster prices per Lloyd iteration


@dataclass
class BalancedResult:
    """Labels of a balanced clustering and how the search went."""

    labels: torch.Tensor  # LongTensor [n_rows], values in [0, n_clusters)
    n_iter: int  # Lloyd iterations run until the labels stopped changing
    converged: bool  # Lloyd converged within `iters` and the swap search reached a local optimum
    objective: float  # mean cosine of a row to its cluster's normalised centroid
    swap_rounds: int = 0  # rounds of the swap refinement
    n_swaps: int = 0  # swaps applied by the refinement
    objective_lloyd: float = float("nan")  # objective after phase 1, before the swaps


def divisors(n: int) -> list[int]:
    """All divisors of n, ascending."""
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def check_divisible(n_rows: int, n_clusters: int) -> int:
    """The cluster size n_rows / n_clusters, or a ValueError naming d_ff, n_experts and the allowed values."""
    if n_clusters < 1 or n_rows % n_clusters != 0:
        raise ValueError(f"n_experts={n_clusters} does not divide d_ff={n_rows}: experts must have exactly "
                         f"equal sizes. Allowed n_experts for d_ff={n_rows}: "
                         f"{', '.join(map(str, divisors(n_rows)))}.")
    return n_rows // n_clusters


def exact_bits(cluster_size: int) -> int:
    """Fixed-point bits of unit rows such that a row's dot product with a sum of cluster_size + 1 rows is exact.

    |x . s| <= ||x|| ||s|| <= (m + 1) 2**(2 bits) (1 + rounding), for every partial sum too (Cauchy-Schwarz
    on any subset of coordinates); keeping it under 2**52 leaves a factor 2 for the rounding of the rows.
    """
    return min(MAX_BITS, (51 - math.ceil(math.log2(cluster_size + 1))) // 2)


def _powers_of_two(exponents: torch.Tensor) -> torch.Tensor:
    """2**e as float64 for int64 exponents e, built from the bits (exact, unlike pow on some kernels)."""
    return ((exponents + 1023) << 52).view(torch.float64)


def quantize_rows(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows rounded to integers of `bits` fractional bits (float64 [..., n, d]) and their squared norms (int64).

    Every step is exact or correctly rounded: rows are scaled by a power of two from their largest entry
    (a max is exact) and rounded to integers small enough that their squared norm is an exact float64 sum
    in any order; each row is then multiplied by `2**bits / norm` and rounded. A zero row stays zero.
    """
    x = x.detach().to(torch.float64)
    first_bits = min(MAX_BITS, (52 - math.ceil(math.log2(x.shape[-1]))) // 2)
    low, high = torch.aminmax(x, dim=-1, keepdim=True)
    _, exponent = torch.frexp(torch.maximum(-low, high))
    scaled = torch.round(x.mul_(_powers_of_two(first_bits - exponent.long())))  # |entries| <= 2**first_bits
    root = torch.sqrt((scaled * scaled).sum(-1, keepdim=True)).clamp_min_(1.0)
    q = torch.round(scaled.mul_(float(2 ** bits) / root))
    return q, (q * q).sum(-1).long()  # |q| <= 2**bits: the squared norm is exact


def _int_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact dot products [B, n, k] of integer-valued float64 rows a [B, n, d] and b [B, k, d], as int64."""
    return torch.bmm(a, b.transpose(1, 2)).long()


def _norms(norm2: torch.Tensor) -> torch.Tensor:
    """Square roots of exact int64 squared norms (correctly rounded)."""
    return torch.sqrt(norm2.to(torch.float64))


def _sq_norms(rows: torch.Tensor) -> torch.Tensor:
    """Exact int64 squared norms of integer-valued float64 rows [..., d] (sums of rows: beyond float64's 2**53)."""
    r = rows.long()
    return r.mul_(r).sum(-1)


# ----------------------------------------------------------------------------- phase 1: Lloyd
# Every internal function works on a batch of B independent problems (layers): q is [B, n, d].


def grouped_sums(q: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Cluster sums [B, k, d] of labels [B, n]: sums of integers below 2**53, so exact in any order (GPU atomics too)."""
    b, n, d = q.shape
    flat = (labels + (torch.arange(b, device=q.device) * k)[:, None]).view(-1)
    return torch.zeros(b * k, d, dtype=q.dtype, device=q.device).index_add_(0, flat, q.reshape(b * n, d)).view(b, k, d)


def _kmeans_pp(q: torch.Tensor, k: int, draws: torch.Tensor, bits: int, per_pass: int = 64) -> torch.Tensor:
    """Spherical k-means++ seed indices [B, k] (distance 2**(2 bits) - x.c, exact) from uniform draws [B, k].

    Seeds are drawn `per_pass` at a time from the same distances (one matrix product per pass instead of a
    matrix-vector product per seed, which on a large layer is bound by reading the rows k times).
    """
    b, n, d = q.shape
    unit2 = 2 ** (2 * bits)
    idx = torch.empty(b, k, dtype=torch.long, device=q.device)
    idx[:, 0] = (draws[:, 0] * n).long().clamp_(max=n - 1).to(q.device)
    draws = draws.to(q.device)
    dist = None
    done, new = 0, 1  # seeds chosen so far; seeds chosen in the last pass
    while done + new < k or dist is None:
        chosen = q.gather(1, idx[:, done:done + new, None].expand(b, new, d))
        fresh = (unit2 - _int_dots(q, chosen)).amin(2).clamp_min_(0)  # [B, n]
        dist = fresh if dist is None else torch.minimum(dist, fresh)
        done += new
        if done == k:
            break
        new = min(per_pass, k - done)
        cum = torch.cumsum(dist, 1)  # int64: exact
        target = (cum[:, -1:].to(torch.float64) * draws[:, done:done + new]).long()
        idx[:, done:done + new] = torch.searchsorted(cum, target, right=True).clamp_(max=n - 1)
    return idx


def _step_scale(s: torch.Tensor, bits: int) -> torch.Tensor:
    """Standard deviation [B, 1] of each problem's similarities, from exact int64 sums of fixed-point values."""
    b = s.shape[0]
    v = torch.round(s * float(2 ** (_FIX_BITS - bits))).long().view(b, -1)
    count = v.shape[1]
    mean = v.sum(1).to(torch.float64) / count
    var = (v * v).sum(1).to(torch.float64) / count - mean * mean
    return (var.clamp_min(0).sqrt() * float(2 ** (bits - _FIX_BITS)))[:, None]


def _balance_prices(s: torch.Tensor, m: int, bits: int, steps: int = PRICE_STEPS) -> torch.Tensor:
    """Cluster prices [B, k] from subgradient steps on the transport dual, so argmax(S - p) is nearly balanced.

    The steps compare float32 copies (conversions are correctly rounded, so still the same on every machine):
    prices only steer the balanced assignment that follows, which takes the exact similarities.
    """
    b, n, k = s.shape
    s32 = s.to(torch.float32)
    prices = torch.zeros(b, k, dtype=torch.float64, device=s.device)
    scale = 0.5 * _step_scale(s, bits) / m
    offset = (torch.arange(b, device=s.device) * k)[:, None]
    for t in range(steps):
        best = (s32 - prices.to(torch.float32)[:, None, :]).argmax(2) + offset
        counts = torch.bincount(best.view(-1), minlength=b * k).view(b, k).to(torch.float64)
        prices += scale / math.sqrt(t + 1) * (counts - m)
    return prices


def _rank_in_group(group: torch.Tensor, score: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Rank of each element within its group by descending score (0 = best; ties: lower position first)."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    sorted_group = group[order]
    counts = torch.bincount(sorted_group, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=group.device) - starts[sorted_group]
    return rank


def _greedy_capacity_assign(s: torch.Tensor, m: int) -> torch.Tensor:
    """Balanced assignment [B, n]: rows bid for their best cluster with room; clusters keep their top bidders."""
    b, n, k = s.shape
    flat = s.reshape(b * n, k)
    labels = torch.full((b * n,), -1, dtype=torch.long, device=s.device)
    capacity = torch.full((b * k,), m, dtype=torch.long, device=s.device)
    todo = torch.arange(b * n, device=s.device)
    while todo.numel():
        layer_k = (todo // n) * k
        full = (capacity.view(b, k) == 0)[todo // n]
        best_score, best = flat[todo].masked_fill(full, -math.inf).max(1)
        group = layer_k + best
        accepted = _rank_in_group(group, best_score, b * k) < capacity[group]
        labels[todo[accepted]] = best[accepted]
        capacity -= torch.bincount(group[accepted], minlength=b * k)
        todo = todo[~accepted]
    return labels.view(b, n)


def _lloyd(q: torch.Tensor, k: int, iters: int, draws: torch.Tensor, bits: int
           ) -> tuple[torch.Tensor, list[int], list[bool], torch.Tensor | None]:
    """Balanced spherical Lloyd iterations from k-means++ seeds.

    Returns labels [B, n], iterations and convergence per problem, and, when every problem converged, the
    exact dot products [B, n, k] of the rows with the final cluster sums (the swap search starts from them).
    """
    b, n, d = q.shape
    m = n // k
    seeds = _kmeans_pp(q, k, draws, bits)
    centroids = q.gather(1, seeds[:, :, None].expand(b, k, d))
    previous = None
    n_iter = torch.full((b,), iters, dtype=torch.long)
    converged = torch.zeros(b, dtype=torch.bool)
    for it in range(1, iters + 1):
        # cosine to each normalised centroid, times ||x|| 2**bits (constant per row: it does not change argmax)
        dots = torch.bmm(q, centroids.transpose(1, 2))
        sims = dots / _norms(_sq_norms(centroids)).clamp_min_(1.0)[:, None, :]
        labels = _greedy_capacity_assign(sims - _balance_prices(sims, m, bits)[:, None, :], m)
        centroids = grouped_sums(q, labels, k)
        if previous is not None:
            # A problem whose labels did not change is at a fixed point: later iterations keep them.
            same = (previous == labels).all(1).cpu()
            n_iter = torch.where(same & ~converged, it, n_iter)
            converged |= same
            if bool(converged.all()):
                # every problem's labels equal the previous iteration's: `dots` were taken with their sums
                return labels, n_iter.tolist(), converged.tolist(), dots.long()
        previous = labels
    return labels, n_iter.tolist(), converged.tolist(), None


# ------------------------------------------------------------------------ phase 2: exact swaps


def _dominant_matching(gain: torch.Tensor, max_steps: int = 8) -> torch.Tensor:
    """Greedy matching of symmetric gain matrices [B, k, k] by locally dominant pairs: partner [B, k] or -1."""
    b, k, _ = gain.shape
    ar = torch.arange(k, device=gain.device).expand(b, k)
    partner = torch.full((b, k), -1, dtype=torch.long, device=gain.device)
    g = gain.clone()
    for _ in range(max_steps):
        best, choice = g.max(2)
        mutual = (choice.gather(1, choice) == ar) & (best > 0)
        if not bool(mutual.any()):
            break
        partner = torch.where(mutual, choice, partner)
        g.masked_fill_(mutual[:, :, None] | mutual[:, None, :], -math.inf)
    return partner


class _SwapState:
    """Rows grouped by cluster (slot a * m + i) with exact cluster sums and projections, for a batch of problems."""

    def __init__(self, q: torch.Tensor, labels: torch.Tensor, k: int, dots: torch.Tensor | None = None):
        b, n, d = q.shape
        self.members = torch.argsort(labels, dim=1, stable=True)  # [B, n]: row in each slot
        self.xg = q.gather(1, self.members[:, :, None].expand(b, n, d))
        self.xn = _sq_norms(self.xg)  # [B, n] int64
        self.k, self.m = k, n // k
        self.sums = self.xg.view(b, k, self.m, d).sum(2)  # integer-valued: exact
        if dots is None:  # [B, k, n] int64: s_c . x_slot
            self.proj = _int_dots(self.sums, self.xg)
        else:  # the same numbers, already taken by the last Lloyd iteration (rows [B, n, k] in row order)
            self.proj = dots.gather(1, self.members[:, :, None].expand(b, n, k)).transpose(1, 2).contiguous()

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only some problems of the batch."""
        for name in ("members", "xg", "xn", "sums", "proj"):
            setattr(self, name, getattr(self, name)[rows])


def _swap_round(st: _SwapState, n_cand: int, n_short: int, tol: float):
    """One round: exact gains of the shortlisted swaps and a matching of improving ones (problem, a, c, slots, gain)."""
    b, n, _ = st.xg.shape
    k, m = st.k, st.m
    dev = st.xg.device
    ar = torch.arange(k, device=dev)
    sq = _sq_norms(st.sums)  # [B, k] int64
    norm = _norms(sq)
    p3 = st.proj.view(b, k, k, m)  # [B, c, a, i] = s_c . x_{a,i}
    own = p3.diagonal(dim1=1, dim2=2).transpose(1, 2)  # [B, a, i]: x_{a,i} . s_a
    xn = st.xn.view(b, k, m)
    rest = sq[:, :, None] - 2 * own + xn  # ||s_a - x_{a,i}||^2, exact
    removal = norm[:, :, None] - _norms(rest.clamp_min(0))
    move = _norms((2 * p3 + sq[:, :, None, None] + xn[:, None, :, :]).clamp_min_(0))
    move.sub_(norm[:, :, None, None]).sub_(removal[:, None, :, :])  # [B, c, a, i]: gain of moving x_{a,i} to c
    pair_gain = move.amax(3)
    pair_gain = pair_gain + pair_gain.transpose(1, 2)
    pair_gain.diagonal(dim1=1, dim2=2).fill_(-math.inf)
    top = stable_top_indices(pair_gain, n_cand)
    cand = torch.zeros(b, k, k, dtype=torch.bool, device=dev).scatter_(2, top, True)
    lay, a, c = (cand | cand.transpose(1, 2)).triu(1).nonzero(as_tuple=True)
    n_pairs = a.numel()
    # Flat indices (index_select / take): much faster on the CPU than multi-tensor advanced indexing.
    move_rows = move.reshape(b * k * k, m)
    ia = stable_top_indices(move_rows.index_select(0, (lay * k + c) * k + a), n_short)  # members of a to go to c
    jc = stable_top_indices(move_rows.index_select(0, (lay * k + a) * k + c), n_short)  # members of c to go to a
    slot_a = (lay * n + a * m)[:, None] + ia  # [P, r] flat slots
    slot_c = (lay * n + c * m)[:, None] + jc
    xs = st.xg.view(b * n, -1)
    rows_a = xs[slot_a.view(-1)].view(n_pairs, n_short, -1)
    rows_c = xs[slot_c.view(-1)].view(n_pairs, n_short, -1)
    dots = _int_dots(rows_a, rows_c).mul_(2)  # 2 x_i . x_j, exact
    proj_c_a = p3.take(((lay * k + a) * n)[:, None] + c[:, None] * m + jc)  # s_a . x_j
    proj_a_c = p3.take(((lay * k + c) * n)[:, None] + a[:, None] * m + ia)  # s_c . x_i
    xn_flat = st.xn.view(-1)
    new_a = rest.take(slot_a)[:, :, None] + (xn_flat[slot_c] + 2 * proj_c_a)[:, None, :] - dots
    new_c = rest.take(slot_c)[:, None, :] + (xn_flat[slot_a] + 2 * proj_a_c)[:, :, None] - dots
    exact = _norms(new_a.clamp_(min=0)).add_(_norms(new_c.clamp_(min=0)))
    exact.sub_((norm[lay, a] + norm[lay, c])[:, None, None])
    best, flat = exact.view(n_pairs, -1).max(1)
    # A relative threshold: swaps that gain less are not worth a round (and rounding of the square roots
    # could otherwise let equal-valued swaps cycle).
    best = best.masked_fill(best <= tol * (norm[lay, a] + norm[lay, c]), -math.inf)
    gain = torch.full((b, k, k), -math.inf, dtype=exact.dtype, device=dev)
    gain[lay, a, c] = best
    gain[lay, c, a] = best
    pair_index = torch.full((b, k, k), -1, dtype=torch.long, device=dev)
    pair_index[lay, a, c] = torch.arange(n_pairs, device=dev)
    partner = _dominant_matching(gain)
    sl, lo = (partner > ar).nonzero(as_tuple=True)
    hi = partner[sl, lo]
    idx = pair_index[sl, lo, hi]
    si = lo * m + ia[idx, flat[idx] // n_short]
    sj = hi * m + jc[idx, flat[idx] % n_short]
    return sl, lo, hi, si, sj, best[idx]


def _apply_swaps(st: _SwapState, sl, lo, hi, si, sj) -> None:
    """Swap the rows in slots si and sj of problems sl, updating sums and projections exactly."""
    b, k, n = st.proj.shape
    fi, fj = sl * n + si, sl * n + sj  # flat slots
    xs = st.xg.view(b * n, -1)
    xi, xj = xs[fi], xs[fj]
    delta = xj - xi
    sums = st.sums.view(b * k, -1)
    sums[sl * k + lo] += delta
    sums[sl * k + hi] -= delta
    xs[fi], xs[fj] = xj, xi
    xn = st.xn.view(-1)
    xn[fi], xn[fj] = xn[fj], xn[fi]
    columns = (sl * k * n)[:, None] + torch.arange(k, device=sl.device)[None, :] * n  # [S, k]
    proj = st.proj.view(-1)
    proj[columns + si[:, None]], proj[columns + sj[:, None]] = proj[columns + sj[:, None]], proj[columns + si[:, None]]
    members = st.members.view(-1)
    members[fi], members[fj] = members[fj], members[fi]
    # One matvec per swap updates both clusters' projections; swaps padded per problem for one bmm.
    counts = torch.bincount(sl, minlength=b)
    pos = torch.arange(sl.numel(), device=sl.device) - (torch.cumsum(counts, 0) - counts)[sl]
    width = int(counts.max().item())
    padded = torch.zeros(b, width, delta.shape[1], dtype=delta.dtype, device=delta.device)
    padded[sl, pos] = delta
    step = _int_dots(padded, st.xg).view(-1, n)[sl * width + pos]  # [S, n]: delta . x_slot, exact
    rows = st.proj.view(b * k, n)
    rows[sl * k + lo] += step
    rows[sl * k + hi] -= step


def _swap_refine(q: torch.Tensor, labels: torch.Tensor, k: int, max_rounds: int, candidates: int = 8,
                 shortlist: int = 2, tol: float = 2e-6, dots: torch.Tensor | None = None):
    """Exact pairwise-swap local search on sum_a ||s_a||: labels [B, n], and per problem rounds, swaps, optimum."""
    b, n, _ = q.shape
    if max_rounds == 0:
        return labels, [0] * b, [0] * b, [True] * b
    st = _SwapState(q, labels, k, dots)
    n_cand, n_short = min(candidates, k - 1), min(shortlist, st.m)
    active = list(range(b))  # problems still searching, in the order of st's batch
    members = st.members.clone()
    rounds, swaps, optimum = [0] * b, [0] * b, [False] * b
    for rnd in range(1, max_rounds + 1):
        sl, lo, hi, si, sj, _ = _swap_round(st, n_cand, n_short, tol)
        counts = torch.bincount(sl, minlength=len(active)).tolist()
        for j, count in enumerate(counts):
            swaps[active[j]] += count
            rounds[active[j]] = rnd
        if sl.numel():
            _apply_swaps(st, sl, lo, hi, si, sj)
        finished = [j for j, count in enumerate(counts) if count == 0]
        if finished:  # no improving swap left: a local optimum, final for that problem
            for j in finished:
                optimum[active[j]] = True
                members[active[j]] = st.members[j]
            keep = [j for j, count in enumerate(counts) if count > 0]
            active = [active[j] for j in keep]
            if not active:
                break
            st.keep(torch.tensor(keep, device=q.device))
    for j, problem in enumerate(active):  # ran out of rounds
        members[problem] = st.members[j]
    out = torch.empty(b, n, dtype=torch.long, device=q.device)
    out.scatter_(1, members, torch.arange(k, device=q.device).repeat_interleave(n // k).expand(b, n))
    return out, rounds, swaps, optimum


# ------------------------------------------------------------------------------------ entry points


def draws(seeds: list[int], k: int) -> torch.Tensor:
    """The k-means++ uniforms [B, k] of each problem, from a CPU generator seeded with its seed (any device)."""
    return torch.stack([torch.rand(k, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                        for s in seeds])


def _objectives(q: torch.Tensor, labels: torch.Tensor, k: int, bits: int) -> list[float]:
    """Objective of each problem of a batch with balanced labels (from exact cluster norms)."""
    norms = _norms(_sq_norms(grouped_sums(q, labels, k)))
    return (norms.sum(1) / (q.shape[1] * 2.0 ** bits)).tolist()


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily use n torch intra-op threads (None = unchanged)."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def balanced_kmeans_batch(xs: torch.Tensor, n_clusters: int, iters: int = 20, seeds: list[int] | None = None,
                          swap_rounds: int = 1000, candidates: int = 8, tol: float = 2e-6,
                          cpu_threads: int | None = None) -> list[BalancedResult]:
    """Balanced K-Means of several same-shaped matrices [B, n, d] at once (e.g. layers), one seed each.

    The labels depend only on the rows' values, the seeds and the parameters: not on the device, the CPU
    kernels, the thread count or the batching. `swap_rounds` caps the refinement (0 = Lloyd alone);
    `cpu_threads`: torch threads during a CPU run (None = torch's setting; on a quiet 2-core machine two threads
    split a Gemma 3 270M layer in 0.9 s against 1.5 s with one, but on a busy one they can be many times slower).
    """
    b, n, _ = xs.shape
    m = check_divisible(n, n_clusters)
    seeds = list(range(b)) if seeds is None else list(seeds)
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for {b} matrices; give one seed per matrix.")
    if iters < 1:
        raise ValueError(f"iters={iters}: balanced K-Means needs at least one iteration.")
    if swap_rounds < 0:
        raise ValueError(f"swap_rounds={swap_rounds}: give 0 (Lloyd alone) or a positive budget of rounds.")
    bits = exact_bits(m)
    with _threads(cpu_threads if xs.device.type == "cpu" else None):
        q, _ = quantize_rows(xs, bits)
        return _search(q, n_clusters, iters, seeds, swap_rounds, candidates, tol, bits)


def _search(q: torch.Tensor, k: int, iters: int, seeds: list[int], swap_rounds: int, candidates: int,
            tol: float, bits: int) -> list[BalancedResult]:
    """Both phases on a batch of quantized unit rows [B, n, d]."""
    b, n, _ = q.shape
    m = n // k
    if k == 1 or m == 1:  # one cluster, or one row per cluster: every balanced split is equal
        labels = torch.zeros(n, dtype=torch.long, device=q.device) if k == 1 else torch.arange(n, device=q.device)
        objs = _objectives(q, labels.expand(b, n), k, bits)
        return [BalancedResult(labels.clone(), 1, True, obj, objective_lloyd=obj) for obj in objs]
    labels, n_iter, lloyd_converged, dots = _lloyd(q, k, iters, draws(seeds, k), bits)
    obj_lloyd = _objectives(q, labels, k, bits)
    labels, rounds, n_swaps, optimum = _swap_refine(q, labels, k, swap_rounds, candidates, tol=tol, dots=dots)
    obj = _objectives(q, labels, k, bits)
    results = []
    for i in range(b):
        log.debug("balanced_kmeans %dx%d -> %d (seed %d): %d Lloyd iterations (objective %.4f), %d swaps in %d "
                  "rounds (objective %.4f)", n, q.shape[2], k, seeds[i], n_iter[i], obj_lloyd[i], n_swaps[i],
                  rounds[i], obj[i])
        results.append(BalancedResult(labels[i], n_iter[i], lloyd_converged[i] and optimum[i], obj[i],
                                      rounds[i], n_swaps[i], obj_lloyd[i]))
    return results


def balanced_kmeans(x: torch.Tensor, n_clusters: int, iters: int = 20, seed: int = 0, swap_rounds: int = 1000,
                    candidates: int = 8, tol: float = 2e-6, cpu_threads: int | None = None) -> BalancedResult:
    """Balanced spherical K-Means of the rows of x into clusters of exactly equal size (on x's device)."""
    check_divisible(x.shape[0], n_clusters)
    return balanced_kmeans_batch(x[None], n_clusters, iters, [seed], swap_rounds, candidates, tol, cpu_threads)[0]
