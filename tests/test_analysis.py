"""Frequency table handling and the expert analyses of docs/method.md section 4 on small hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from babel_utils.analyse import categories as analysis
from babel_utils.record import frequencies

LANGS = ["en", "fr", "zh"]
N_TOKENS = 1000


def _table(F: np.ndarray, langs=LANGS) -> pd.DataFrame:
    """A frequency table whose frequencies are exactly F (counts over 1000 tokens)."""
    counts = {lang: np.rint(f * N_TOKENS).astype(np.int64) for lang, f in zip(langs, F)}
    return frequencies.make_table(counts, {lang: N_TOKENS for lang in langs})


def _base(n_lang: int = 3, n_layers: int = 6, n_experts: int = 8) -> np.ndarray:
    """Every expert at frequency 0.01, below the 0.05 threshold."""
    return np.full((n_lang, n_layers, n_experts), 0.01)


# --- record/frequencies.py ---------------------------------------------------------------------------

def test_frequency_array_round_trip_and_order():
    F = np.random.default_rng(0).integers(0, 100, (3, 4, 5)) / N_TOKENS
    table = _table(F)
    got, langs = frequencies.frequency_array(table)
    assert langs == LANGS and np.allclose(got, F)
    got, langs = frequencies.frequency_array(table.sample(frac=1, random_state=0), ["zh", "en"])
    assert langs == ["zh", "en"] and np.allclose(got, F[[2, 0]])


def test_frequency_array_errors():
    table = _table(_base())
    with pytest.raises(ValueError, match="language ar has no counts in this table; run 02_record"):
        frequencies.frequency_array(table, ["en", "ar"])
    with pytest.raises(ValueError, match="misses 1 .*layer 2, expert 3"):
        frequencies.frequency_array(table.drop(table.index[(table.language == "fr") & (table.layer == 2)
                                                           & (table.expert == 3)]))
    other = _table(_base(1, 6, 4), ["ar"])
    with pytest.raises(ValueError, match="different .*shapes"):
        frequencies.frequency_array(pd.concat([table, other]))
    with pytest.raises(ValueError, match="lacks the column"):
        frequencies.frequency_array(table.drop(columns="n_tokens"))


def test_check_table_names_both_shapes():
    table = _table(_base(3, 6, 8))
    frequencies.check_table(table, 6, 8)
    with pytest.raises(ValueError, match="6 layers x 8 experts .* 6 layers x 16 experts"):
        frequencies.check_table(table, 6, 16)


def test_activation_levels():
    F = _base(3, 4, 8)
    F[0, 3] = 0.04  # English: layer 3 holds 4/7 of the selections
    levels = frequencies.activation_levels(_table(F))
    assert list(levels.columns) == ["language", "layer", "level"]
    assert list(levels.language.unique()) == LANGS
    assert list(frequencies.activation_levels(_table(F[::-1], LANGS[::-1])).language.unique()) == LANGS[::-1]
    assert np.allclose(levels.groupby("language")["level"].sum(), 1.0)
    en = levels[levels.language == "en"].set_index("layer")["level"]
    assert en[3] == pytest.approx(4 / 7) and en[0] == pytest.approx(1 / 7)


# --- analyse/categories.py ------------------------------------------------------------------------------

def test_planted_shared_and_specific_experts():
    F = _base()
    F[:, 5, 3] = [0.2, 0.06, 0.05]  # shared (0.05 counts: f >= threshold)
    F[:2, 4, 1] = 0.3  # high in two languages: neither shared nor specific
    F[1, 0, 2] = 0.3  # French only
    shared = analysis.shared_experts(F)
    assert np.argwhere(shared).tolist() == [[5, 3]]
    spec = analysis.specific_experts(F)
    assert np.argwhere(spec >= 0).tolist() == [[0, 2]] and spec[0, 2] == 1
    counts = analysis.expert_counts_per_layer(F, LANGS)
    assert list(counts.columns) == ["layer", "category", "language", "count"]
    get = counts.set_index(["layer", "category", "language"])["count"]
    assert get[(5, "shared", "")] == 1 and get[(0, "specific", "fr")] == 1
    assert get[(4, "high_frequency", "en")] == 1 and get[(4, "high_frequency", "zh")] == 0
    assert counts[counts.category == "shared"]["count"].sum() == 1


def test_depth_summary_deep_shared_shallow_specific():
    F = _base(3, 9, 8)
    F[:, 6:, :4] = 0.2  # 12 shared experts in the last third
    F[:, 3, 0] = 0.2  # 1 shared in the middle
    F[0, :3, 5] = 0.3  # 3 English-specific in the first third
    summary = analysis.depth_summary(analysis.expert_counts_per_layer(F, LANGS), 9)
    assert summary.most_shared == "deep" and summary.most_specific == "shallow"
    assert "deep layers (12 of 13, 92 %)" in summary.text and "shallow layers (3 of 3" in summary.text
    assert summary.table.n_layers.tolist() == [3, 3, 3] and summary.table.shared.tolist() == [0, 1, 12]


def test_depth_summary_without_shared_experts():
    summary = analysis.depth_summary(analysis.expert_counts_per_layer(_base(), LANGS), 6)
    assert summary.most_shared == "none" and "no shared experts" in str(summary).lower()


def test_threshold_sweep_monotone():
    F = np.random.default_rng(1).random((3, 5, 16)) * 0.2
    sweep = analysis.threshold_sweep(F, LANGS, [0.01, 0.02, 0.05, 0.1, 0.15])
    assert set(sweep.category) == {"shared", "specific", "high_frequency_mean"}
    for category in ["shared", "high_frequency_mean"]:
        counts = sweep[sweep.category == category].sort_values("threshold")["count"].to_numpy()
        assert (np.diff(counts) <= 0).all() and counts[0] > counts[-1]


def test_instruction_tuning_diff_finds_changed_layer():
    rng = np.random.default_rng(2)
    base = rng.random((3, 6, 8)) * 0.02
    tuned = base + rng.normal(0, 1e-4, base.shape)
    tuned[:, 4] += 0.02  # layer 4 changes most
    tuned[2, 4, 0] = 0.5  # Chinese gains one high-frequency expert
    diff = analysis.instruction_tuning_diff(base, tuned, LANGS)
    assert list(diff.per_layer.columns) == ["language", "layer", "mean_abs_change"]
    assert diff.top_layer.set_index("language").layer.to_dict() == {"en": 4, "fr": 4, "zh": 4}
    overlap = diff.overlap.set_index("language")
    assert overlap.loc["zh", "n_tuned"] == 1 and overlap.loc["zh", "jaccard"] == 0.0
    assert np.isnan(overlap.loc["en", "jaccard"])  # no high-frequency expert before or after
    with pytest.raises(ValueError, match="different models or n_experts"):
        analysis.instruction_tuning_diff(base, tuned[:, :, :4], LANGS)


def test_single_language_errors():
    with pytest.raises(ValueError, match="at least 2 languages"):
        analysis.shared_experts(_base(1))
    with pytest.raises(ValueError, match="at least 2 languages"):
        analysis.expert_counts_per_layer(_base(1), ["en"])
    with pytest.raises(ValueError, match="2 language names for 3"):
        analysis.expert_counts_per_layer(_base(3), ["en", "fr"])
