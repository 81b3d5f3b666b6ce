"""Notebook 08's comparisons (run/pruning_eval.py) and 07's mask tables as functions, on a tiny model: every cell
of 07 and 08 is one of these calls, so each is tested here without papermill."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from babel_utils import figures
from babel_utils.core.config import BabelConfig
from babel_utils.evaluate import comparisons, metrics, tasks
from babel_utils.kinds.expert_kinds import kind_of
from babel_utils.models.loading import load_model
from babel_utils.prune import masks as pruning
from babel_utils.prune import methods
from babel_utils.record import frequencies
from babel_utils.run import pruning_eval, stages

FIXTURES = Path(__file__).parent / "fixtures" / "xcsqa"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny Llama, its split, frequencies of three languages and every mask of 07, on a small config."""
    folder = tmp_path_factory.mktemp("mgsm")
    (folder / "mgsm_en.tsv").write_text("What is 2 + 2?\t4\nTom has 3 apples and buys 4. How many?\t7\n",
                                        encoding="utf-8")
    cfg = BabelConfig(model="tiny-llama", device="cpu", languages=("en", "fr", "hi"), n_experts=16, kmeans_iters=2,
                      kmeans_swap_rounds=0, prune_ratios=(0.25, 0.5), random_seeds=(0, 1), eval_max_tokens=64,
                      seq_len=32, batch_size=4, eval_bootstrap=50, mgsm_dir=str(folder), mgsm_n=2, mgsm_generate_n=1,
                      gen_max_new_tokens=4, xcsqa_dataset=str(FIXTURES), xcsqa_n=2, timing_tokens=32,
                      timing_repeats=1, cross_language_max_tokens=32, split_compare_languages=("en", "hi"),
                      split_compare_max_tokens=32, split_compare_methods=("contiguous",), token_budget=256)
    model, tokenizer = load_model(cfg.model, device="cpu")
    labels, _ = stages.split(cfg, model)
    F = {lang: stages.record_language(cfg, model, tokenizer, labels, lang, 256) for lang in cfg.languages}
    table = frequencies.make_table({lang: c.counts for lang, c in F.items()}, {lang: c.n_tokens for lang, c in F.items()})
    levels = frequencies.levels_by_language(frequencies.activation_levels(table))
    F_by_lang = {lang: c.counts / c.n_tokens for lang, c in F.items()}
    specs = stages.pruning_masks(cfg, F_by_lang, levels)
    return cfg, model, tokenizer, labels, pruning_eval.run_masks(cfg, specs)


def test_masks_answer_what_08_asks(run):
    cfg, *_, masks = run
    assert masks.languages == ["en", "fr", "hi"] and masks.nearest(0.3) == 0.25
    assert masks.of("fr", "random", 0.3).seed == 0 and masks.of("fr", "random", 0.5, seed=1).seed == 1
    assert masks.dense("hi").mask.all() and masks.dense("hi").mask.shape == masks.shape
    with pytest.raises(ValueError, match=r"07_pruning made no masks for \['zh'\]"):
        pruning_eval.run_masks(cfg.replace(languages=("en", "zh")), masks.specs)


def test_held_out_scores_every_mask_on_its_language_and_tables_read_it(run):
    cfg, model, tokenizer, labels, masks = run
    held = pruning_eval.held_out(cfg, model, tokenizer, labels, masks)
    bpb = pruning_eval.metric_table(held.evals, "bits_per_byte", masks.languages)
    assert list(bpb.columns) == masks.languages and bpb.index[0] == "dense"
    assert bpb.notna().sum().sum() == len(masks.specs) + len(masks.languages)  # every mask once, on its language
    assert (bpb.loc["sorting@0.5"] != bpb.loc["dense"]).all()  # each row scored under its own mask
    comparison = comparisons.guided_vs_random(held.evals, "bits_per_byte", held.blocks, comparisons.Bootstrap(50))
    summary = comparisons.guided_summary(comparison)
    assert set(summary.index.get_level_values("method")) == set(methods.guided_methods())
    assert (summary["languages"] == 3).all()


def test_benchmarks_follow_the_task_table_and_say_why_a_task_is_left_out(run):
    cfg, model, tokenizer, labels, masks = run
    bench = pruning_eval.benchmarks(cfg, model, tokenizer, labels, masks)
    assert bench.languages == {"mgsm": ["en"], "xcsqa": ["en", "fr"]} and bench.skipped == {}
    assert set(bench.items["mask"]) == {"dense", "sorting@0.25", "random@0.25#0"}
    assert list(bench.items.columns) == ["task", "language", "mask", *tasks.ITEM_COLUMNS]
    mgsm = bench.items[bench.items["task"] == "mgsm"]
    assert len(mgsm) == 3 * 2 and mgsm["correct"].count() == 3  # 2 problems per mask, 1 of them generated
    assert {"mgsm_accuracy", "xcsqa_accuracy"} <= set(bench.metrics["metric"])
    assert isinstance(bench.table(), pd.DataFrame)
    assert "MGSM [en]" in bench.examples() and "X-CSQA [en]" in bench.examples()
    right = bench.items["correct"].dropna().astype(bool).groupby(bench.items["task"]).any()
    for task, any_right in right.items():  # a task where nothing was right says what can still be read
        assert (f"{tasks.TASKS[task].title}: no answer was right" in bench.describe()) == (not any_right)
    iv = comparisons.task_intervals(bench.items, comparisons.Bootstrap(50))
    assert len(iv) == 3 + 2 * 3  # MGSM: 3 masks on en; X-CSQA: 3 masks on en and fr
    assert ((iv["accuracy_low"] <= iv["accuracy"]) & (iv["accuracy"] <= iv["accuracy_high"])).all()
    figure = figures.benchmark_plot(bench.metrics, bench.ratio)
    drawn = ("mgsm_accuracy", "mgsm_gold_loglik_per_token", "xcsqa_accuracy")
    assert [" ".join(ax.get_ylabel().split()) for ax in figure.axes] == [metrics.label(m) for m in drawn]  # wrapped
    held = pruning_eval.held_out(cfg, model, tokenizer, labels, masks)
    table = pruning_eval.pruning_eval_table(held, bench)
    assert {"bits_per_byte", "mgsm_accuracy", "xcsqa_accuracy"} <= set(table["metric"])

    only_fr_hi = cfg.replace(languages=("fr", "hi"), xcsqa_dataset="")
    fr_hi_masks = pruning_eval.run_masks(only_fr_hi, masks.specs)
    none = pruning_eval.benchmarks(only_fr_hi, model, tokenizer, labels, fr_hi_masks)
    assert none.languages == {} and none.items.empty and isinstance(none.table(), str)
    assert "MGSM: left out: MGSM has none of this run's languages (it has en)" in none.describe()
    assert "X-CSQA: left out: xcsqa_dataset is empty" in none.describe()
    assert comparisons.task_intervals(none.items).empty
    assert figures.benchmark_plot(none.metrics, none.ratio).axes[0].texts[0].get_text().startswith("No benchmark")
    missing = cfg.replace(mgsm_dir=str(Path(cfg.mgsm_dir) / "absent"))
    with pytest.raises(FileNotFoundError):  # a named folder that is not there is an error, not a silent skip
        tasks.languages_with("mgsm", missing, ["en"])


