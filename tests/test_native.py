"""Native mixtures of experts, every row of the table on a tiny random model from its transformers config:
the routing rule equals the router's own, recording counts the router's real top-k (a plain reference),
masking a router equals removing its experts, one mask per batch row equals each mask alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from babel_utils.kinds import native
from babel_utils.models.adapters import ADAPTERS, NATIVE

BASE = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)
N, K = 8, 2  # routed experts per layer, top-k
EXPERTS: dict[str, dict] = {
    "mixtral": dict(num_local_experts=N, num_experts_per_tok=K),
    "qwen2_moe": dict(num_experts=N, num_experts_per_tok=K, moe_intermediate_size=16,
                      shared_expert_intermediate_size=32),
    "qwen3_moe": dict(num_experts=N, num_experts_per_tok=K, moe_intermediate_size=16, norm_topk_prob=True),
    "olmoe": dict(num_experts=N, num_experts_per_tok=K),
    "gpt_oss": dict(num_local_experts=N, num_experts_per_tok=K, layer_types=["full_attention"] * 2),
    "deepseek_v3": dict(n_routed_experts=N, num_experts_per_tok=K, moe_intermediate_size=16, n_shared_experts=1,
                        n_group=1, topk_group=1, first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=16,
                        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, num_key_value_heads=4),
}
NATIVE_TYPES = sorted(t for t, a in ADAPTERS.items() if a.kind == NATIVE)


def tiny_moe(model_type: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **{**BASE, **EXPERTS[model_type], **extra})
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def test_every_native_row_has_a_tiny_model_here():
    assert NATIVE_TYPES == sorted(EXPERTS)


def _router_outputs(model, ids):
    seen = {}
    with native.router_hooks(model, lambda i, r, out: seen.__setitem__(i, tuple(o.detach() for o in out))):
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    return logits, seen


@pytest.mark.parametrize("model_type", NATIVE_TYPES)
def test_native_experts_are_recorded_and_pruned_like_the_model_routes_them(model_type):
    model = tiny_moe(model_type)
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    table = native.structure(model)
    assert table["experts"].tolist() == [N, N] and table["top_k"].tolist() == [K, K]
    assert (table["shared_expert_width"] > 0).all() == (model_type in ("qwen2_moe", "deepseek_v3"))
    # the row's routing rule gives exactly what the router gave
    dense, outputs = _router_outputs(model, ids)
    for layer, router in enumerate(native.routers(model)):
        logits, scores, index = outputs[layer]
        again = native.route(model, router, logits)
        assert torch.equal(again[1], index) and torch.equal(again[0], scores)
    # recording: the router's own top-k of every counted token, counted plainly
    am = torch.ones_like(ids)
    count = am.bool().clone()
    count[:, 0] = False  # the first token of each row does not count
    counts = native.record_routes(model, ids, am, count, batch_size=1, block=4)
    want = np.zeros((2, N), dtype=np.int64)
    for layer in range(2):
        chosen = outputs[layer][2].reshape(2, 10, K)[:, 1:]
        for e in chosen.reshape(-1).tolist():
            want[layer, e] += 1
    np.testing.assert_array_equal(counts.counts, want)
    assert counts.n_tokens == 18 and counts.block_counts.sum() == want.sum() and counts.block_tokens.sum() == 18
    # a pruned expert is never chosen; masking the router equals removing the experts
    mask = np.ones((2, N), dtype=bool)
    mask[0, [1, 4, 6]] = False
    mask[1, [0, 7]] = False
    with native.route_mask(model, np.ones((2, N), dtype=bool)), torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, dense, rtol=0, atol=0)  # all kept: the dense model
    with native.route_mask(model, mask):
        masked, routed = _router_outputs(model, ids)
    for layer in range(2):
        assert mask[layer][routed[layer][2].reshape(-1).numpy()].all()
    with torch.no_grad():
        removed = native.remove_experts(model, mask)(input_ids=ids).logits
    torch.testing.assert_close(removed, masked, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(masked, dense)
    # one mask per batch row: each row as under its own mask alone
    with native.route_masks(model, np.stack([np.ones((2, N), dtype=bool), mask])) as select, torch.no_grad():
        select([1, 0])
        rows = model(input_ids=ids).logits
    torch.testing.assert_close(rows[0], masked[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rows[1], dense[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("model_type", ["mixtral", "gpt_oss"])
def test_a_layer_keeping_fewer_experts_than_top_k_routes_to_all_it_keeps(model_type):
    model = tiny_moe(model_type)
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = np.ones((2, N), dtype=bool)
    mask[0] = False
    mask[0, 3] = True  # one expert left in layer 0, fewer than top-k = 2
    with native.route_mask(model, mask):
        masked, routed = _router_outputs(model, ids)
    scores, index = routed[0][1], routed[0][2]
    assert ((index == 3) | (scores == 0)).all() and (scores[index == 3] > 0).all()
    removed = native.remove_experts(model, mask)
    assert native.routers(removed)[0].top_k == 1 and native.routers(removed)[1].top_k == K
    with torch.no_grad():
        torch.testing.assert_close(removed(input_ids=ids).logits, masked, rtol=1e-5, atol=1e-5)


def test_masks_that_prune_a_whole_layer_are_refused():
    model = tiny_moe("mixtral")
    mask = np.ones((2, N), dtype=bool)
    mask[1] = False
    with pytest.raises(ValueError, match="every expert of MoE layer 1"):
        with native.route_mask(model, mask):
            pass
    with pytest.raises(ValueError, match="every expert of MoE layer 1"):
        native.remove_experts(model, mask)
    with pytest.raises(ValueError, match="not a native mixture"):
        native.routers(transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.for_model("llama", **BASE)))


def test_group_limited_routing_masks_exactly_and_refuses_removal():
    model = tiny_moe("deepseek_v3", n_group=2, topk_group=1, first_k_dense_replace=1, num_hidden_layers=3)
    assert [layer for layer, _ in native.moe_blocks(model)] == [1, 2]  # the first layer stays dense
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    dense, outputs = _router_outputs(model, ids)
    for layer, router in enumerate(native.routers(model)):
        again = native.route(model, router, outputs[layer][0])
        assert torch.equal(again[1], outputs[layer][2]) and torch.equal(again[0], outputs[layer][1])
    mask = np.ones((2, N), dtype=bool)
    mask[0, [0, 1, 2]] = False  # most of group 0 (experts 0-3)
    with native.route_mask(model, mask):
        _, routed = _router_outputs(model, ids)
    assert mask[0][routed[0][2].reshape(-1).numpy()].all()
    with pytest.raises(ValueError, match="within groups"):
        native.remove_experts(model, mask)


def test_the_dense_paths_name_the_native_module_for_a_native_model():
    from babel_utils.models.adapters import d_ff

    with pytest.raises(ValueError, match="native mixture of experts.*babel_utils.kinds.native"):
        d_ff(tiny_moe("olmoe"))
