"""Intervals on every comparison of 08, and verdicts that follow them: a planted difference is found, a
null one is called not distinguishable."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from babel_utils.evaluate import comparisons as evaluation
from babel_utils.evaluate import intervals
from babel_utils.evaluate.intervals import NOT_DISTINGUISHABLE, Blocks, bpb_difference

BOOT = evaluation.Bootstrap(n=2000, level=0.95, seed=0)
N_BLOCKS = 40


def text(seed: int = 0) -> Blocks:
    """A language's held-out text under some model: block NLLs that vary from block to block."""
    rng = np.random.default_rng(seed)
    n_bytes = rng.integers(40, 80, N_BLOCKS).astype(float)
    return Blocks(n_bytes * math.log(2) * rng.uniform(1.0, 3.0, N_BLOCKS), n_bytes)


def shifted(base: Blocks, bpb: float, noise: float = 0.0, seed: int = 1) -> Blocks:
    """The same text `bpb` bits per byte worse in every block, plus zero-mean noise of the pairing."""
    e = np.random.default_rng(seed).normal(0, noise, N_BLOCKS)
    e -= (e * base.n_bytes).sum() / base.n_bytes.sum()  # zero mean over the text's bytes
    return Blocks(base.nll + (bpb + e) * base.n_bytes * math.log(2), base.n_bytes)


def test_a_planted_difference_is_found_and_a_null_one_is_not():
    base = text()
    worse = bpb_difference([shifted(base, 0.05, noise=0.05)], [base], BOOT.n, seed=0)
    assert worse.estimate == pytest.approx(0.05, abs=1e-12) and 0 < worse.low < 0.05 < worse.high
    assert intervals.verdict(worse, "better", "worse") == "worse"
    null = bpb_difference([shifted(base, 0.0, noise=0.2)], [base], BOOT.n, seed=0)
    assert null.estimate == pytest.approx(0.0, abs=1e-12) and null.low < 0 < null.high
    assert intervals.verdict(null, "better", "worse") == NOT_DISTINGUISHABLE
    # the pairing: the blocks' own spread (bpb from 1 to 3) would swamp a 0.05 difference if unpaired
    assert worse.high - worse.low < 0.1


def test_seeds_are_resampled_too():
    base = text()
    one = bpb_difference([shifted(base, 0.5)], [base], BOOT.n, seed=0)
    spread = bpb_difference([shifted(base, 0.0), shifted(base, 0.5), shifted(base, 1.0)], [base], BOOT.n, seed=0)
    assert spread.estimate == pytest.approx(one.estimate)
    assert spread.high - spread.low > 5 * (one.high - one.low)  # the seeds' spread enters the interval
    with pytest.raises(ValueError, match="same blocks"):
        bpb_difference([text(1)], [base], 10)


