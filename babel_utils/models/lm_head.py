"""log p(target | hidden state) through a model's LM head, over its whole vocabulary: the costliest step of
every evaluation (Gemma 3's head has 262,144 rows; its body is 18 narrow layers).

The head's arithmetic is a parameter of the run (`head_dtype`), defined by what it computes rather than by the
kernel that computes it, so that a result is the same on every machine:

- "float32" (the default): logits = h W^T in float32.
- "bfloat16": h and W rounded to bfloat16, their products summed in float32 and the sums rounded to
  bfloat16, which is what a bfloat16 matrix product returns. Where the hardware multiplies bfloat16 itself
  (AVX512-BF16 or AMX on the CPU, a GPU) that product runs, about twice as fast as float32 on this project's
  CPUs; elsewhere the same numbers come from a float32 product of the rounded matrices, rounded again (equal
  up to the order of float32 sums, which the rounding hides but for rare ties).

Why float32 is the default: the body's float32 activations differ between CPUs in their last bits (other
kernels sum in another order). A float32 logit moves with them by as little; a bfloat16 logit near a rounding
boundary moves by a whole bfloat16 step (0.125 at 20), and the largest logits carry most of the softmax, so
bfloat16 turns last-bit noise into bits-per-byte differences 100 to 1000 times larger (measured between an
Intel CPU with AMX and an AMD one: 2.1e-4 relative against float32's 5e-7; BENCHMARKS.md, "The LM head").

Everything after the product (a bias, the model's scaling and soft-capping, the log-softmax) is float32.
The log-softmax runs over chunks of the vocabulary with a running maximum (an online log-sum-exp): memory
holds [POSITION_CHUNK, VOCAB_CHUNK] logits at a time and each chunk is reduced while it is in cache.
BENCHMARKS.md ("The LM head") measures both precisions and the effect of bfloat16 on bits per byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..core.config import CHOICES
from .adapters import output_logits

HEAD_DTYPES: tuple[str, ...] = CHOICES["head_dtype"]
POSITION_CHUNK = 256  # positions whose logits exist at once
VOCAB_CHUNK = 16384  # vocabulary rows per product: [256, 16384] float32 logits are 16 MB
# oneDNN's instruction-set caps (DNNL_MAX_CPU_ISA) at or above which it multiplies bfloat16 natively
_NATIVE_BF16_ISAS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10")


def native_bf16(device: torch.device) -> bool:
    """Whether this device multiplies bfloat16 matrices natively (else bfloat16 is emulated in float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    isa = os.environ.get("DNNL_MAX_CPU_ISA", "ALL").upper() or "ALL"
    capped = not isa.startswith(_NATIVE_BF16_ISAS)
    return not capped and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def check_head_dtype(head_dtype: str) -> str:
    """The name of a head precision, or an error naming the known ones."""
    if head_dtype not in HEAD_DTYPES:
        raise ValueError(f"Unknown head_dtype {head_dtype!r}; known: {', '.join(HEAD_DTYPES)}.")
    return head_dtype


@dataclass(frozen=True)
class _Prepared:
    """The head's matrix in the form its product needs, made once per weight and precision."""

    key: tuple
    weight: torch.Tensor  # [vocab, d]: float32, bfloat16, or float32 holding bfloat16 values (emulated)
    bias: torch.Tensor | None  # float32
    native: bool  # bfloat16 multiplied natively


def _prepare(head: nn.Module, head_dtype: str, device: torch.device) -> _Prepared:
    """The head's matrix for `head_dtype`, cached on the head module until its weight changes."""
    weight = head.weight.detach()
    native = head_dtype == "bfloat16" and native_bf16(device)
    version = 0 if weight.is_inference() else weight._version  # inference tensors keep no version counter
    key = (weight.data_ptr(), version, weight.dtype, head_dtype, native)
    cached = getattr(head, "_babel_head", None)
    if cached is not None and cached.key == key:
        return cached
    if head_dtype == "float32":
        prepared = weight.float()
    else:
        rounded = weight.to(torch.bfloat16)
        prepared = rounded if native else rounded.float()
    bias = getattr(head, "bias", None)
    made = _Prepared(key, prepared.contiguous(), None if bias is None else bias.detach().float(), native)
    head._babel_head = made  # a plain attribute: not a parameter or buffer, never saved
    return made


def _logit_chunks(hidden: torch.Tensor, prepared: _Prepared, head_dtype: str) -> Iterator[tuple[int, torch.Tensor]]:
    """(first vocabulary row, float32 logits [N, rows]) of hidden [N, d] @ W.T, chunk by chunk."""
    weight, vocab = prepared.weight, prepared.weight.shape[0]
    if hidden.device.type == "cpu" and not prepared.native:
        # one product by numpy's OpenBLAS (1.4-2x torch's MKL on the project's AMD CPUs); in chunks its
        # threads and torch's would take turns at every chunk, which cost more than the chunks save
        whole = torch.from_numpy(np.matmul(hidden.numpy(), weight.numpy().T))
        chunks = ((start, whole[:, start:start + VOCAB_CHUNK]) for start in range(0, vocab, VOCAB_CHUNK))
    else:
        chunks = ((start, hidden @ weight[start:start + VOCAB_CHUNK].T) for start in range(0, vocab, VOCAB_CHUNK))
    for start, logits in chunks:
        if head_dtype == "bfloat16":  # the native product returns bfloat16; the emulated one rounds to it
            logits = logits.to(torch.bfloat16)
        yield start, logits.float().contiguous()  # a slice of `whole` is strided; reductions want rows


def _head_input(hidden: torch.Tensor, prepared: _Prepared, head_dtype: str) -> torch.Tensor:
    """The hidden states rounded to the head's input precision, in the dtype of its prepared matrix."""
    rounded = hidden.to(torch.bfloat16) if head_dtype == "bfloat16" else hidden
    return rounded.to(prepared.weight.dtype).contiguous()


def _chunk_logprobs(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, prepared: _Prepared,
                    head_dtype: str) -> torch.Tensor:
    """log p(targets | hidden) for up to POSITION_CHUNK positions, the vocabulary reduced chunk by chunk."""
    n = hidden.shape[0]
    running_max = torch.full((n,), float("-inf"), device=hidden.device)
    total = torch.zeros(n, device=hidden.device)
    target_logit = torch.zeros(n, device=hidden.device)
    for start, logits in _logit_chunks(hidden, prepared, head_dtype):
        stop = start + logits.shape[1]
        if prepared.bias is not None:
            logits = logits + prepared.bias[start:stop]
        logits = output_logits(model, logits)
        inside = (targets >= start) & (targets < stop)
        rows = inside.nonzero().squeeze(-1)
        target_logit[rows] = logits[rows, targets[rows] - start]
        new_max = torch.maximum(running_max, logits.amax(-1))
        total = total * torch.exp(running_max - new_max) + logits.sub_(new_max[:, None]).exp_().sum(-1)
        running_max = new_max
    return target_logit - running_max - torch.log(total)


def whole_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position [N] from whole logits [N, vocab] (a model or head babel cannot take apart),
    a float32 log-softmax."""
    return logits.float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@torch.inference_mode()
def target_logprobs(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                    head_dtype: str = "float32") -> torch.Tensor:
    """log p(targets[j] | hidden[j]) [N] (float32) through the model's LM head at `head_dtype`, as the
    model's forward makes logits (bias, scaling, soft-capping) and a float32 log-softmax over them."""
    head = model.get_output_embeddings()
    check_head_dtype(head_dtype)
    if not isinstance(head, nn.Linear):  # a head babel cannot take apart: its own forward, in float32
        return whole_logprobs(output_logits(model, head(hidden)), targets)
    prepared = _prepare(head, head_dtype, hidden.device)
    out = []
    for start in range(0, hidden.shape[0], POSITION_CHUNK):
        chunk = _head_input(hidden[start:start + POSITION_CHUNK], prepared, head_dtype)
        out.append(_chunk_logprobs(model, chunk, targets[start:start + POSITION_CHUNK], prepared, head_dtype))
    return torch.cat(out) if out else torch.zeros(0, device=hidden.device)
