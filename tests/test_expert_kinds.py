"""The stages on a native mixture of experts (tiny OLMoE): 01's labels are the identity and n_experts must be
the model's own, 02's counts are the router's top-k (native.record_routes on the same text), 07 builds no
dynamic spec, 08's masks and removals act on the routers, and the tuned model is checked by routed experts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from babel_utils.analyse import tuning
from babel_utils.core import cache, config, paths, results
from babel_utils.data import text as data
from babel_utils.evaluate import comparisons as evaluation
from babel_utils.evaluate import tasks
from babel_utils.kinds import expert_kinds, native
from babel_utils.models.loading import load_model
from babel_utils.prune import masks as pruning
from babel_utils.prune import methods
from babel_utils.run import runner, stages


@pytest.fixture(scope="module")
def moe():
    return load_model("tiny-olmoe", device="cpu")


@pytest.fixture
def cfg():
    return config.load_config(paths.CONFIGS_DIR / "smoke-moe.yaml")


def test_the_kind_of_a_model_is_the_table_entry_of_its_adapter(moe, tiny):
    assert expert_kinds.kind_of(moe[0]) is expert_kinds.KINDS["native"]
    assert expert_kinds.kind_of(tiny[0]) is expert_kinds.KINDS["split"]
    with pytest.raises(ValueError, match="known kinds: split, native"):
        expert_kinds.check_kind("routed")


def test_native_labels_are_the_identity_and_n_experts_must_be_the_models_own(moe, cfg, tmp_path):
    model, _ = moe
    labels, structure = stages.split(cfg, model)
    np.testing.assert_array_equal(labels, np.tile(np.arange(8), (4, 1)))
    assert structure["experts"].tolist() == [8] * 4 and structure["top_k"].tolist() == [2] * 4
    for bad in (lambda: stages.split(cfg.replace(n_experts=16), model), lambda: runner.preflight(cfg.replace(n_experts=4))):
        with pytest.raises(ValueError, match="routes among 8 experts per MoE layer: set n_experts: 8"):
            bad()
    kind = expert_kinds.kind_of(model)
    results.save(tmp_path, "labels", labels, made_with=cache.provenance(cfg, "labels"))
    results.save(tmp_path, "expert_kind", expert_kinds.kind_table(kind, labels),
                 made_with=cache.provenance(cfg, "expert_kind"))
    assert stages.load_kind(cfg, tmp_path) is kind
    np.testing.assert_array_equal(stages.load_labels(cfg, model, tmp_path), labels)
    with pytest.raises(ValueError, match="Rerun 01_split"):
        stages.load_kind(cfg.replace(model="tiny-llama"), tmp_path)


def test_recording_a_native_model_counts_its_routers_choices(moe, cfg):
    model, tokenizer = moe
    labels, _ = stages.split(cfg, model)
    budget = data.token_budget(cfg, tokenizer)
    counts = stages.record_language(cfg, model, tokenizer, labels, "fr", budget)
    packed = data.calibration_batches(cfg, tokenizer, "fr", budget)
    want = native.record_routes(model, packed.input_ids, packed.attention_mask,
                                data.count_mask(packed, tokenizer.bos_token_id), block=cfg.bootstrap_block)
    np.testing.assert_array_equal(counts.counts, want.counts)
    assert counts.n_tokens == want.n_tokens and (counts.counts.sum(axis=1) == 2 * counts.n_tokens).all()
    np.testing.assert_array_equal(counts.block_counts, want.block_counts)


def test_native_masks_have_no_dynamic_spec_and_the_split_keeps_it(cfg):
    rng = np.random.default_rng(0)
    F = {lang: rng.uniform(0.05, 0.5, (4, 8)) for lang in cfg.languages}
    levels = {lang: np.full(4, 0.25) for lang in cfg.languages}
    native_specs = stages.pruning_masks(cfg, F, levels, expert_kinds.KINDS["native"])
    split_specs = stages.pruning_masks(cfg, F, levels, expert_kinds.KINDS["split"])
    assert "dynamic" not in {s.method for s in native_specs} and "dynamic" in {s.method for s in split_specs}
    assert len(split_specs) == len(native_specs) + len(cfg.languages)
    assert "no dynamic sparse activation" in methods.describe_specs(native_specs, 3, 6, 8)


def test_native_evaluation_masks_the_routers_and_removal_equals_masking(moe, cfg):
    model, tokenizer = moe
    labels, _ = stages.split(cfg, model)
    kind = expert_kinds.kind_of(model)
    mask = np.ones((4, 8), dtype=bool)
    mask[:, :5] = False  # three experts left per layer
    spec = pruning.MaskSpec("fr", "sorting", 0.625, None, mask)
    dense = pruning.dense_spec("fr", 4, 8)
    evals = stages.evaluate_jobs(cfg, model, tokenizer, labels, [(dense, "fr"), (spec, "fr")])
    bpb = evals[evals["metric"] == "bits_per_byte"].set_index("mask")["value"]
    ids = data.pack_tokens(tokenizer, data.heldout_texts(cfg, "fr"), 33, budget=32).input_ids[:1]
    with torch.inference_mode():
        with kind.mask(model, labels, mask):
            masked = model(input_ids=ids).logits
        removed = kind.prune(model, labels, mask)
        torch.testing.assert_close(removed(input_ids=ids).logits, masked, rtol=1e-5, atol=1e-5)
    # evaluate_jobs shared a batch between the two masks: the pruned row scores as the model without the experts
    heldout = tasks.check_task("heldout")
    alone = heldout.summarise(heldout.run(cfg, removed, tokenizer, ["fr"], None)[0])
    pruned_label = evaluation.mask_label(spec)
    assert bpb[pruned_label] != bpb["dense"]
    assert alone["bits_per_byte"] == pytest.approx(bpb[pruned_label], abs=1e-5)
    assert kind.kept_share(removed, model) == pytest.approx(3 / 8)
    assert kind.describe_pruned(removed, model) == "experts per MoE layer from 3 to 3 of 8 (mean 3)"


def test_a_tuned_native_model_must_route_among_the_same_experts(moe):
    model, _ = moe
    labels = np.tile(np.arange(8), (4, 1))
    tuning.check_same_layout(labels, model, "tiny-olmoe")
    with pytest.raises(ValueError, match="not a variant of the base model"):
        tuning.check_same_layout(labels[:, :4], model, "other")


def test_a_run_folder_from_before_the_kind_was_recorded_is_a_split(cfg, tmp_path):
    assert stages.load_kind(cfg, tmp_path) is expert_kinds.KINDS["split"]  # only split models ran before
