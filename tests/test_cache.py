"""Stage cache: same parameters reuse, a changed parameter recomputes, nothing half-written survives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from babel_utils.core import cache, results
from babel_utils.core.config import BabelConfig


def test_same_parameters_compute_once_and_reload_identically():
    cfg, calls = BabelConfig(), []

    def compute():
        calls.append(1)
        return {"labels": np.arange(6).reshape(2, 3), "table": pd.DataFrame({"a": [1, 2]}), "info": {"n": 3}}

    first = cache.cached(cfg, "split", compute)
    second = cache.cached(cfg, "split", compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["labels"], second["labels"])
    pd.testing.assert_frame_equal(first["table"], second["table"])
    assert first["info"] == second["info"] == {"n": 3}


def test_changed_parameter_recomputes_and_unrelated_one_does_not():
    base = BabelConfig()
    assert cache.stage_key(base, "split") != cache.stage_key(base.replace(n_experts=128), "split")
    assert cache.stage_key(base, "split") == cache.stage_key(base.replace(top_fraction=0.2), "split")
    assert cache.stage_key(base, "record") != cache.stage_key(base.replace(top_fraction=0.2), "record")
    assert cache.stage_key(base, "record", language="en") != cache.stage_key(base, "record", language="fr")


def test_sidecar_holds_config_versions_and_commit():
    cfg = BabelConfig(n_experts=128)
    cache.cached(cfg, "split", lambda: {"labels": np.zeros(3)})
    meta = results.read_json(cache.stage_dir(cfg, "split") / "meta.json")
    assert meta["config"]["n_experts"] == 128 and meta["params"]["n_experts"] == 128
    assert "torch" in meta["versions"] and meta["git_commit"] and meta["stage"] == "split"


def test_interrupted_stage_leaves_no_result_and_resumes():
    cfg = BabelConfig()

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.cached(cfg, "split", crash)
    assert not (cache.stage_dir(cfg, "split") / "meta.json").exists()
    assert cache.cached(cfg, "split", lambda: {"x": np.ones(2)})["x"].tolist() == [1.0, 1.0]


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path):
    target = tmp_path / "t.parquet"

    def boom(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        results.atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []


def test_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="Unknown stage"):
        cache.stage_key(BabelConfig(), "nope")


def test_an_upstream_result_made_with_other_parameters_stops_a_downstream_read(tmp_path, caplog):
    from babel_utils.core import cache, results
    from babel_utils.core.config import BabelConfig

    made = BabelConfig(top_fraction=0.1)
    results.save(tmp_path, "frequencies", pd.DataFrame({"a": [1]}), made_with=cache.provenance(made, "frequencies"))
    cache.check_provenance(tmp_path, made, "frequencies")  # the same config passes
    cache.check_provenance(tmp_path, made.replace(n_permutations=5), "frequencies")  # not a recording field
    with pytest.raises(ValueError, match=r"made by 02_record with top_fraction=0\.1.*has top_fraction=0\.2.*"
                                         r"Rerun 02_record"):
        cache.check_provenance(tmp_path, made.replace(top_fraction=0.2), "frequencies")
    results.save(tmp_path, "frequencies", pd.DataFrame({"a": [2]}))  # saved again without a record: none stays
    assert results.made_with(tmp_path, "frequencies") is None
    with caplog.at_level("WARNING"):
        cache.check_provenance(tmp_path, made.replace(top_fraction=0.2), "frequencies")
    assert "records no parameters" in caplog.text


def test_every_field_lies_in_exactly_one_section_and_the_config_is_their_union():
    from dataclasses import fields

    from babel_utils.core.config import FIELD_NAMES, SECTIONS

    names = [f.name for section in SECTIONS.values() for f in fields(section)]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(f.name for f in fields(BabelConfig)) == sorted(FIELD_NAMES)
    assert list(BabelConfig().to_dict()) == list(FIELD_NAMES)  # section by section


def test_stage_keys_are_the_fields_of_the_sections_each_stage_reads():
    from babel_utils.core.config import section_fields

    cfg = BabelConfig()
    for stage, sections in cache.STAGE_READS.items():
        assert set(cache.stage_params(cfg, stage)) == set(section_fields(*sections)), stage
    # a field of a read section changes the key; one of a section the stage does not read does not
    assert cache.stage_key(cfg, "split") != cache.stage_key(cfg.replace(dtype="bfloat16"), "split")
    assert cache.stage_key(cfg, "record") != cache.stage_key(cfg.replace(text_column="body"), "record")
    assert cache.stage_key(cfg, "record") == cache.stage_key(cfg.replace(heldout_articles=(25, 30)), "record")
    assert cache.stage_key(cfg, "tuning") == cache.stage_key(cfg.replace(top_fraction=0.3), "tuning")
    assert cache.stage_key(cfg, "pruning") != cache.stage_key(cfg.replace(high_freq_threshold=0.1), "pruning")
    assert cache.stage_key(cfg, "pruning") == cache.stage_key(cfg.replace(overlap_ratio=0.5), "pruning")
    with pytest.raises(ValueError, match="Unknown config section"):
        cache.section_fields("nope")


def test_a_notebook_knob_is_a_field_of_one_of_its_sections():
    from babel_utils.core.config import NOTEBOOK_KNOBS, NOTEBOOK_SECTIONS, section_fields

    assert NOTEBOOK_KNOBS["02"] == section_fields("record", "scoring")
    owned = [s for sections in NOTEBOOK_SECTIONS.values() for s in sections]
    assert len(owned) == len(set(owned))  # a section belongs to at most one notebook


def test_the_evaluation_table_records_every_section_an_evaluation_reads():
    from babel_utils.evaluate import tasks
    assert set(cache.STAGE_READS["eval"]) == {section for task in tasks.TASKS.values() for section in task.reads}
