"""A cached result never outlives the code that made it: a stage's cache key holds the fingerprint of the code the
stage runs (core/fingerprint.py), and a run folder made by other code says so when a later notebook reads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from babel_utils.core import cache, fingerprint, results
from babel_utils.core.config import BabelConfig
from babel_utils.prune import masks as pruning
from babel_utils.prune import methods
from babel_utils.run import stages


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the babel_utils package to edit, and a function that edits one of its modules."""
    root = tmp_path / "src" / fingerprint.PACKAGE
    shutil.copytree(fingerprint.PACKAGE_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))

    def edit(module: str, old: str, new: str) -> None:
        path = root.joinpath(*module.split(".")).with_suffix(".py")
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        fingerprint.code_fingerprint.cache_clear()

    yield root, edit
    fingerprint.code_fingerprint.cache_clear()


COUNTING_BUG = ("return math.ceil(round(top_fraction * pool, 9))", "return math.ceil(round(top_fraction * pool, 9)) + 1")


def test_an_edit_of_the_code_renews_the_stages_that_run_it(package_copy):
    root, edit = package_copy
    before = {stage: fingerprint.code_fingerprint(stage, root) for stage in fingerprint.STAGE_CODE}
    assert before == {stage: fingerprint.code_fingerprint(stage) for stage in fingerprint.STAGE_CODE}
    edit("record.counting", *COUNTING_BUG)
    after = {stage: fingerprint.code_fingerprint(stage, root) for stage in fingerprint.STAGE_CODE}
    # counting is run by the recording, the evaluations (dynamic top-k scores experts) and the split's kind table
    assert {stage for stage in before if before[stage] != after[stage]} >= {"record", "eval", "pruning"}
    edit("evaluate.tasks", "if check_task(task).has_language(cfg, lang)]", "if check_task(task).has_language(cfg, lang)][:]")
    last = {stage: fingerprint.code_fingerprint(stage, root) for stage in fingerprint.STAGE_CODE}
    assert {stage for stage in last if last[stage] != after[stage]} == {"eval"}  # only the evaluations run tasks


def test_comments_docstrings_and_modules_a_stage_never_runs_keep_its_key(package_copy):
    root, edit = package_copy
    before = {stage: fingerprint.code_fingerprint(stage, root) for stage in fingerprint.STAGE_CODE}
    edit("record.counting", '"""Flat (layer * E + expert) indices', '"""Flat indices (layer * E + expert)')
    edit("record.counting", "# round() first:", "# round() first (a comment changed):")
    edit("figures.style", "import ", "import math\nimport ")  # a module no stage runs
    assert before == {stage: fingerprint.code_fingerprint(stage, root) for stage in fingerprint.STAGE_CODE}
    eval_modules = fingerprint.stage_modules("eval")
    assert "figures.style" not in eval_modules and "models.lm_head" in eval_modules


def test_library_versions_are_part_of_the_fingerprint(monkeypatch):
    before = fingerprint.code_fingerprint("split")
    fingerprint.code_fingerprint.cache_clear()
    monkeypatch.setattr(fingerprint, "library_versions", lambda: {"torch": "9.9.9"})
    assert fingerprint.code_fingerprint("split") != before
    fingerprint.code_fingerprint.cache_clear()


def test_imports_are_followed_in_any_form(tmp_path):
    pkg = tmp_path / fingerprint.PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .inner import thing\n")
    (pkg / "sub" / "inner.py").write_text("from ..leaf import x\nthing = x\n")
    (pkg / "leaf.py").write_text("x = 1\n")
    (pkg / "lazy.py").write_text("def f():\n    from . import leaf\n    import babel_utils.other\n")
    (pkg / "other.py").write_text("")
    (pkg / "top.py").write_text("from .sub import inner\nfrom babel_utils import lazy\n")
    found = fingerprint._imported("top", pkg)
    assert found == {"sub", "sub.inner", "", "lazy"}
    assert fingerprint._imported("sub.inner", pkg) == {"leaf"}
    assert fingerprint._imported("lazy", pkg) == {"", "leaf", "other"}


