"""The MoE view computes the dense model exactly; switching experts off equals zeroing their neurons."""

from __future__ import annotations

import numpy as np
import torch
from conftest import balanced_labels

from babel_utils.models.hooks import ffn_input_hooks
from babel_utils.models.moe import moe_view


def test_moe_view_with_every_expert_on_equals_dense(tiny):
    model, tokenizer = tiny
    enc = tokenizer(["Article 1. All human beings are born free."], return_tensors="pt")
    labels = balanced_labels(4, 256, 16, seed=3)
    with torch.no_grad():
        dense = model(**enc).logits
        with moe_view(model, labels):
            moe = model(**enc).logits
        again = model(**enc).logits
    torch.testing.assert_close(moe, dense, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, dense)


def test_masked_moe_view_equals_zeroing_neurons(tiny):
    model, tokenizer = tiny
    enc = tokenizer(["Everyone has the right to education."], return_tensors="pt")
    labels = balanced_labels(4, 256, 16, seed=4)
    masks = np.random.default_rng(0).random((4, 16)) > 0.3
    keep = [torch.as_tensor(masks[layer][labels[layer]]) for layer in range(4)]
    with torch.no_grad():
        with moe_view(model, labels, masks):
            moe = model(**enc).logits
        with ffn_input_hooks(model, lambda layer, h: h * keep[layer]):
            zeroed = model(**enc).logits
    torch.testing.assert_close(moe, zeroed, rtol=1e-5, atol=1e-5)
