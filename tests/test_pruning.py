"""Pruning masks (sizes, per-layer counts, baselines, errors) and applying them (hooks, slicing, top-k)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import balanced_labels

from babel_utils.core.config import BabelConfig
from babel_utils.models.adapters import d_ff, down_projs, layer_width, n_layers
from babel_utils.models.hooks import ffn_input_hooks
from babel_utils.prune.apply import apply_mask, dynamic_topk
from babel_utils.prune.masks import (
    MaskSpec,
    activation_levels,
    dynamic_spec,
    layerwise_counts,
    layerwise_mask,
    mask_overlap,
    mask_table,
    masks_from_results,
    masks_to_results,
    pruned_per_layer,
    random_mask,
    random_masks_like,
    resolve_top_k,
    sorting_mask,
    threshold_mask,
)
from babel_utils.prune.methods import METHODS, build_masks, check_method
from babel_utils.prune.surgery import physically_prune
from babel_utils.record.counting import expert_scores

L, E = 6, 40


@pytest.fixture
def freqs() -> np.ndarray:
    return np.random.default_rng(0).random((L, E))


def test_threshold_mask_prunes_below_threshold(freqs):
    mask = threshold_mask(freqs, 0.3)
    assert mask.dtype == bool and mask.shape == (L, E)
    assert np.array_equal(mask, freqs >= 0.3)
    assert threshold_mask(np.full((2, 3), 0.05)).all()  # f == 0.05 is kept: only f < 0.05 goes


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_sorting_mask_global_prunes_the_lowest(freqs, ratio):
    mask = sorting_mask(freqs, ratio, "global")
    n = int(np.floor(ratio * L * E + 0.5))
    assert (~mask).sum() == n
    if 0 < n < L * E:
        assert freqs[~mask].max() <= freqs[mask].min()


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_sorting_mask_per_layer_same_count_everywhere(freqs, ratio):
    mask = sorting_mask(freqs, ratio, "per_layer")
    n = int(np.floor(ratio * E + 0.5))
    assert (pruned_per_layer(mask) == n).all()
    for layer in range(L):
        assert freqs[layer][~mask[layer]].max() <= freqs[layer][mask[layer]].min()


def test_sorting_ties_break_by_layer_then_expert():
    f = np.zeros((2, 4))
    mask = sorting_mask(f, 0.25, "global")  # 2 of 8, all tied: layer 0's experts 0 and 1
    assert np.flatnonzero(~mask.ravel()).tolist() == [0, 1]
    assert np.array_equal(sorting_mask(f, 0.5, "per_layer"), [[False, False, True, True]] * 2)


def test_layerwise_same_total_as_uniform_and_active_layers_lose_fewer(freqs):
    levels = np.array([0.05, 0.10, 0.15, 0.20, 0.22, 0.28])
    for ratio in (0.1, 0.25, 0.5, 0.9):
        counts = layerwise_counts(levels, ratio, E)
        assert counts.sum() == int(np.floor(ratio * E + 0.5)) * L
        assert (np.diff(counts) <= 0).all()  # levels increase, so counts never increase
        assert counts.max() <= E - 1
        mask = layerwise_mask(freqs, levels, ratio)
        assert np.array_equal(pruned_per_layer(mask), counts)
        for layer in range(L):  # within a layer the lowest frequencies go
            if 0 < counts[layer] < E:
                assert freqs[layer][~mask[layer]].max() <= freqs[layer][mask[layer]].min()
    counts = layerwise_counts(levels, 0.25, E)
    assert counts[0] > counts[-1]


def test_layerwise_uniform_levels_equal_uniform_sorting(freqs):
    mask = layerwise_mask(freqs, np.full(L, 1 / L), 0.25)
    levels = activation_levels(freqs)
    assert levels.shape == (L,) and levels.sum() == pytest.approx(1.0)
    assert np.array_equal(mask, sorting_mask(freqs, 0.25, "per_layer"))


def test_layerwise_caps_a_silent_layer_and_keeps_the_total():
    counts = layerwise_counts(np.array([0.0, 0.5, 0.5]), 0.5, 10)
    assert counts.tolist() == [9, 3, 3]


def test_random_baseline_matches_per_layer_counts(freqs):
    ref = sorting_mask(freqs, 0.25, "global")
    masks = random_masks_like(ref, [0, 1, 2])
    for m in masks:
        assert np.array_equal(pruned_per_layer(m), pruned_per_layer(ref))
    assert not np.array_equal(masks[0], masks[1])
    assert np.array_equal(random_mask(pruned_per_layer(ref), E, 1), masks[1])  # seeded
    assert 0.0 <= mask_overlap(ref, masks[0]) < 1.0
    assert mask_overlap(ref, ref) == 1.0


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_bad_ratio_names_value_and_range(freqs, ratio):
    with pytest.raises(ValueError, match=r"\[0, 1\)") as err:
        sorting_mask(freqs, ratio)
    assert str(ratio) in str(err.value)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        layerwise_mask(freqs, np.ones(L), ratio)


def test_unknown_method_names_known_methods(freqs):
    with pytest.raises(ValueError, match="known methods: threshold, sorting, layerwise, random, dynamic"):
        check_method("magnitude")
    assert list(METHODS) == ["threshold", "sorting", "layerwise", "random", "dynamic"]


def test_build_masks_covers_every_method_and_errors_for_missing_language(freqs):
    cfg = BabelConfig(languages=("en", "fr"), prune_ratios=(0.1, 0.5), random_seeds=(0, 1))
    F = {"en": freqs, "fr": freqs[::-1].copy()}
    levels = {"en": np.linspace(1, 2, L), "fr": np.linspace(2, 1, L)}
    specs = build_masks(F, levels, cfg)
    # per language: 1 threshold + per ratio (sorting + layerwise + 2 random) + 1 dynamic
    assert len(specs) == 2 * (1 + 2 * 4 + 1)
    assert [s.method for s in specs if s.language == "en"] == (
        ["threshold"] + ["sorting"] * 2 + ["layerwise"] * 2 + ["random"] * 4 + ["dynamic"])
    thr = [s for s in specs if s.method == "threshold"][0]
    assert thr.ratio == pytest.approx((freqs < cfg.high_freq_threshold).mean())
    for s in specs:
        if s.method == "random":
            sort = next(x for x in specs
                        if x.method == "sorting" and x.ratio == s.ratio and x.language == s.language)
            assert np.array_equal(pruned_per_layer(s.mask), pruned_per_layer(sort.mask))
        if s.method == "sorting":
            assert (~s.mask).sum() == int(np.floor(s.ratio * L * E + 0.5))  # global mode by default
    table = mask_table(specs)
    assert set(table.columns) >= {"method", "ratio", "seed", "layer", "pruned"}
    assert len(table) == len(specs) * L
    restored = masks_from_results(masks_to_results(specs))
    assert [(s.language, s.method, s.ratio, s.seed) for s in restored] == \
        [(s.language, s.method, s.ratio, s.seed) for s in specs]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(restored, specs))
    with pytest.raises(ValueError, match="'hi' has no activation frequencies"):
        build_masks(F, levels, cfg.replace(languages=("en", "hi")))


def test_mask_table_of_bare_masks(freqs):
    table = mask_table({"a": sorting_mask(freqs, 0.5, "per_layer")})
    assert table["pruned"].tolist() == [20] * L and (table["method"] == "a").all()


def test_resolve_top_k_default():
    assert resolve_top_k(BabelConfig(), 256) == 192
    assert resolve_top_k(BabelConfig(dynamic_top_k=10), 256) == 10


# --------------------------------------------------------------------------- on tiny models


def _inputs(tokenizer):
    return tokenizer(["Article 3. Everyone has the right to life, liberty and security of person."],
                     return_tensors="pt")


@pytest.mark.parametrize("mode", ["global", "per_layer"])
def test_physically_pruned_equals_masked_logits(tiny, mode):
    model, tokenizer = tiny
    n_experts = 16
    labels = balanced_labels(n_layers(model), d_ff(model), n_experts, seed=5)
    mask = sorting_mask(np.random.default_rng(1).random((n_layers(model), n_experts)), 0.4, mode)
    enc = _inputs(tokenizer)
    with torch.no_grad():
        with apply_mask(model, labels, mask):
            masked = model(**enc).logits
        sliced_model = physically_prune(model, labels, mask)
        sliced = sliced_model(**enc).logits
    torch.testing.assert_close(sliced, masked, rtol=1e-4, atol=1e-4)
    widths = [layer_width(sliced_model, i) for i in range(n_layers(model))]
    assert widths == [int(mask[i].sum()) * (d_ff(model) // n_experts) for i in range(n_layers(model))]
    assert layer_width(model, 0) == d_ff(model) == 256  # the original is untouched
    expected = widths[0] if len(set(widths)) == 1 else 256  # updated only when every layer agrees
    assert sliced_model.config.intermediate_size == expected
    assert sliced_model.config.pruned_intermediate_sizes == widths


def test_dense_mask_gives_dense_logits_and_hooks_are_removed(tiny):
    model, tokenizer = tiny
    labels = balanced_labels(n_layers(model), d_ff(model), 16, seed=2)
    dense_mask = np.ones((n_layers(model), 16), dtype=bool)
    enc = _inputs(tokenizer)
    with torch.no_grad():
        dense = model(**enc).logits
        with apply_mask(model, labels, dense_mask):
            assert all(len(d._forward_pre_hooks) == 1 for d in down_projs(model))
            masked = model(**enc).logits
        assert all(len(d._forward_pre_hooks) == 0 for d in down_projs(model))
        sliced = physically_prune(model, labels, dense_mask)(**enc).logits
        with apply_mask(model, labels, sorting_mask(np.random.default_rng(0).random((4, 16)), 0.5)):
            pruned = model(**enc).logits
        again = model(**enc).logits
    assert torch.equal(masked, dense) and torch.equal(sliced, dense) and torch.equal(again, dense)
    assert not torch.allclose(pruned, dense)


def test_hooks_removed_after_an_error(tiny):
    model, _ = tiny
    labels = balanced_labels(n_layers(model), d_ff(model), 16)
    with pytest.raises(RuntimeError):
        with apply_mask(model, labels, np.ones((4, 16), dtype=bool)):
            raise RuntimeError("boom")
    assert all(len(d._forward_pre_hooks) == 0 for d in down_projs(model))


def test_mask_shape_must_fit_labels(tiny):
    model, _ = tiny
    labels = balanced_labels(n_layers(model), d_ff(model), 16)
    with pytest.raises(ValueError, match="does not fit"):
        with apply_mask(model, labels, np.ones((4, 8), dtype=bool)):
            pass


@pytest.mark.parametrize("k", [1, 5, 16])
def test_dynamic_topk_keeps_exactly_k_experts_per_token(tiny, k):
    model, tokenizer = tiny
    n_experts = 16
    labels = balanced_labels(n_layers(model), d_ff(model), n_experts, seed=7)
    perms = [torch.as_tensor(np.argsort(labels[i], kind="stable")) for i in range(n_layers(model))]
    active: list[torch.Tensor] = []

    def count(layer, h):
        active.append((expert_scores(h, torch.as_tensor(labels[layer]), n_experts, "abs", perms[layer]) > 0).sum(-1))
    enc = _inputs(tokenizer)
    with torch.no_grad(), dynamic_topk(model, labels, k), ffn_input_hooks(model, count):
        model(**enc)
    assert len(active) == n_layers(model)
    assert all((a == k).all() for a in active)
    assert all(len(d._forward_pre_hooks) == 0 for d in down_projs(model))
    spec = dynamic_spec("en", 4, n_experts, k)
    assert spec.top_k == k and spec.ratio == pytest.approx(1 - k / n_experts)


def test_mask_spec_names():
    m = np.ones((2, 4), dtype=bool)
    assert MaskSpec("en", "random", 0.25, 1, m).name == "random@0.25#1"
    assert MaskSpec("en", "sorting", 0.5, None, m).name == "sorting@0.5"


# --------------------------------------------------------------------------- export, timing, comparing masks


def test_exported_pruned_model_reloads_with_uneven_widths(tiny, tmp_path):
    from babel_utils.prune.surgery import load_pruned, save_pruned

    model, tokenizer = tiny
    labels = balanced_labels(n_layers(model), d_ff(model), 16, seed=3)
    mask = sorting_mask(np.random.default_rng(4).random((n_layers(model), 16)), 0.4, "global")
    sliced = physically_prune(model, labels, mask)
    assert len(set(sliced.config.pruned_intermediate_sizes)) > 1  # the widths differ by layer
    save_pruned(sliced, tmp_path / "pruned", tokenizer)
    loaded = load_pruned(tmp_path / "pruned")
    enc = _inputs(tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded(**enc).logits, sliced(**enc).logits)
    assert [layer_width(loaded, i) for i in range(n_layers(loaded))] == \
        sliced.config.pruned_intermediate_sizes
    with pytest.raises(ValueError, match="pruned_intermediate_sizes"):
        model.save_pretrained(tmp_path / "dense")
        load_pruned(tmp_path / "dense")


def test_paired_median_ms_times_every_contender():
    from babel_utils.core.timing import paired_median_ms

    calls = {"a": 0, "b": 0}

    def bump(name):
        calls[name] += 1
    times = paired_median_ms({"a": lambda: bump("a"), "b": lambda: bump("b")}, "cpu", warmup=1, repeats=3)
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    assert calls == {"a": 4, "b": 4}


def test_overlap_sentence_and_most_different_pair():
    import pandas as pd

    from babel_utils.prune.masks import describe_overlap, most_different_pair

    langs = ["en", "fr", "hi"]
    jac = pd.DataFrame([[1.0, 0.6, 0.2], [0.6, 1.0, 0.3], [0.2, 0.3, 1.0]], index=langs, columns=langs)
    kept = pd.DataFrame([[0, 5, 40], [5, 0, 30], [45, 20, 0]], index=langs, columns=langs)
    assert most_different_pair(jac) == ("en", "hi")
    text = describe_overlap(jac, kept, 100)
    assert "0.20 (English-Hindi)" in text and "0.60 (English-French)" in text
    assert "Pruning for English would take most from Hindi: 45 experts (45.0% of all)" in text


def test_build_masks_bad_input_messages(freqs):
    cfg = BabelConfig(languages=("en",))
    F = {"en": freqs}
    levels = {"en": np.ones(L)}
    with pytest.raises(ValueError, match=r"prune_ratios.*\[0, 1\)"):
        BabelConfig(prune_ratios=(0.25, 1.0))
    with pytest.raises(ValueError, match="'zh' has no activation frequencies .*en"):
        build_masks(F, levels, cfg, languages=["zh"])
    with pytest.raises(ValueError, match="'random' has no activation levels|has no activation levels"):
        build_masks(F, {}, cfg)
    with pytest.raises(ValueError, match="Unknown pruning method 'magnitude'"):
        build_masks(F, levels, cfg, methods=["sorting", "magnitude"])


def test_row_masks_equal_one_mask_at_a_time(tiny):
    from babel_utils.prune.apply import apply_row_masks

    model, tokenizer = tiny
    labels = balanced_labels(n_layers(model), d_ff(model), 16, seed=6)
    rng = np.random.default_rng(2)
    masks = np.stack([sorting_mask(rng.random((4, 16)), r, "global") for r in (0.0, 0.25, 0.5)])
    enc = tokenizer(["Everyone has the right to work."] * 4, return_tensors="pt")
    order = [2, 0, 1, 2]
    with torch.no_grad():
        with apply_row_masks(model, labels, masks) as select:
            select(order)
            batched = model(**enc).logits
            with pytest.raises(RuntimeError, match="select"):
                model(input_ids=enc["input_ids"][:2])  # 2 rows, but 4 selected
        for row, k in enumerate(order):
            with apply_mask(model, labels, masks[k]):
                single = model(input_ids=enc["input_ids"][row:row + 1]).logits
            torch.testing.assert_close(batched[row:row + 1], single, rtol=1e-5, atol=1e-5)
    assert all(len(d._forward_pre_hooks) == 0 for d in down_projs(model))
    with pytest.raises(ValueError, match="outside"):
        with apply_row_masks(model, labels, masks) as select:
            select([3])
