"""Every row of the architecture table, proved on a tiny random model built from its transformers config
(no download): counting equals the plain reference, logits made from the body equal the model's own
(scaling and soft-capping included), the MoE view is exact, and masking equals physical pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import balanced_labels
from test_counting import reference_counts

from babel_utils.evaluate import scoring
from babel_utils.models.adapters import ADAPTERS, NATIVE, d_ff, down_projs, first_module, mlps, n_layers
from babel_utils.models.moe import moe_view
from babel_utils.prune.apply import apply_mask, apply_row_masks
from babel_utils.prune.surgery import load_pruned, physically_prune, save_pruned
from babel_utils.record.counting import n_selected, record_counts

SMALL = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
             eos_token_id=2, tie_word_embeddings=True)
# what a row's tiny model needs beyond SMALL: a multimodal model's text and vision parts, a value that makes
# the row's logit facts visible (a scale, a divisor and a soft cap far from 1 and infinity)
EXTRA: dict[str, dict] = {
    "gemma2": dict(final_logit_softcapping=2.0),
    "gemma3_text": dict(final_logit_softcapping=2.0),
    "granite": dict(logits_scaling=4.0),
    "cohere": dict(logit_scale=0.25),
    "cohere2": dict(logit_scale=0.25),
}
# the model types whose configs name their sizes otherwise than SMALL does (SMALL's keys are then ignored)
OWN_SIZES: dict[str, dict] = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128),
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4),  # FFN width 4 x hidden: 128
    "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32,
                max_position_embeddings=128),
    "xglm": dict(d_model=32, num_layers=2, attention_heads=4, ffn_dim=64, max_position_embeddings=128),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=128),
}
N_EXPERTS = 16  # the plain reference of test_counting counts 16 experts per layer

# h, the input of the FFN's second matrix, written out by hand per model type from the FFN's own modules
# (independent of the adapter table): what the recording scores and the masks zero.
PLAIN_H = {
    "gpt2": lambda m, x: m.act(x @ m.c_fc.weight + m.c_fc.bias),  # Conv1D: weight [in, out]
    "bloom": lambda m, x: m.gelu_impl(x @ m.dense_h_to_4h.weight.T + m.dense_h_to_4h.bias),
    "gpt_neox": lambda m, x: m.act(x @ m.dense_h_to_4h.weight.T + m.dense_h_to_4h.bias),
    "opt": lambda m, x: m.activation_fn(x @ m.fc1.weight.T + m.fc1.bias),
    "xglm": lambda m, x: m.activation_fn(x @ m.fc1.weight.T + m.fc1.bias),
    "phi3": lambda m, x: (lambda g, u: m.activation_fn(g) * u)(*(x @ m.gate_up_proj.weight.T).chunk(2, dim=-1)),
}
GATED_H = lambda m, x: m.act_fn(x @ m.gate_proj.weight.T) * (x @ m.up_proj.weight.T)  # noqa: E731


def tiny_of(model_type: str) -> torch.nn.Module:
    """A random tiny causal LM of one model type (seeded)."""
    torch.manual_seed(0)
    if model_type == "gemma3":  # multimodal: the text part as the others, a one-layer vision tower
        config = transformers.Gemma3Config(
            text_config=dict(SMALL, final_logit_softcapping=2.0),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=16), mm_tokens_per_image=4)
        return transformers.Gemma3ForConditionalGeneration(config).eval()
    sizes = OWN_SIZES.get(model_type, SMALL)
    ids = {k: SMALL[k] for k in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")}
    config = transformers.AutoConfig.for_model(model_type, **{**sizes, **ids}, **EXTRA.get(model_type, {}))
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("model_type", sorted(t for t, a in ADAPTERS.items() if a.kind != NATIVE))  # natives: test_native
def test_every_row_of_the_table_counts_scores_views_and_prunes_like_the_model(model_type, tmp_path):
    model = tiny_of(model_type)
    assert model.config.model_type == model_type
    L, width = n_layers(model), d_ff(model)
    labels = balanced_labels(L, width, N_EXPERTS, seed=1)
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(2))
    am = torch.ones_like(ids)
    count = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am).logits.double()
    # counting (in float64, so that near-ties cannot differ; XGLM's attention mask cannot be float64, so it counts
    # in float32): the same table as the plain reference
    if model_type != "xglm":
        model.double()
    found = record_counts(model, ids, am, count, labels, N_EXPERTS, batch_size=1)
    want = reference_counts(model, ids, am, count, labels, n_selected(L, N_EXPERTS, 0.10, "cross_layer"))
    model.float()
    np.testing.assert_array_equal(found.counts, want)
    # the h that the hooks see is the FFN's own, written out by hand from its modules and its input x
    hs = plain_h_of_every_layer(model, ids, am)
    for layer, (x, h) in enumerate(hs):
        by_hand = PLAIN_H.get(model_type, GATED_H)(mlps(model)[layer], x)
        torch.testing.assert_close(h, by_hand, rtol=1e-5, atol=1e-5)
    # logits from the body's hidden states: what the model's own forward gives (scaling, soft cap)
    logp = scoring._next_token_logprobs(model, ids, am)
    expected = torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(logp, expected, rtol=1e-4, atol=1e-4)
    mask = np.random.default_rng(3).random((L, N_EXPERTS)) > 0.4
    with torch.no_grad():
        with moe_view(model, labels):  # every expert on: the dense model
            torch.testing.assert_close(model(input_ids=ids).logits.double(), logits, rtol=1e-5, atol=1e-5)
        with apply_mask(model, labels, mask):
            masked = model(input_ids=ids).logits
        other = ~mask | (np.arange(N_EXPERTS) == 0)  # a second mask for the other row of the batch
        with apply_mask(model, labels, other):
            masked_other = model(input_ids=ids).logits
        with apply_row_masks(model, labels, np.stack([mask, other])) as select:  # each row its own mask
            select([0, 1])
            rows = model(input_ids=ids).logits
        pruned_model = physically_prune(model, labels, mask)
        pruned = pruned_model(input_ids=ids).logits
    torch.testing.assert_close(pruned, masked, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rows[0], masked[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rows[1], masked_other[1], rtol=1e-5, atol=1e-5)
    # exported and loaded back with its per-layer widths: the same model
    folder = tmp_path / model_type
    save_pruned(pruned_model, folder)
    with torch.no_grad():
        assert torch.equal(load_pruned(folder)(input_ids=ids).logits, pruned)


def plain_h_of_every_layer(model, ids, am):
    """(x, h) of every layer: the input of its FFN's first matrix and of its second, from one forward."""
    seen, handles = {}, []
    for layer, down in enumerate(down_projs(model)):
        handles.append(first_module(model, layer).register_forward_pre_hook(
            lambda m, a, i=layer: seen.__setitem__(("x", i), a[0].detach())))
        handles.append(down.register_forward_pre_hook(lambda m, a, i=layer: seen.__setitem__(("h", i), a[0].detach())))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    for handle in handles:
        handle.remove()
    return [(seen["x", i], seen["h", i]) for i in range(n_layers(model))]


def test_a_model_type_without_a_row_names_the_supported_ones_and_how_to_add_one():
    from babel_utils.models.adapters import get_adapter

    config = transformers.AutoConfig.for_model("mamba", vocab_size=300, hidden_size=32, num_hidden_layers=1)
    with pytest.raises(ValueError) as err:
        get_adapter(transformers.AutoModelForCausalLM.from_config(config))
    assert "Unsupported architecture 'mamba'" in str(err.value) and "olmo2" in str(err.value)
    assert "tests/test_architectures.py" in str(err.value)
