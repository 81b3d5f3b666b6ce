"""Models placed by accelerate (device_map): counts and pruning hooks as with a plain load; never moved.

CPU-only stand-in for a model spread over GPUs: device_map "cpu", an explicit per-module map, and a
map that offloads layers to disk (their weights sit on "meta" and accelerate's hooks bring them in
for each forward), the case where a layer's weights are not where it computes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import balanced_labels
from transformers import PreTrainedModel

from babel_utils.data import text as data
from babel_utils.models.adapters import down_projs
from babel_utils.models.loading import load_model
from babel_utils.prune import apply
from babel_utils.record.counting import record_counts

N_EXPERTS = 16
MODULES = ["model.embed_tokens", *(f"model.layers.{i}" for i in range(4)), "model.norm", "model.rotary_emb",
           "lm_head"]
PLACEMENTS = {
    "cpu": "cpu",
    "per_module": {name: "cpu" for name in MODULES},
    "disk": {name: "disk" if name in ("model.layers.2", "model.layers.3") else "cpu" for name in MODULES},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama saved as a local folder (from_pretrained is what applies a device_map)."""
    model, tokenizer = load_model("tiny-llama", device="cpu")
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def reference(saved):
    """The plain load, some packed UDHR text, labels and the plain load's counts."""
    model, tokenizer = load_model(saved, device="cpu")
    packed = data.pack_tokens(tokenizer, [data.udhr_articles("en")[1], data.udhr_articles("en")[2]], 48, 160)
    mask = data.count_mask(packed, tokenizer.bos_token_id)
    labels = balanced_labels(4, 256, N_EXPERTS)
    counts = record_counts(model, packed.input_ids, packed.attention_mask, mask, labels, N_EXPERTS,
                           batch_size=2, block=16)
    return model, packed, mask, labels, counts


@pytest.fixture(scope="module")
def placed(saved):
    """Each placement's model, loaded once."""
    return {name: load_model(saved, device="cpu", device_map=device_map)[0]
            for name, device_map in PLACEMENTS.items()}


def test_disk_placement_really_offloads(placed):
    model = placed["disk"]
    assert model.hf_device_map["model.layers.2"] == "disk"
    devices = [d.weight.device.type for d in down_projs(model)]
    assert devices == ["cpu", "cpu", "meta", "meta"]
    assert hasattr(model.model.layers[2], "_hf_hook")  # accelerate's AlignDevicesHook


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_counts_match_the_plain_load(placed, reference, placement):
    _, packed, mask, labels, expected = reference
    counts = record_counts(placed[placement], packed.input_ids, packed.attention_mask, mask, labels, N_EXPERTS,
                           batch_size=2, block=16)
    assert counts.n_tokens == expected.n_tokens
    np.testing.assert_array_equal(counts.counts, expected.counts)
    np.testing.assert_array_equal(counts.block_counts, expected.block_counts)


def pruned_logits(model, labels, input_ids):
    mask = np.ones((4, N_EXPERTS), dtype=bool)
    mask[:, ::3] = False  # prune every third expert of every layer
    with torch.inference_mode(), apply.apply_mask(model, labels, mask):
        return model(input_ids=input_ids).logits


@pytest.mark.parametrize("placement", ["cpu", "per_module", "disk"])
def test_pruning_hooks_match_the_plain_load(placed, reference, placement):
    plain, packed, _, labels, _ = reference
    ids = packed.input_ids[:2]
    expected = pruned_logits(plain, labels, ids)
    with torch.inference_mode():
        assert not torch.allclose(expected, plain(input_ids=ids).logits)  # the mask does prune
    torch.testing.assert_close(pruned_logits(placed[placement], labels, ids), expected, rtol=0, atol=0)


def test_load_model_with_a_device_map_never_moves_the_model(saved, monkeypatch):
    moved = []
    original = torch.nn.Module.to

    def spy(self, *args, **kwargs):
        if isinstance(self, PreTrainedModel):
            moved.append((type(self).__name__, args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    for device_map in PLACEMENTS.values():
        load_model(saved, device="cpu", device_map=device_map)
    assert moved == []
    load_model(saved, device="cpu")  # the spy does see the move of a plain load
    assert moved