def test_wilson_and_bootstrap_mean():
    assert intervals.wilson(0, 10).high == pytest.approx(0.2775, abs=1e-4)
    half = intervals.wilson(5, 10)
    assert (half.low, half.high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    iv = intervals.bootstrap_mean([1.0, 2.0, 3.0, 4.0], 2000)
    assert iv.estimate == 2.5 and 1.0 <= iv.low < 2.5 < iv.high <= 4.0


def _table(blocks: dict) -> pd.DataFrame:
    rows = []
    for (lang, target, mask), b in blocks.items():
        method = mask.split("@")[0]
        ratio = 0.0 if method == "dense" else 0.25
        seed = int(mask.split("#")[1]) if "#" in mask else None
        rows.append({"language": lang, "target": target, "method": method, "ratio": ratio, "seed": seed,
                     "top_k": None, "mask": mask, "metric": "bits_per_byte", "value": b.bits_per_byte()})
    return evaluation.tidy(rows)


def test_verdicts_of_the_tables_follow_the_intervals():
    blocks = {}
    for lang, gap in (("en", 0.3), ("fr", 0.0)):  # en: guided clearly better than random; fr: no difference
        base = text(hash(lang) % 100)
        blocks[(lang, lang, "dense")] = base
        guided = shifted(base, 0.005, noise=0.002, seed=2)
        blocks[(lang, lang, "sorting@0.25")] = guided
        blocks[(lang, lang, "layerwise@0.25")] = shifted(base, 0.005, noise=0.3, seed=3)
        for s in range(3):
            blocks[(lang, lang, f"random@0.25#{s}")] = shifted(guided, gap, noise=0.3, seed=10 + s)
    evals = _table(blocks)
    comparison = evaluation.guided_vs_random(evals, "bits_per_byte", blocks, BOOT)
    by = comparison.set_index(["method", "language"])["verdict"]
    assert by[("sorting", "en")] == "beats random" and by[("sorting", "fr")] == NOT_DISTINGUISHABLE
    text_ = evaluation.verdict(comparison)
    assert "(interval above zero) in 1 of 2 languages" in text_ and NOT_DISTINGUISHABLE in text_
    vs_dense = evaluation.against_dense(evals, blocks, BOOT).set_index(["mask", "language"])["verdict"]
    assert vs_dense[("sorting@0.25", "en")] == "matches or beats"  # 0.005 bpb on ~2 bpb: well within 1 %
    assert vs_dense[("random@0.25 (mean)", "en")] == "worse"
    sentence = evaluation.describe_matches(evaluation.against_dense(evals, blocks, BOOT))
    assert "sorting@0.25 on English" in sentence
    table = evaluation.match_table(evaluation.against_dense(evals, blocks, BOOT))
    assert table.loc["sorting@0.25", "en"].endswith("✓") and "[" in table.loc["sorting@0.25", "en"]
    layer = evaluation.layerwise_vs_sorting(evals, blocks, BOOT).set_index("language")["verdict"]
    assert set(layer) == {NOT_DISTINGUISHABLE}  # layer-wise differs from sorting only by noise


def test_own_mask_and_split_verdicts():
    base = {lang: text(i) for i, lang in enumerate(("en", "fr", "zh"))}
    blocks, rows = {}, []
    for lang, b in base.items():
        for target in base:
            gap = 0.0 if target == lang else (0.2 if lang == "en" else 0.0)
            blocks[(lang, target, "sorting@0.25")] = shifted(b, gap, noise=0.1, seed=len(rows))
            rows.append({"language": lang, "target": target, "method": "sorting", "ratio": 0.25, "seed": None,
                         "top_k": None, "mask": "sorting@0.25", "metric": "bits_per_byte",
                         "value": blocks[(lang, target, "sorting@0.25")].bits_per_byte()})
    own = evaluation.own_mask_intervals(evaluation.tidy(rows), blocks, BOOT)
    text_ = evaluation.describe_own_mask(own)
    assert "least (every interval against the other languages' masks above zero) for 1 of 3 languages (English)" in text_
    assert f"for 2 the comparison is {NOT_DISTINGUISHABLE}" in text_


def test_few_blocks_widen_the_interval_to_the_t_interval():
    assert intervals.small_sample_factor(8, 0.95) == pytest.approx(1.29, abs=0.005)
    assert intervals.small_sample_factor(1000, 0.95) == pytest.approx(1.0, abs=0.002)
    # on normal block differences the widened interval matches the t interval of their mean
    rng = np.random.default_rng(3)
    n_bytes = np.full(8, 50.0)
    base = Blocks(np.full(8, 2.0) * n_bytes * math.log(2), n_bytes)
    d = rng.normal(0.1, 0.05, 8)
    other = Blocks(base.nll + d * n_bytes * math.log(2), n_bytes)
    iv = bpb_difference([other], [base], 20000, seed=0)
    from scipy.stats import t

    half = t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert iv.high - iv.low == pytest.approx(2 * half, rel=0.1)
