"""Recording: hooks leave the model unchanged; counts match a plain reference; selection sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import balanced_labels

from babel_utils.models.adapters import down_projs
from babel_utils.models.hooks import ffn_input_hooks
from babel_utils.record.counting import ExpertCounter, frequency_table, n_selected, record_counts

N_EXPERTS = 16


def batch(tokenizer, texts):
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    count = enc.attention_mask.bool() & (enc.input_ids != tokenizer.bos_token_id)
    return enc.input_ids, enc.attention_mask, count


TEXTS = ["All human beings are born free and equal in dignity and rights.",
         "Everyone has the right to life, liberty and security of person. No one shall be held."]


def reference_counts(model, input_ids, attention_mask, count, labels, k, score="abs", selection="cross_layer"):
    """Plain reference: keep every activation, then score, z-score, select and count with loops."""
    acts = {}
    # h as [batch, tokens, d_ff] (OPT's FFN sees the tokens flattened)
    handles = [down.register_forward_pre_hook(
        lambda m, a, i=i: acts.__setitem__(i, a[0].detach().clone().reshape(*input_ids.shape, -1)))
        for i, down in enumerate(down_projs(model))]
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=attention_mask)
    for h in handles:
        h.remove()
    n_layers = len(acts)
    counts = np.zeros((n_layers, N_EXPERTS), dtype=np.int64)
    for b, t in zip(*np.nonzero(count.numpy())):
        z = np.zeros((n_layers, N_EXPERTS))
        for layer in range(n_layers):
            h = acts[layer][b, t].numpy().astype(np.float64)
            for e in range(N_EXPERTS):
                part = h[labels[layer] == e]
                z[layer, e] = {"abs": np.abs(part), "relu": np.maximum(part, 0), "signed": part}[score].sum()
            z[layer] = (z[layer] - z[layer].mean()) / z[layer].std()
        if selection == "cross_layer":
            top = np.argsort(-z.ravel(), kind="stable")[:k]
            for idx in top:
                counts[idx // N_EXPERTS, idx % N_EXPERTS] += 1
        else:
            for layer in range(n_layers):
                counts[layer, np.argsort(-z[layer], kind="stable")[:k]] += 1
    return counts


@pytest.mark.parametrize("score", ["abs", "relu", "signed"])
@pytest.mark.parametrize("selection", ["cross_layer", "per_layer"])
def test_counts_match_plain_reference(tiny, score, selection):
    model, tokenizer = tiny
    model = model.double()
    input_ids, attention_mask, count = batch(tokenizer, TEXTS)
    labels = balanced_labels(4, 256, N_EXPERTS)
    got = record_counts(model, input_ids, attention_mask, count, labels, N_EXPERTS, batch_size=1,
                        score=score, selection=selection)
    k = n_selected(4, N_EXPERTS, 0.10, selection)
    want = reference_counts(model, input_ids, attention_mask, count, labels, k, score, selection)
    model.float()
    np.testing.assert_array_equal(got.counts, want)
    assert got.n_tokens == int(count.sum())


def test_hooked_forward_returns_the_same_logits(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask, _ = batch(tokenizer, TEXTS)
    with torch.no_grad():
        plain = model(input_ids=input_ids, attention_mask=attention_mask).logits
        seen = []
        with ffn_input_hooks(model, lambda layer, h: seen.append(layer)):
            hooked = model(input_ids=input_ids, attention_mask=attention_mask).logits
        after = model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert seen == [0, 1, 2, 3]
    assert torch.equal(plain, hooked) and torch.equal(plain, after)
    assert all(not down._forward_pre_hooks for down in down_projs(model))


def test_each_token_selects_exactly_k(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask, count = batch(tokenizer, TEXTS)
    labels = balanced_labels(4, 256, N_EXPERTS)
    for fraction in [0.10, 0.25, 0.03]:
        got = record_counts(model, input_ids, attention_mask, count, labels, N_EXPERTS, top_fraction=fraction)
        k = math.ceil(round(fraction * 4 * N_EXPERTS, 9))
        assert got.counts.sum() == k * got.n_tokens
        assert got.counts.max() <= got.n_tokens


def test_n_selected_is_robust_to_float_rounding():
    assert n_selected(10, 256, 0.10, "cross_layer") == 256  # 0.1 * 2560 = 256.00000000000003
    assert n_selected(18, 256, 0.10, "cross_layer") == 461
    assert n_selected(18, 256, 0.10, "per_layer") == 26


def test_bos_and_padding_never_count(tiny):
    model, tokenizer = tiny
    labels = balanced_labels(4, 256, N_EXPERTS)
    input_ids, attention_mask, count = batch(tokenizer, TEXTS)
    together = record_counts(model, input_ids, attention_mask, count, labels, N_EXPERTS)
    apart = [record_counts(model, *batch(tokenizer, [text]), labels, N_EXPERTS) for text in TEXTS]
    assert together.n_tokens == sum(a.n_tokens for a in apart) == int(count.sum())
    assert (input_ids[:, 0] == tokenizer.bos_token_id).all() and (attention_mask == 0).any()
    np.testing.assert_array_equal(together.counts, apart[0].counts + apart[1].counts)


def test_block_counts_add_up_across_batches(tiny):
    model, tokenizer = tiny
    labels = balanced_labels(4, 256, N_EXPERTS)
    input_ids, attention_mask, count = batch(tokenizer, TEXTS * 3)
    got = record_counts(model, input_ids, attention_mask, count, labels, N_EXPERTS, batch_size=2, block=10)
    assert got.block_tokens.sum() == got.n_tokens
    assert (got.block_tokens[:-1] == 10).all()
    np.testing.assert_array_equal(got.block_counts.sum(0), got.counts)


def test_counter_memory_does_not_grow_with_tokens(tiny):
    model, tokenizer = tiny
    labels = balanced_labels(4, 256, N_EXPERTS)
    counter = ExpertCounter(model, labels, N_EXPERTS, block=0)
    for _ in range(3):
        counter.add_batch(*batch(tokenizer, TEXTS))
    assert counter.counts.dtype == torch.int64 and counter.counts.numel() == 4 * N_EXPERTS
    assert counter.blocks == [] and all(s is None for s in counter._scores)


def test_frequency_table_layout(tiny):
    model, tokenizer = tiny
    labels = balanced_labels(4, 256, N_EXPERTS)
    counts = {"en": record_counts(model, *batch(tokenizer, TEXTS), labels, N_EXPERTS)}
    table = frequency_table(counts)
    assert list(table.columns) == ["language", "layer", "expert", "count", "n_tokens"]
    assert len(table) == 4 * N_EXPERTS and table["count"].sum() == counts["en"].counts.sum()


def test_several_splits_in_one_pass_count_exactly_like_separate_passes(tiny):
    from babel_utils.record.counting import record_counts_many

    model, tokenizer = tiny
    input_ids, attention_mask, count = batch(tokenizer, TEXTS * 2)
    splits = [(balanced_labels(4, 256, 16, seed=0), 16), (balanced_labels(4, 256, 8, seed=1), 8),
              (balanced_labels(4, 256, 64, seed=2), 64)]
    together = record_counts_many(model, input_ids, attention_mask, count, splits, batch_size=3, block=5)
    for (labels, n), got in zip(splits, together):
        alone = record_counts(model, input_ids, attention_mask, count, labels, n, batch_size=3, block=5)
        assert got.counts.shape == (4, n)
        np.testing.assert_array_equal(got.counts, alone.counts)
        np.testing.assert_array_equal(got.block_counts, alone.block_counts)
        assert got.n_tokens == alone.n_tokens


def test_recording_several_splits_caches_each_and_passes_over_the_text_once(tiny, monkeypatch):
    from babel_utils.core.config import BabelConfig
    from babel_utils.record import counting
    from babel_utils.run import stages

    model, tokenizer = tiny
    base = BabelConfig(model="tiny", languages=("en",), token_budget=120, seq_len=32, batch_size=2)
    cfgs = [base.replace(n_experts=n) for n in (8, 16)] + [base.replace(split_method="random")]
    labels = [balanced_labels(4, 256, c.n_experts, seed=i) for i, c in enumerate(cfgs)]
    forwards = []
    real = counting._forward_counting
    monkeypatch.setattr(counting, "_forward_counting", lambda counters, *a: (forwards.append(len(counters)),
                                                                              real(counters, *a)))
    together = stages.record_language_splits(cfgs, model, tokenizer, labels, "en", 120)
    assert forwards and set(forwards) == {3}  # every batch feeds the three splits at once
    forwards.clear()
    for c, lab, got in zip(cfgs, labels, together):
        again = stages.record_language(c, model, tokenizer, lab, "en", 120)  # cached under its own config
        np.testing.assert_array_equal(again.counts, got.counts)
    assert forwards == []
    fresh = stages.record_language(base.replace(n_experts=32), model, tokenizer,
                                   balanced_labels(4, 256, 32), "en", 120)
    assert fresh.counts.shape == (4, 32) and set(forwards) == {1}
    with pytest.raises(ValueError, match="differ only in their expert split; these differ: top_fraction"):
        stages.record_language_splits([base, base.replace(top_fraction=0.2)], model, tokenizer,
                                      labels[:1] * 2, "en", 120)


def _random_stream(seed: int, rows: int, cols: int):
    """Random token rows (every token counted) and balanced labels for the tiny model."""
    torch.manual_seed(seed)
    ids = torch.randint(3, 200, (rows, cols))
    am = torch.ones_like(ids)
    return ids, am, am.bool(), balanced_labels(4, 256, N_EXPERTS)


def test_counter_state_round_trips_resumes_and_merges_like_one_pass(tiny):
    """ExpertCounter's protocol (state_dict / load_state_dict / merge, after baukit's running statistics):
    counting half the rows, saving, resuming in a fresh counter and counting the rest equals one counter
    over all rows; merging two streams that meet on a block boundary does too."""
    from babel_utils.record.counting import ExpertCounter, LanguageCounts

    model, _ = tiny
    ids, am, mask, labels = _random_stream(0, 4, 16)
    options = dict(top_fraction=0.2, block=16)
    whole = ExpertCounter(model, labels, N_EXPERTS, **options)
    whole.add_batch(ids, am, mask)
    first = ExpertCounter(model, labels, N_EXPERTS, **options)
    first.add_batch(ids[:2], am[:2], mask[:2])
    resumed = ExpertCounter(model, labels, N_EXPERTS, **options)
    resumed.load_state_dict(first.state_dict())
    resumed.add_batch(ids[2:], am[2:], mask[2:])
    later = ExpertCounter(model, labels, N_EXPERTS, **options)
    later.add_batch(ids[2:], am[2:], mask[2:])
    want = whole.result()
    for got in (resumed.result(), first.merge(later), LanguageCounts.from_state_dict(whole.state_dict())):
        assert np.array_equal(got.counts, want.counts) and got.n_tokens == want.n_tokens
        assert np.array_equal(got.block_counts, want.block_counts)
        assert np.array_equal(got.block_tokens, want.block_tokens)
    odd = ExpertCounter(model, labels, N_EXPERTS, **options)
    odd.add_batch(ids[:1, :9], am[:1, :9], mask[:1, :9])  # ends inside a block: a merge cannot be exact
    with pytest.raises(ValueError, match="ends inside a block"):
        odd.merge(later)


def test_a_counter_started_inside_a_stream_numbers_its_blocks_on(tiny):
    """`start` (a distributed shard's stream position): a counter over the later rows of a stream counts only
    its own tokens, and its blocks are the stream's blocks from the one its first token falls in."""
    model, _ = tiny
    ids, am, mask, labels = _random_stream(1, 3, 12)
    whole = ExpertCounter(model, labels, N_EXPERTS, top_fraction=0.2, block=5)
    whole.add_batch(ids, am, mask)
    tail = ExpertCounter(model, labels, N_EXPERTS, top_fraction=0.2, block=5, start=12)
    tail.add_batch(ids[1:], am[1:], mask[1:])
    want, got = whole.result(), tail.result()
    assert got.n_tokens == 24 and got.block_tokens.tolist() == [3, 5, 5, 5, 5, 1]  # stream blocks 2..7
    head = ExpertCounter(model, labels, N_EXPERTS, top_fraction=0.2, block=5)
    head.add_batch(ids[:1], am[:1], mask[:1])
    # the stream's block 2 is split between the two counters; every later block is the tail's alone
    np.testing.assert_array_equal(got.block_counts[1:], want.block_counts[3:])
    np.testing.assert_array_equal(head.result().block_counts[2] + got.block_counts[0], want.block_counts[2])
    np.testing.assert_array_equal(head.result().counts + got.counts, want.counts)
