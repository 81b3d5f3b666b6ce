"""Intervals on the comparisons of notebook 08, and the verdicts they allow.

Bits per byte of held-out text: a paired bootstrap over blocks of the scored tokens (`eval_block_tokens`
each). Both sides of a comparison were scored on the same text, so each resample draws the same blocks for
both; a side made of several random masks (one per seed) also has its seeds drawn with replacement and
averaged. The interval is the percentile interval of the resampled differences, widened about the
estimate by sqrt(n / (n - 1)) * t(n - 1) / z for n blocks: a plain percentile interval from few blocks is
too narrow (the bootstrap variance of a mean is (n - 1) / n of the unbiased one, and z stands where a mean
of n values needs Student's t); the factor makes it the t interval when the blocks' differences are normal
(1.29 at 8 blocks, 1.06 at 32, 1.01 at 128).

MGSM: accuracy with its Wilson score interval (binomial); the gold answer's log-likelihood with a
bootstrap over problems.

A finding is stated only when its interval supports it; otherwise the sentence says "not distinguishable
at this sample size" (`verdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

NOT_DISTINGUISHABLE = "not distinguishable at this sample size"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval at some coverage."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Blocks:
    """One evaluation's held-out text in blocks: summed NLL (nats) and UTF-8 bytes of each block."""

    nll: np.ndarray
    n_bytes: np.ndarray
    n_tokens: int = 0  # scored tokens in all

    @classmethod
    def of(cls, result: dict) -> "Blocks":
        """The blocks of a cached held-out result (scoring.perplexity_many with block_tokens)."""
        if "block_nll" not in result:
            raise ValueError("This held-out result has no blocks: evaluate with eval_block_tokens > 0.")
        return cls(np.asarray(result["block_nll"], dtype=np.float64),
                   np.asarray(result["block_bytes"], dtype=np.float64), int(result["n_tokens"]))

    def bits_per_byte(self) -> float:
        """Bits per byte of the whole text."""
        return float(self.nll.sum() / math.log(2) / self.n_bytes.sum())


def _block_weights(n_blocks: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """[n_bootstrap, n_blocks]: how often each block is drawn in each resample."""
    draws = rng.integers(0, n_blocks, (n_bootstrap, n_blocks))
    return np.stack([np.bincount(row, minlength=n_blocks) for row in draws]).astype(np.float64)


def _side(sides: Sequence[Blocks], weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resampled bits per byte of one side [n_bootstrap]: the mean over its (resampled) seeds."""
    bpb = np.stack([(weights @ s.nll) / (weights @ s.n_bytes) / math.log(2) for s in sides])  # [seeds, boot]
    if len(sides) == 1:
        return bpb[0]
    pick = rng.integers(0, len(sides), (weights.shape[0], len(sides)))
    return np.take_along_axis(bpb.T, pick, axis=1).mean(axis=1)


def _check_same_text(sides: Sequence[Blocks]) -> None:
    lengths = {len(s.nll) for s in sides}
    if len(lengths) != 1 or any(not np.array_equal(s.n_bytes, sides[0].n_bytes) for s in sides):
        raise ValueError("A paired comparison needs both sides scored on the same blocks of the same text.")


def small_sample_factor(n: int, level: float) -> float:
    """How much a percentile bootstrap interval of a mean of n blocks is widened (see the module docstring)."""
    from scipy.stats import norm, t

    if n < 2:
        return float("inf")
    q = (1 + level) / 2
    return math.sqrt(n / (n - 1)) * float(t.ppf(q, n - 1)) / float(norm.ppf(q))


def bpb_difference(a: Sequence[Blocks], b: Sequence[Blocks], n_bootstrap: int, level: float = 0.95,
                   seed: int = 0, relative: bool = False) -> Interval:
    """Bits per byte of `a` minus `b` (each the mean over its seeds), with the paired bootstrap interval;
    `relative`: divided by b's bits per byte (resample by resample)."""
    _check_same_text([*a, *b])
    point_a = float(np.mean([s.bits_per_byte() for s in a]))
    point_b = float(np.mean([s.bits_per_byte() for s in b]))
    rng = np.random.default_rng(seed)
    weights = _block_weights(len(a[0].nll), n_bootstrap, rng)
    side_a, side_b = _side(a, weights, rng), _side(b, weights, rng)
    diffs = (side_a - side_b) / side_b if relative else side_a - side_b
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    estimate = (point_a - point_b) / point_b if relative else point_a - point_b
    widen = small_sample_factor(len(a[0].nll), level)
    return Interval(estimate, float(estimate - widen * (estimate - low)), float(estimate + widen * (high - estimate)))


def verdict(interval: Interval, better: str, worse: str, margin: float = 0.0) -> str:
    """For a difference where lower is better: `better` when its whole interval lies below `margin`, `worse`
    when it lies above, else NOT_DISTINGUISHABLE (the data cannot tell at this sample size)."""
    if interval.high < margin:
        return better
    if interval.low > margin:
        return worse
    return NOT_DISTINGUISHABLE


def wilson(successes: int, n: int, level: float = 0.95) -> Interval:
    """A proportion with its Wilson score interval (good for small n and proportions near 0 or 1)."""
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean(values: Sequence[float], n_bootstrap: int, level: float = 0.95, seed: int = 0) -> Interval:
    """The mean of some values (e.g. per-problem log-likelihoods) with its bootstrap percentile interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_bootstrap, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(x.mean()), float(low), float(high))