def test_a_new_benchmark_is_one_table_entry(run, monkeypatch):
    cfg, model, tokenizer, labels, masks = run
    echo = dataclasses.replace(tasks.TASKS["xcsqa"], name="echo", title="Echo", plotted=())
    monkeypatch.setitem(tasks.TASKS, "echo", echo)
    bench = pruning_eval.benchmarks(cfg.replace(xcsqa_dataset=str(FIXTURES)), model, tokenizer, labels, masks)
    assert bench.languages["echo"] == ["en", "fr"] and "Echo: commonsense" in bench.describe()
    assert set(comparisons.task_intervals(bench.items, comparisons.Bootstrap(20))["task"]) == {"mgsm", "xcsqa", "echo"}


def test_cross_language_scores_every_mask_on_every_language(run):
    cfg, model, tokenizer, labels, masks = run
    cross = pruning_eval.cross_language(cfg, model, tokenizer, labels, masks)
    assert cross.max_tokens == 32 and cross.ratio == 0.25
    matrix = comparisons.cross_language_matrix(cross.evals, "bits_per_byte")
    assert matrix.shape == (3, 3)


def test_split_comparison_scores_each_split_with_every_guided_method_and_the_baseline(run):
    cfg, model, tokenizer, labels, masks = run
    compared = pruning_eval.split_comparison(cfg, model, tokenizer, labels, kind_of(model), masks,
                                             comparisons.Bootstrap(50))
    assert compared.languages == ["en", "hi"] and set(compared.table["split"]) == {"kmeans", "contiguous"}
    pruned = compared.table[compared.table["method"] != pruning.DENSE]
    assert set(pruned["method"]) == set(methods.guided_methods()) | {methods.BASELINE}
    assert set(compared.intervals["split"]) == {"contiguous"}


def test_pruned_speed_times_copies_that_compute_what_the_mask_computes(run):
    cfg, model, tokenizer, labels, masks = run
    kind = kind_of(model)
    speed = pruning_eval.pruned_speed(cfg, model, tokenizer, labels, kind, masks)
    assert list(speed["contender"])[0] == "dense" and (speed["max logit difference to masked"] < 1e-3).all()
    assert (speed["FFN share kept"].iloc[1:] < 1).all()
    keeps_all = dataclasses.replace(kind, prune=lambda m, lab, mask: kind.prune(m, lab, np.ones_like(mask)))
    with pytest.raises(RuntimeError, match="physically pruned model differs from the masked one"):
        pruning_eval.pruned_speed(cfg, model, tokenizer, labels, keeps_all, masks)


def test_07s_tables_follow_the_method_table(run):
    cfg, *_, masks = run
    table = pruning.mask_table(list(masks.specs))
    summary = methods.static_mask_summary(table, "en", int(np.prod(masks.shape)))
    assert "dynamic" not in set(summary["method"]) and {"threshold", "sorting", "layerwise", "random"} <= set(
        summary["method"])
    assert (summary["share_pruned"] == (summary["pruned"] / np.prod(masks.shape)).round(4)).all()
    assert set(pruning.method_shares(table, "threshold").index) == {"en", "fr", "hi"}
    jaccard, kept = pruning.overlap_tables(list(masks.specs), masks.languages, "sorting", 0.25)
    assert np.allclose(np.diag(jaccard), 1.0) and (np.diag(kept) == 0).all()
    assert len(pruning.overlap_long(jaccard, kept, 0.25)) == 9
    with pytest.raises(ValueError, match=r"No sorting mask at ratio 0.3"):
        pruning.overlap_tables(list(masks.specs), masks.languages, "sorting", 0.3)


def test_07s_bad_input_fails_early_with_the_fix():
    F = np.random.default_rng(0).random((2, 8))
    with pytest.raises(ValueError, match="ratio"):
        pruning.sorting_mask(F, 1.0)
    with pytest.raises(ValueError, match="Language 'xx' has no"):
        methods.build_masks({"en": F}, {"en": np.full(2, 0.5)}, BabelConfig(), languages=["xx"])
    with pytest.raises(ValueError, match="Unknown pruning method 'magnitude'"):
        methods.check_method("magnitude")
