"""The reproduction checks pass on the same results and fail on a real change (a count, a label, a verdict)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from babel_utils import reproduction, results
from babel_utils.counting import LanguageCounts, frequency_table


def fake_run(folder, counts_shift: int = 0, label_swap: bool = False):
    """Results of notebooks 01 and 02 for two languages, 3 layers x 4 experts."""
    rng = np.random.default_rng(0)
    labels = np.stack([rng.permutation(np.arange(16) % 4) for _ in range(3)])
    if label_swap:
        first, second = np.flatnonzero(labels[1] == 0)[0], np.flatnonzero(labels[1] == 1)[0]
        labels[1, [first, second]] = labels[1, [second, first]]
    results.save(folder, "labels", labels)
    results.save(folder, "tokens", pd.DataFrame({"language": ["en", "fr"], "tokens_counted": [100, 100]}))
    counts = {lang: LanguageCounts(rng.integers(0, 100, (3, 4)), 100, np.zeros((0, 3, 4)), np.zeros(0))
              for lang in ("en", "fr")}
    counts["fr"].counts[2, 3] += counts_shift
    results.save(folder, "frequencies", frequency_table(counts))
    return folder


def test_the_same_results_reproduce(tmp_path):
    ref = reproduction.summarise(fake_run(tmp_path / "a"), ["01", "02"])
    assert reproduction.compare(ref, reproduction.summarise(fake_run(tmp_path / "b"), ["01", "02"]),
                                ["01", "02"]) == []


def test_a_count_beyond_the_tolerance_fails(tmp_path):
    ref = reproduction.summarise(fake_run(tmp_path / "a"), ["02"])
    small = reproduction.summarise(fake_run(tmp_path / "b", counts_shift=reproduction.MAX_COUNT_DIFF), ["02"])
    large = reproduction.summarise(fake_run(tmp_path / "c", counts_shift=reproduction.MAX_COUNT_DIFF + 1), ["02"])
    assert reproduction.compare(ref, small, ["02"]) == []
    failures = reproduction.compare(ref, large, ["02"])
    assert len(failures) == 1 and failures[0].startswith("counts (02") and "fr" in failures[0]


def test_one_changed_label_fails(tmp_path):
    ref = reproduction.summarise(fake_run(tmp_path / "a"), ["01"])
    failures = reproduction.compare(ref, reproduction.summarise(fake_run(tmp_path / "b", label_swap=True), ["01"]),
                                    ["01"])
    assert len(failures) == 1 and "labels" in failures[0] and "1:" in failures[0]


def test_comparisons():
    within = reproduction.numbers_within(abs_tol=1.0, rel_tol=0.1)
    assert within({"a": 10.0}, {"a": 11.9}) is None
    assert "a" in within({"a": 10.0}, {"a": 12.1})
    assert "keys differ" in within({"a": 1.0}, {"b": 1.0})
    assert reproduction.exact({"x": 1, "y": 2}, {"x": 1, "y": 3}).startswith("1 entries differ, e.g. y")
    assert reproduction.exact("deep", "deep") is None


def test_a_missing_reference_value_is_named(tmp_path):
    found = reproduction.summarise(fake_run(tmp_path / "a"), ["01"])
    assert "no reference value" in reproduction.compare({}, found, ["01"])[0]


def test_every_check_has_a_tolerance_and_a_known_notebook():
    for check in reproduction.CHECKS:
        assert check.tolerance and check.notebook in {f"0{i}" for i in range(1, 9)}
