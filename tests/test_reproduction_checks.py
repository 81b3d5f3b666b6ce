"""The reproduction checks pass on the same results and fail on a real change (a count, a label, a verdict)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from babel_utils.core import results
from babel_utils.record.counting import LanguageCounts, frequency_table
from babel_utils.run import reproduction


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


# ------------------------------------------------------------------------------ two real CPUs, one config

FIXTURES = Path(__file__).parent / "fixtures" / "reproduction"


def _checks(name: str) -> dict:
    with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as fh:
        return json.load(fh)["checks"]


def _relative_spread(reference: dict, found: dict, per_token: bool) -> float:
    ref, new = reference["bits per byte"], found["bits per byte"]["values"]
    return max(abs(new[k] - ref[k]) / ref[k] for k in ref if reproduction.chosen_per_token(k) == per_token)


def test_an_intel_cpu_with_amx_reproduces_the_amd_reference():
    """The run that failed the old 1e-4 tolerance on a CPU of another vendor passes every check now."""
    reference, intel = _checks("amd-reference-dfac74e.json.gz"), _checks("intel-xeon-amx-2026-12-07.json.gz")
    assert reproduction.compare(reference, intel) == []
    # the tolerances were sized from this spread: the bfloat16 head's 2.1e-4 (unpruned Hindi) and dynamic top-k's
    # 1.1e-3 (Bengali), both beyond the old 1e-4 and inside their new tolerances
    assert 1e-4 < _relative_spread(reference, intel, per_token=False) < reproduction.BPB_REL_TOL["bfloat16"]
    assert 1e-3 < _relative_spread(reference, intel, per_token=True) < reproduction.PER_TOKEN_BPB_REL_TOL
    # labels and token counts identical, six counts one apart
    assert intel["labels"] == reference["labels"] and intel["tokens counted"] == reference["tokens counted"]
    differ = sum(a != b for lang in reference["counts"]
                 for a, b in zip(reference["counts"][lang], intel["counts"][lang]))
    assert differ == 6


def _bits(values: dict, head: str = "float32") -> dict:
    return {"head": head, "values": values}


def test_bits_per_byte_tolerance_follows_the_head_and_the_method():
    reference = _bits({"en dense": 0.6, "en sorting@0.1": 0.7, "en dynamic@top192": 0.8})
    compare = reproduction.bits_per_byte_within
    assert compare(reference, _bits({"en dense": 0.6 * (1 + 1e-5), "en sorting@0.1": 0.7,
                                     "en dynamic@top192": 0.8 * (1 + 4e-3)})) is None
    assert "en sorting@0.1" in compare(reference, _bits({"en dense": 0.6, "en sorting@0.1": 0.7 * (1 + 5e-5),
                                                         "en dynamic@top192": 0.8}))
    assert "en dynamic@top192" in compare(reference, _bits({"en dense": 0.6, "en sorting@0.1": 0.7,
                                                            "en dynamic@top192": 0.8 * (1 + 6e-3)}))
    # another head: never compared within a tolerance
    assert "arithmetic differs: float32 -> bfloat16" in compare(reference, _bits(reference["values"], "bfloat16"))
    # a reference written before the head was recorded is a bfloat16 one
    assert compare(reference["values"], _bits(reference["values"], "bfloat16")) is None
    assert "keys differ" in compare(reference, _bits({"en dense": 0.6}))


def test_which_masks_choose_experts_per_token():
    assert reproduction.chosen_per_token("en dynamic@top192")
    assert not any(reproduction.chosen_per_token(k) for k in ("en dense", "pt-BR random@0.1#2", "hi threshold",
                                                              "zh layerwise@0.5"))