RECORD_SCRIPT = """
import hashlib, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import babel_utils
from babel_utils.run import stages
from babel_utils.core.config import BabelConfig
from babel_utils.models.loading import load_model
cfg = BabelConfig(model="tiny-llama", device="cpu", languages=("en",), n_experts=16, kmeans_iters=2,
                  kmeans_swap_rounds=0)
model, tokenizer = load_model(cfg.model, device="cpu")
labels, _ = stages.split(cfg, model)
for _ in range(int(sys.argv[1])):  # the second time in one process reads the cache on disk, as a new process would
    counts = stages.record_language(cfg, model, tokenizer, labels, "en", 128)
    print(json.dumps({"package": babel_utils.__file__, "selected": int(counts.counts.sum()),
                      "tokens": int(counts.n_tokens)}))
"""


def _record(src: Path, cache_dir: Path, times: int = 1) -> tuple[list[dict], str]:
    """Record a tiny model's counts `times` with the package at `src` in a fresh process: the results, the log."""
    env = {**os.environ, "PYTHONPATH": str(src), "BABEL_CACHE": str(cache_dir), "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", RECORD_SCRIPT, str(times)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=src)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-times:]], done.stderr


def test_a_result_changing_edit_of_the_counting_code_recomputes_the_recording(package_copy, tmp_path):
    root, edit = package_copy
    (first, again), log = _record(root.parent, tmp_path / "cache", times=2)
    assert first["package"].startswith(str(root))
    assert log.count("record: computing") == 1 and "record: cached" in log and again == first
    edit("record.counting", *COUNTING_BUG)  # one more expert selected per token
    (fixed,), log = _record(root.parent, tmp_path / "cache")
    assert "record: computing" in log
    assert fixed["selected"] == first["selected"] + first["tokens"]


def test_a_new_pruning_method_appears_in_masks_read_back_from_the_cache(monkeypatch):
    cfg = BabelConfig(languages=("en", "fr"), prune_ratios=(0.25,), random_seeds=(0,))
    rng = np.random.default_rng(0)
    F = {lang: rng.random((3, 8)) for lang in cfg.languages}
    levels = {lang: np.full(3, 1 / 3) for lang in cfg.languages}
    before = {s.method for s in stages.pruning_masks(cfg, F, levels)}

    def reverse(lang, f, levels_, cfg_):
        return [pruning.MaskSpec(lang, "reverse", r, None, pruning.sorting_mask(1.0 - f, r, cfg_.prune_layer_mode))
                for r in cfg_.prune_ratios]

    monkeypatch.setitem(methods.METHODS, "reverse", methods.Method("reverse", reverse, colour="C5"))
    after = {s.method for s in stages.pruning_masks(cfg, F, levels)}
    assert "reverse" not in before and after == before | {"reverse"}


def test_a_run_folder_made_by_other_code_says_so(tmp_path, monkeypatch):
    cfg = BabelConfig()
    results.save(tmp_path, "labels", np.zeros((2, 4)), made_with=cache.provenance(cfg, "labels"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.check_provenance(tmp_path, cfg, "labels")  # made by this code: silent
    record = results.made_with(tmp_path, "labels")
    results.save(tmp_path, "labels", np.zeros((2, 4)), made_with={**record, "code": "0123456789abcdef"})
    with pytest.warns(cache.OtherCodeWarning, match=r"labels in .* was made by other code .* Rerun 01_split"):
        cache.check_provenance(tmp_path, cfg, "labels")
    # a record from before code was recorded is read as it always was
    results.save(tmp_path, "frequencies", pd.DataFrame({"a": [1]}),
                 made_with={k: v for k, v in cache.provenance(cfg, "frequencies").items() if k != "code"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.check_provenance(tmp_path, cfg, "frequencies")


def test_every_cached_stage_names_its_code():
    assert set(cache.STAGE_READS) <= set(fingerprint.STAGE_CODE)
    for stage, roots in fingerprint.STAGE_CODE.items():
        assert set(roots) <= set(fingerprint.stage_modules(stage)), stage
