"""The table of pruning methods: a new method is one entry, and every step of notebooks 07-08 takes it up."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from conftest import balanced_labels

from babel_utils import figures
from babel_utils.core.config import BabelConfig
from babel_utils.evaluate import comparisons as evaluation
from babel_utils.models.adapters import d_ff, n_layers
from babel_utils.models.loading import load_model
from babel_utils.prune import masks as pruning
from babel_utils.prune import methods
from babel_utils.run import stages

L, E = 4, 16


def reverse_sorting(lang: str, f: np.ndarray, levels: np.ndarray, cfg: BabelConfig) -> list[pruning.MaskSpec]:
    """An example method: prune the MOST frequent experts (frequency sorting turned upside down)."""
    return [pruning.MaskSpec(lang, "reverse", float(r), None, pruning.sorting_mask(1.0 - f, r, cfg.prune_layer_mode))
            for r in cfg.prune_ratios]


def test_a_new_pruning_method_is_one_table_entry(monkeypatch):
    monkeypatch.setitem(methods.METHODS, "reverse", methods.Method("reverse", reverse_sorting, colour="C5",
                                                                   legend="reverse sorting (most frequent pruned)"))
    cfg = BabelConfig(languages=("en",), prune_ratios=(0.25,), random_seeds=(0,), eval_max_tokens=48, seq_len=32,
                      batch_size=4)
    f = np.random.default_rng(0).random((L, E)) * 0.2
    specs = methods.build_masks({"en": f}, {"en": np.linspace(1, 2, L)}, cfg)  # 07: every method of the table
    reverse = next(s for s in specs if s.method == "reverse")
    assert reverse.name == "reverse@0.25" and f[~reverse.mask].min() >= f[reverse.mask].max()
    restored = pruning.masks_from_results(pruning.masks_to_results(specs))  # 07 saves them, 08 reads them
    assert [s.name for s in restored] == [s.name for s in specs]
    assert methods.check_masks(specs, {"en": f}, cfg) == len(specs) - 2  # reverse and dynamic have no check

    # 08: evaluated in the shared batches of static masks, then tabled, described and drawn
    model, tokenizer = load_model("tiny-llama", device="cpu")
    labels = balanced_labels(n_layers(model), d_ff(model), E)
    jobs = [(pruning.dense_spec("en", L, E), "en")] + [(s, "en") for s in specs]
    evals = stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, "heldout")
    bpb = evals[evals.metric == "bits_per_byte"].set_index("mask")["value"]
    assert bpb["reverse@0.25"] != pytest.approx(bpb["sorting@0.25"])
    blocks = stages.heldout_blocks(cfg, labels, jobs)
    vs_dense = evaluation.against_dense(evals, blocks, evaluation.Bootstrap(n=200))
    assert "reverse@0.25" in evaluation.match_table(vs_dense).index
    assert "reverse@0.25" in set(vs_dense["mask"]) and len(vs_dense) == len(specs)  # one seed: one row per mask
    fig = figures.metric_vs_ratio_plot(evals, "bits_per_byte", "bits per byte")
    assert "reverse sorting (most frequent pruned)" in fig.axes[0].get_legend_handles_labels()[1]
    assert methods.colour("reverse") == "C5"
    # 07: its own panel of where it prunes, and its rows in the summary of each language's masks
    shares = figures.pruned_share_plot(pruning.mask_table(specs))
    assert "Reverse sorting (most frequent pruned)" in [ax.get_title() for ax in shares.axes]
    assert "reverse" in set(methods.static_mask_summary(pruning.mask_table(specs), "en", L * E)["method"])


def test_the_table_says_how_each_method_runs_and_is_compared():
    assert methods.guided_methods() == ["sorting", "layerwise"]
    dynamic = pruning.dynamic_spec("en", L, E, 8)
    static = pruning.MaskSpec("en", "sorting", 0.25, None, np.ones((L, E), dtype=bool))
    assert not methods.batches_with_others(dynamic) and methods.batches_with_others(static)
    assert methods.batches_with_others(pruning.dense_spec("en", L, E))
    assert evaluation.mask_label(pruning.MaskSpec("en", "threshold", 0.3, None, static.mask)) == "threshold"
    with pytest.raises(ValueError, match="Unknown pruning method 'magnitude'; known methods: threshold, sorting"):
        methods.check_method("magnitude")
