"""Findings against the paper (babel_utils/findings): each claim's verdict follows from the numbers by its stated
rule, each notebook answers its own claims, and the findings render as Markdown a reader can scan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from babel_utils import findings
from babel_utils.analyse import categories, families, similarity
from babel_utils.analyse.tuning import Tuned
from babel_utils.core.languages import LANGUAGES, PAPER_LANGUAGES
from babel_utils.findings import AGREES, CANNOT_TELL, DISAGREES

PAPER = list(PAPER_LANGUAGES)


def _verdicts(found: findings.Findings) -> dict[str, str]:
    return {c.claim: c.verdict for c in found.against_paper}


def _paper_F(seed: int = 0, layers: int = 6, experts: int = 16) -> np.ndarray:
    """Frequencies of the paper's nine languages: each genus near its own centre."""
    rng = np.random.default_rng(seed)
    centre = {g: rng.random((layers, experts)) * 0.2 for g in sorted({LANGUAGES[c].genus for c in PAPER})}
    return np.clip(np.stack([centre[LANGUAGES[c].genus] + rng.normal(0, 0.002, (layers, experts)) for c in PAPER]),
                   0, None)


def test_heatmaps_differ_only_where_most_high_frequency_experts_are_not_everyone_s():
    F = np.full((3, 6, 8), 0.01)
    F[:, 5, :4] = 0.2  # 4 experts high-frequency in all three languages
    F[0, 0, 0] = 0.3  # one in English only
    verdict = _verdicts(findings.heatmaps(F, ["en", "fr", "zh"], 0.05))
    assert verdict == {"heatmaps-differ": DISAGREES}  # 1 of 5 is not shared by all
    F[1, 1, :4] = F[2, 2, :4] = 0.3  # 8 more, each in one language
    found = findings.heatmaps(F, ["en", "fr", "zh"], 0.05)
    assert _verdicts(found) == {"heatmaps-differ": AGREES}
    assert "9 (69%) are not high-frequency in all 3" in found.against_paper[0].found
    assert "'High-frequency' (f >= 0.05) is a low bar" in found.found[1]
    assert _verdicts(findings.heatmaps(F[:1], ["en"], 0.05)) == {"heatmaps-differ": CANNOT_TELL}


def test_shared_and_specific_experts_and_a_single_family_said_plainly():
    F = _paper_F()
    langs, threshold = PAPER, 0.05
    F[:, 5, 0] = 0.5  # shared by all
    totals = categories.category_totals(F, langs, threshold)
    depth = categories.depth_summary(categories.expert_counts_per_layer(F, langs, threshold), F.shape[1])
    sweep = categories.depth_sweep(F, langs, [0.02, 0.05])
    family_table = families.family_summary(F, langs, threshold, samples=50)
    found = findings.shared_experts(totals, F.shape[1] * F.shape[2], threshold, depth, sweep, family_table, 0.05)
    expected_specific = AGREES if (totals["specific"] > 0).sum() > len(langs) / 2 else DISAGREES
    assert _verdicts(found) == {"shared-experts": AGREES, "specific-experts": expected_specific}
    F[:, 5, 0] = 0.0
    F[F >= threshold] = 0.01  # nothing is high-frequency anywhere
    totals = categories.category_totals(F, langs, threshold)
    none = findings.shared_experts(totals, F.shape[1] * F.shape[2], threshold, depth, sweep, family_table, 0.05)
    assert _verdicts(none) == {"shared-experts": DISAGREES, "specific-experts": DISAGREES}
    one_family = family_table.head(1)
    surprise = findings.shared_experts(totals, 96, threshold, depth, sweep, one_family, 0.05).surprises[0]
    assert surprise.startswith(f"Only one family ({one_family['family'].iloc[0]}) has enough languages")


def _permutation(observed: float, p: float) -> similarity.PermutationResult:
    return similarity.PermutationResult(observed, p, np.zeros(3), 6, 20, 999)


def test_related_languages_alike_follows_the_permutation_test():
    assert findings.notebooks.related_alike(_permutation(0.1, 0.01), "", 0.05).verdict == AGREES
    assert findings.notebooks.related_alike(_permutation(0.1, 0.2), "", 0.05).verdict == CANNOT_TELL
    assert findings.notebooks.related_alike(_permutation(-0.1, 0.9), "", 0.05).verdict == DISAGREES
    no_test = findings.notebooks.related_alike(None, "it needs two languages of one genus", 0.05)
    assert no_test.verdict == CANNOT_TELL and "one genus" in no_test.found


def test_a_family_farther_than_unrelated_languages_is_named_as_a_surprise():
    langs = ["en", "fr", "hi", "zh"]  # en-fr: same family, other genus; en-hi too; zh: another family
    D = np.array([[0, 0.5, 0.5, 0.2], [0.5, 0, 0.5, 0.2], [0.5, 0.5, 0, 0.2], [0.2, 0.2, 0.2, 0]])
    surprise = findings.notebooks.family_surprise(pd.DataFrame(D, index=langs, columns=langs))
    assert len(surprise) == 1 and "(0.5) than languages of different families (0.2)" in surprise[0]
    assert findings.notebooks.family_surprise(pd.DataFrame(D.clip(0, 0.2), index=langs, columns=langs)) == []


