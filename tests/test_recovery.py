"""Cluster recovery (ARI against permutations): the formula against sklearn, planted structure found, none
found in shuffled labels, and the sentences follow the p-values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from babel_utils.analyse import recovery
from babel_utils.analyse.similarity import as_distance, similarity_matrix


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_rand_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth, clusters = rng.integers(0, 3, (4, 12)), rng.integers(0, 4, 12)
    got = recovery.adjusted_rand(truth, clusters)
    assert np.allclose(got, [adjusted_rand_score(t, clusters) for t in truth])


def _tree_frequencies(groups, noise, seed=0, layers=3, experts=32):
    """Languages of one group share a group profile (plus a little noise): a two-level tree."""
    rng = np.random.default_rng(seed)
    profiles = {g: rng.random((layers, experts)) for g in sorted(set(groups))}
    return np.stack([profiles[g] + noise * rng.random((layers, experts)) for g in groups])


def _distance(F, langs):
    return as_distance(similarity_matrix(F, langs, "pearson"), "pearson")


def test_a_planted_tree_is_recovered_and_shuffled_labels_are_not():
    langs = [f"l{i}" for i in range(12)]
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    F = _tree_frequencies(groups, noise=0.1)
    found = recovery.recovery(_distance(F, langs), groups, "average", 2000, seed=1)
    assert found["ari"] == 1.0 and found["p_value"] < 0.01 and abs(found["null_mean"]) < 0.1
    shuffled = list(np.random.default_rng(3).permutation(groups))
    null = recovery.recovery(_distance(F, langs), shuffled, "average", 2000, seed=1)
    assert null["ari"] < 0.5 and null["p_value"] > 0.05


def test_per_layer_recovery_finds_the_layer_that_carries_the_groups():
    langs = [f"l{i}" for i in range(9)]
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    rng = np.random.default_rng(0)
    F = rng.random((9, 3, 16))
    F[:, 1] = _tree_frequencies(groups, noise=0.05, layers=1, experts=16)[:, 0]  # only layer 1 is tree-shaped
    planted = {"planted": dict(zip(langs, groups)).__getitem__}
    table = recovery.recovery_per_layer(F, langs, "pearson", "average", 1000, seed=0, by=planted)
    by_layer = table.set_index("layer")
    assert by_layer.loc[1, "ari"] == 1.0 and by_layer.loc[1, "p_value"] < 0.01
    assert (by_layer.loc[[0, 2], "p_value"] > 0.05).all() and (by_layer.loc[[0, 2], "ari"] < 0.5).all()


def test_every_grouping_of_the_paper_languages_and_sentences_follow_p(monkeypatch):
    langs = ["en", "fr", "es", "pt", "hi", "ur", "bn", "ar", "zh"]
    genus = [recovery.groupings()["genus"](c) for c in langs]
    F = _tree_frequencies(genus, noise=0.05)
    whole = recovery.recovery_table(_distance(F, langs), "average", 500, seed=0)
    assert whole["grouping"].tolist() == list(recovery.groupings())
    assert whole.set_index("grouping").loc["genus", "ari"] == 1.0
    per_layer = recovery.recovery_per_layer(F, langs, "pearson", "average", 500, seed=0)
    text = recovery.describe_recovery(whole, per_layer, alpha=0.05)
    assert "genus (5 groups): ARI 1.00" in text and "recovered beyond chance" in text
    noise = recovery.recovery_table(_distance(np.random.default_rng(5).random((9, 3, 32)), langs), "average", 500)
    sentence = recovery.describe_recovery(noise, per_layer.iloc[:0], alpha=0.05)
    assert all(("not distinguishable" in part) or (p < 0.05)
               for part, p in zip(sentence.split("; "), noise["p_value"]))
