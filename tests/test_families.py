"""Shared and own experts per family, against random groups of as many languages (babel_utils/analyse/families.py)."""

from __future__ import annotations

import numpy as np
import pytest

from babel_utils.analyse import families
from babel_utils.core.languages import select

# 6 languages of each of three families, 4 layers x 16 experts
FAMILY_CODES = {f: [r.code for r in select(family=f)[:6]] for f in ("Indo-European", "Atlantic-Congo", "Austronesian")}
CODES = [c for codes in FAMILY_CODES.values() for c in codes]


def _plain_counts(high: np.ndarray, inside: list[int]) -> tuple[int, int]:
    """Shared and own experts of one group, written out expert by expert."""
    outside = [i for i in range(len(high)) if i not in inside]
    shared = own = 0
    for e in range(high.shape[1]):
        if all(high[i, e] for i in inside):
            shared += 1
        if any(high[i, e] for i in inside) and not any(high[i, e] for i in outside):
            own += 1
    return shared, own


def _planted(seed: int = 0) -> np.ndarray:
    """Background frequencies around the threshold, and per family 5 experts high in all its languages only."""
    rng = np.random.default_rng(seed)
    F = rng.uniform(0.0, 0.1, size=(len(CODES), 4, 16))
    for k, codes in enumerate(FAMILY_CODES.values()):
        rows = [CODES.index(c) for c in codes]
        F[:, 1, 5 * k:5 * k + 5] = 0.01
        F[np.ix_(rows, [1], range(5 * k, 5 * k + 5))] = 0.5
    return F


def test_counts_equal_a_plain_count_of_each_family():
    F = _planted()
    table = families.family_summary(F, CODES, 0.05, samples=50).set_index("family")
    high = (F >= 0.05).reshape(len(CODES), -1)
    for family, codes in FAMILY_CODES.items():
        shared, own = _plain_counts(high, [CODES.index(c) for c in codes])
        assert (table.loc[family, "shared"], table.loc[family, "own"]) == (shared, own)
        assert table.loc[family, "n_languages"] == 6
        assert table.loc[family, "high_frequency"] == pytest.approx(high[[CODES.index(c) for c in codes]].sum(1).mean())


def test_planted_family_experts_are_found_and_shuffled_labels_give_none():
    planted = families.family_summary(_planted(), CODES, 0.05, samples=500, seed=1)
    assert (planted["own_p"] < 0.01).all() and (planted["own"] >= 5).all()
    assert (planted["shared"] > planted["shared_random"]).all() and (planted["shared_p"] < 0.05).all()
    text = families.describe_families(planted, 0.05)
    assert text.startswith("3 of 3 families have more shared experts") and "3 of 3 families have more own" in text
    # the same frequencies with the languages shuffled across families: the planted groups are no family now
    order = np.random.default_rng(2).permutation(len(CODES))
    null = families.family_summary(_planted()[order], CODES, 0.05, samples=500, seed=1)
    assert (null["own_p"] > 0.05).all()
    assert "0 of 3 families have more own experts" in families.describe_families(null, 0.05)


def test_the_same_seed_gives_the_same_table_and_bad_input_is_named():
    F = _planted()
    a = families.family_summary(F, CODES, 0.05, samples=100, seed=3)
    assert a.equals(families.family_summary(F, CODES, 0.05, samples=100, seed=3))
    assert families.family_summary(F, CODES, 0.05, min_languages=7).empty  # no family has 7
    assert "nothing to summarise" in families.describe_families(a.iloc[:0], 0.05)
    with pytest.raises(ValueError, match="Unknown kind of language group .branch.; known: family, genus, script"):
        families.family_summary(F, CODES, 0.05, kind="branch")
    with pytest.raises(ValueError, match="languages"):
        families.family_summary(F[:3], CODES, 0.05)
    by_genus = families.family_summary(F, CODES, 0.05, kind="genus", samples=20)
    assert "genus" in by_genus.columns
