"""Similarity matrices, clustering, the permutation test and the bootstrap on hand-made frequencies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy

from babel_utils.analyse import similarity as sim
from babel_utils.core.languages import LANGUAGES, PAPER_LANGUAGES

PAPER = list(PAPER_LANGUAGES)  # en fr es pt hi ur bn ar zh


def _random_F(n_lang: int, seed: int = 0, shape=(4, 16)) -> np.ndarray:
    return np.random.default_rng(seed).random((n_lang, *shape)) * 0.1


def test_identical_languages():
    f = _random_F(1)[0]
    F = np.stack([f, f])
    langs = ["en", "fr"]
    assert np.allclose(sim.pearson_matrix(F, langs).to_numpy(), 1.0)
    assert np.allclose(sim.kl_matrix(F, langs).to_numpy(), 0.0, atol=1e-12)
    assert np.allclose(sim.euclidean_matrix(F, langs).to_numpy(), 0.0)
    m = sim.euclidean_matrix(F, langs)
    assert list(m.index) == langs and list(m.columns) == langs


def test_known_values():
    F = np.array([[[0.1, 0.4]], [[0.4, 0.0]]])  # [2 languages, 1 layer, 2 experts]
    langs = ["en", "zh"]
    assert sim.euclidean_matrix(F, langs).loc["en", "zh"] == pytest.approx(0.5)
    kl = sim.kl_matrix(F, langs, smoothing=1e-6)
    p, q = (F.reshape(2, -1) + 1e-6)
    assert kl.loc["en", "zh"] == pytest.approx(entropy(p / p.sum(), q / q.sum()))
    assert kl.loc["zh", "en"] == pytest.approx(entropy(q / q.sum(), p / p.sum()))
    sym = sim.kl_matrix(F, langs, symmetric=True)
    assert sym.loc["en", "zh"] == pytest.approx((kl.loc["en", "zh"] + kl.loc["zh", "en"]) / 2)
    assert sim.pearson_matrix(F, langs).loc["en", "zh"] == pytest.approx(-1.0)


def test_per_layer_similarity_pairs():
    F = _random_F(3)
    langs = ["en", "fr", "ar"]
    df = sim.per_layer_similarity(F, langs, "pearson")
    assert list(df.columns) == ["layer", "lang_a", "lang_b", "metric", "value"]
    assert len(df) == 4 * 3
    row = df[(df.layer == 2) & (df.lang_a == "en") & (df.lang_b == "ar")].value.item()
    assert row == pytest.approx(np.corrcoef(F[0, 2], F[2, 2])[0, 1])
    assert len(sim.per_layer_similarity(F, langs, "kl")) == 4 * 6  # both orders
    with pytest.raises(ValueError, match="Unknown similarity metric .cosine.; known: euclidean, kl, kl_symmetric, pearson"):
        sim.per_layer_similarity(F, langs, "cosine")


def test_dendrogram_groups_close_languages():
    F = np.concatenate([np.full((2, 2, 4), 0.1), np.full((2, 2, 4), 0.5)])
    F += np.random.default_rng(0).normal(0, 1e-3, F.shape)
    langs = ["en", "ar", "fr", "zh"]
    Z, leaves = sim.dendrogram_linkage(sim.euclidean_matrix(F, langs))
    assert Z.shape == (3, 4) and sorted(leaves) == sorted(langs)
    assert {frozenset(leaves[:2]), frozenset(leaves[2:])} == {frozenset({"en", "ar"}), frozenset({"fr", "zh"})}
    with pytest.raises(ValueError, match="similarity, not a distance"):
        sim.dendrogram_linkage(sim.pearson_matrix(F, langs))
    with pytest.raises(ValueError, match="not symmetric"):
        sim.dendrogram_linkage(sim.kl_matrix(F * np.arange(1, 5)[None, None], langs))
    pearson_distance = sim.as_distance(sim.pearson_matrix(F, langs), "pearson")
    assert sim.dendrogram_linkage(pearson_distance)[0].shape == (3, 4)


def _genus_structured_F(seed: int = 0) -> np.ndarray:
    """Languages of one genus close together, genera far apart."""
    rng = np.random.default_rng(seed)
    genera = sorted({LANGUAGES[c].genus for c in PAPER})
    centre = {g: rng.random((3, 16)) * 0.1 for g in genera}
    return np.stack([centre[LANGUAGES[c].genus] + rng.normal(0, 0.002, (3, 16)) for c in PAPER])


def test_permutation_test_finds_planted_family_structure():
    D = sim.euclidean_matrix(_genus_structured_F(), PAPER)
    result = sim.group_permutation_test(D, n_permutations=2000, seed=0)
    assert result.n_same_genus_pairs == 6  # fr-es, fr-pt, es-pt, hi-ur, hi-bn, ur-bn
    assert result.n_cross_family_pairs == 15  # 7 Indo-European x (ar, zh) + ar-zh
    assert result.observed > 0 and result.p_value < 0.05
    assert result.null.shape == (2000,)


def test_permutation_test_in_chunks_equals_all_permutations_at_once(monkeypatch):
    """Permutations are taken in chunks (at 500 languages all at once would need 20 GB): the same null."""
    D = sim.euclidean_matrix(_genus_structured_F(), PAPER)
    whole = sim.group_permutation_test(D, n_permutations=500, seed=4)
    monkeypatch.setattr(sim, "PAIR_VALUES_PER_CHUNK", 100)  # 36 pairs: 2 permutations a chunk
    chunked = sim.group_permutation_test(D, n_permutations=500, seed=4)
    np.testing.assert_array_equal(chunked.null, whole.null)
    assert chunked.p_value == whole.p_value


def test_permutation_test_structureless_table():
    D = sim.euclidean_matrix(_random_F(9, seed=3), PAPER)
    result = sim.group_permutation_test(D, n_permutations=2000, seed=0)
    assert result.p_value > 0.1


def test_permutation_test_with_explicit_groups_and_errors():
    langs = ["en", "fr", "ar"]
    D = sim.euclidean_matrix(_random_F(3), langs)
    with pytest.raises(ValueError, match="needs at least two languages of one genus and two families"):
        sim.group_permutation_test(D, n_permutations=10)
    groups = {"en": "g1", "fr": "g1", "ar": "g2"}
    families = {"en": "f1", "fr": "f1", "ar": "f2"}
    result = sim.group_permutation_test(D, groups, families, n_permutations=50, seed=1)
    assert result.n_same_genus_pairs == 1 and result.n_cross_family_pairs == 2
    assert 1 / 51 <= result.p_value <= 1.0
    with pytest.raises(ValueError, match="No genus given"):
        sim.group_permutation_test(D, {"en": "g1"}, families, n_permutations=10)


def test_single_language_errors():
    F = _random_F(1)
    for fn in (sim.euclidean_matrix, sim.kl_matrix, sim.pearson_matrix):
        with pytest.raises(ValueError, match="needs at least two"):
            fn(F, ["en"])
    with pytest.raises(ValueError, match="needs at least two"):
        sim.group_permutation_test(pd.DataFrame([[0.0]], index=["en"], columns=["en"]))
    with pytest.raises(ValueError, match="2 language names for 1"):
        sim.euclidean_matrix(F, ["en", "fr"])


def test_bootstrap_matrix():
    rng = np.random.default_rng(0)
    counts = {lang: rng.integers(0, 50, (20, 3, 8)) for lang in ["en", "fr", "zh"]}
    tokens = {lang: np.full(20, 100) for lang in counts}
    mean, low, high = sim.bootstrap_matrix(counts, tokens, "euclidean", n_bootstrap=50, seed=0)
    assert list(mean.index) == ["en", "fr", "zh"] and mean.shape == (3, 3)
    assert (low.to_numpy() <= mean.to_numpy() + 1e-12).all() and (mean.to_numpy() <= high.to_numpy() + 1e-12).all()
    assert np.allclose(np.diag(mean), 0.0) and (high.to_numpy() > low.to_numpy()).sum() == 6
    # identical chunks: every resample gives the point estimate
    same = {lang: np.repeat(c[:1], 5, axis=0) for lang, c in counts.items()}
    F = np.stack([c[0] / 100 for c in counts.values()])
    m, lo, hi = sim.bootstrap_matrix(same, {k: np.full(5, 100) for k in same}, "kl_symmetric", n_bootstrap=5)
    expected = sim.kl_matrix(F, list(counts), symmetric=True).to_numpy()
    assert np.allclose(lo, expected) and np.allclose(hi, expected) and np.allclose(m, expected)
    with pytest.raises(ValueError, match="different"):
        sim.bootstrap_matrix({"en": counts["en"], "fr": counts["fr"][:, :, :4]}, tokens, "euclidean", 5)
    with pytest.raises(ValueError, match="needs at least two"):
        sim.bootstrap_matrix({"en": counts["en"]}, tokens, "euclidean", 5)


def test_sentences_list_a_dozen_names_and_count_the_rest():
    langs = list(LANGUAGES)[:300]
    D = sim.euclidean_matrix(np.random.default_rng(5).random((300, 3, 8)), langs)
    text = sim.describe_similarity(D, "euclidean") + sim.describe_script_vs_family(D)
    assert " more" in text and len(text) < 3000  # listing every language or pair would run to megabytes at 500


def test_a_pair_label_splits_where_both_sides_are_codes():
    assert sim._split_pair("pt-BR-es") == ("pt-BR", "es")
    assert sim._split_pair("zh-beijing-zh-harbin") == ("zh-beijing", "zh-harbin")
    assert sim._split_pair("es-pt") == ("es", "pt")
