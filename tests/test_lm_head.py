"""The LM head's log-probabilities (models/lm_head.py): each precision equals its definition, written out in float64,
whichever kernel computes it; the vocabulary is reduced in chunks without changing the numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from babel_utils.models import lm_head


class _Head(nn.Module):
    """A model that is only an LM head (output_logits finds no adapter row, so no scaling or capping)."""

    def __init__(self, vocab: int, width: int, bias: bool) -> None:
        super().__init__()
        self.head = nn.Linear(width, vocab, bias=bias)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
            if bias:
                self.head.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))

    def get_output_embeddings(self) -> nn.Linear:
        return self.head


def _definition(model: _Head, hidden: torch.Tensor, targets: torch.Tensor, head_dtype: str) -> torch.Tensor:
    """log p(target) as models/lm_head.py defines each precision, in float64 (the rounding to bfloat16 explicit)."""
    weight, bias = model.head.weight.detach(), model.head.bias
    if head_dtype == "bfloat16":
        exact = hidden.bfloat16().double() @ weight.bfloat16().double().T
        logits = exact.to(torch.bfloat16).double()  # the sums rounded to bfloat16
    else:
        logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.detach().double()
    return logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]


@pytest.fixture(autouse=True)
def no_adapter(monkeypatch):
    monkeypatch.setattr(lm_head, "output_logits", lambda model, logits: logits)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("head_dtype, native", [("float32", False), ("bfloat16", False), ("bfloat16", True)])
def test_each_precision_equals_its_definition_in_chunks(monkeypatch, head_dtype, native, bias):
    monkeypatch.setattr(lm_head, "VOCAB_CHUNK", 96)  # several chunks, the last one short
    monkeypatch.setattr(lm_head, "POSITION_CHUNK", 5)
    monkeypatch.setattr(lm_head, "native_bf16", lambda device: native)
    model = _Head(vocab=1000, width=48, bias=bias)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(13, 48, generator=gen) * 0.5
    targets = torch.randint(0, 1000, (13,), generator=gen)
    got = lm_head.target_logprobs(model, hidden, targets, head_dtype)
    want = _definition(model, hidden, targets, head_dtype)
    assert got.dtype == torch.float32 and got.shape == (13,)
    # float32 sums in another order: a few 1e-6; bfloat16 adds rare ties of the rounding (one bfloat16 step)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-4 if head_dtype == "float32" else 0.05)
    assert (got.double() - want).abs().median() < 1e-4


def test_native_and_emulated_bfloat16_agree_as_the_reproduction_needs(monkeypatch):
    model = _Head(vocab=4000, width=64, bias=False)
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(300, 64, generator=gen) * 0.3
    targets = torch.randint(0, 4000, (300,), generator=gen)
    runs = {}
    for native in (False, True):
        monkeypatch.setattr(lm_head, "native_bf16", lambda device, native=native: native)
        runs[native] = lm_head.target_logprobs(model, hidden, targets, "bfloat16").double()
    mean_nll = -runs[False].mean()
    assert abs(runs[True].mean() + mean_nll) / mean_nll < 1e-5  # a bits-per-byte difference far below 1e-4


def test_the_prepared_matrix_follows_the_weights(monkeypatch):
    monkeypatch.setattr(lm_head, "native_bf16", lambda device: False)
    model = _Head(vocab=50, width=8, bias=False)
    hidden, targets = torch.randn(4, 8), torch.arange(4)
    before = lm_head.target_logprobs(model, hidden, targets, "float32")
    with torch.no_grad():
        model.head.weight.mul_(2.0)  # an in-place change (a new version of the same storage)
    after = lm_head.target_logprobs(model, hidden, targets, "float32")
    torch.testing.assert_close(after.double(), _definition(model, hidden, targets, "float32"), rtol=0, atol=1e-5)
    assert not torch.allclose(before, after)
    assert "_babel_head" not in model.state_dict() and not any("babel" in n for n, _ in model.named_buffers())


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="Unknown head_dtype 'float16'; known: float32, bfloat16"):
        lm_head.target_logprobs(_Head(10, 4, False), torch.randn(2, 4), torch.arange(2), "float16")


def test_a_capped_instruction_set_means_emulated_bfloat16(monkeypatch):
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert not lm_head.native_bf16(torch.device("cpu"))
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX512_CORE_AMX")
    have = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert lm_head.native_bf16(torch.device("cpu")) == have


@pytest.mark.parametrize("native", [False, True])
def test_float32_moves_with_last_bit_noise_only_as_much_as_it_must(monkeypatch, native):
    """The body's activations differ between CPUs in their last bits. A float32 head passes such a change on as
    it is; bfloat16 rounding turns it into jumps of a whole rounding step (why float32 is the default)."""
    monkeypatch.setattr(lm_head, "native_bf16", lambda device: native)
    model = _Head(vocab=6000, width=64, bias=True)
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(400, 64, generator=gen) * 0.4
    noisy = hidden * (1 + 1e-5 * torch.randn(400, 64, generator=gen))  # far below a bfloat16 step (4e-3)
    targets = torch.randint(0, 6000, (400,), generator=gen)
    exact = _definition(model, noisy, targets, "float32") - _definition(model, hidden, targets, "float32")
    moved = {dtype: lm_head.target_logprobs(model, noisy, targets, dtype).double()
             - lm_head.target_logprobs(model, hidden, targets, dtype).double() for dtype in lm_head.HEAD_DTYPES}
    excess = {dtype: float((change - exact).abs().mean()) for dtype, change in moved.items()}
    # float32 follows the exact change up to its own rounding; bfloat16 departs from it hundreds of times more
    assert excess["float32"] < 5e-6
    assert excess["bfloat16"] > 30 * excess["float32"]
