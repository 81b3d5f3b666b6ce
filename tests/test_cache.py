"""Stage cache: same parameters reuse, a changed parameter recomputes, nothing half-written survives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from babel_utils import cache, results
from babel_utils.config import BabelConfig


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
    from babel_utils import cache, results
    from babel_utils.config import BabelConfig

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