def _tuned(meta: dict) -> Tuned:
    return Tuned(None, None, "tuned", "our tuning", None, pd.DataFrame(), meta)


def test_the_tuning_claim_needs_the_deepest_third_and_a_surprise_says_where_else():
    rng = np.random.default_rng(0)
    base = rng.random((3, 9, 8)) * 0.02
    deep, middle = base.copy(), base.copy()
    deep[:, 8] += 0.05
    middle[:, 4] += 0.05
    langs = ["en", "fr", "zh"]
    assert _verdicts(findings.tuning(_tuned({}), categories.instruction_tuning_diff(base, deep, langs), 9)) == {
        "tuning-last-layer": AGREES}
    meta = {"steps": 60, "n_train_examples": 400, "rank": 0, "n_trainable": 1e6, "params": "mlp", "batch": 8,
            "lr": 1e-3, "directions": ["en-fr"], "n_eval_examples": 10, "loss_before_train": 2.0,
            "loss_after_train": 1.0, "loss_before_heldout": 2.0, "loss_after_heldout": 1.5}
    found = findings.tuning(_tuned(meta), categories.instruction_tuning_diff(base, middle, langs), 9)
    assert _verdicts(found) == {"tuning-last-layer": DISAGREES}
    assert "The middle layers, not the last ones" in found.surprises[0] and "60 steps on 400" in found.surprises[0]


def test_pruning_claims_count_what_the_intervals_show():
    guided = pd.DataFrame({"method": "sorting", "ratio": 0.25, "language": ["en", "fr", "hi"], "gain": 0.1,
                           "relative_gain": 0.05, "verdict": ["beats random", "beats random", "not distinguishable"]})
    layerwise = pd.DataFrame({"language": ["en", "fr"], "ratio": 0.25, "layerwise_minus_sorting": 0.01, "low": 0.0,
                              "high": 0.02, "verdict": ["sorting better", "sorting better"]})
    vs_dense = pd.DataFrame({"mask": "sorting@0.1", "language": ["en", "fr"], "relative": 0.02, "low": 0.01,
                             "high": 0.03, "verdict": ["worse", "worse"]})
    speed = pd.DataFrame({"contender": ["dense", "threshold", "sorting@0.5"], "ms": [10.0, 9.0, 8.5],
                          "FFN share kept": [1.0, 0.9, 0.5], "speed-up vs dense": [1.0, 1.11, 1.18]})
    found = findings.pruning_eval(guided, layerwise, vs_dense, speed)
    assert _verdicts(found) == {"guided-beats-random": AGREES, "pruning-free": DISAGREES,
                                "layerwise-better": DISAGREES, "real-speedup": CANNOT_TELL}
    assert "sorting@0.5, 50% of the FFN kept) runs 1.18 times" in found.against_paper[3].found
    intervals = pd.DataFrame({"split": "random", "language": ["en", "fr", "en", "fr"],
                              "method": ["sorting", "sorting", "random", "random"],
                              "other_minus_reference": [0.001, -0.002, 0.3, 0.2],
                              "verdict": ["not distinguishable at this sample size"] * 2 + ["kmeans better"] * 2})
    surprise = findings.pruning_eval(guided, layerwise, vs_dense, speed, intervals, "kmeans").surprises
    assert len(surprise) == 1 and surprise[0].startswith("Under sorting masks, kmeans experts do not lose measurably")
    assert "(mean difference -0.001 bits per byte, random minus kmeans)" in surprise[0]
    intervals.loc[0, "verdict"] = "kmeans better"  # one language where the clusters measurably help
    assert findings.pruning_eval(guided, layerwise, vs_dense, speed, intervals, "kmeans").surprises == []


def test_every_claim_is_answered_by_its_notebook_and_findings_render_as_markdown():
    assert {c.notebook for c in findings.CLAIMS.values()} <= {f"0{n}" for n in range(1, 9)}
    answered = {"01": findings.split("split", 1e-6), "03": findings.heatmaps(_paper_F(), PAPER, 0.05)}
    for notebook, found in answered.items():
        assert set(_verdicts(found)) == set(findings.claims_of(notebook))
    assert _verdicts(findings.split("split", 0.01)) == {"view-exact": DISAGREES}
    text = answered["01"]._repr_markdown_()
    assert "### What this run found" in text and "| The paper reports | This run | Verdict |" in text
    assert "(method, section 2)" in text and "**agrees**" in text
    two_lines = findings.Findings("02", ["first line\nsecond line"])._repr_markdown_()
    assert "- first line\n- second line" in two_lines  # each line of a describe_* text is its own bullet
    with pytest.raises(ValueError, match="Unknown claim 'speed'"):
        findings.Comparison("speed", "x", AGREES)
    with pytest.raises(ValueError, match="Unknown verdict 'maybe'"):
        findings.Comparison("real-speedup", "x", "maybe")
