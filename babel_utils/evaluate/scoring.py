"""Log-probabilities and generation: what every evaluation of a (pruned) model is made of (docs/method.md section 5).

- Perplexity and bits per byte of held-out text (`perplexity_many`). Texts are packed with
  `data.pack_tokens` (budget `eval_max_tokens`), the FULL model runs (its LM head at `head_dtype`,
  models/lm_head.py) and the next-token NLL (nats) is summed over every predicted real token: not BOS, not
  padding; the first
  text token of a row is predicted from BOS, and the EOS separators between documents are scored
  like any token. Tokenizers without BOS cannot predict a row's first token, which is then not scored.
  bits per byte = nll_sum / ln(2) / n_bytes, where n_bytes counts the UTF-8 bytes of exactly the
  text whose tokens were scored: the scored target tokens, in order, decoded with special tokens
  skipped (EOS separators add no byte). When the whole text fits in the budget (and a BOS exists)
  this is the texts' own byte count, for a byte-level tokenizer exactly so.
- Continuation log-likelihoods (`continuation_logliks`), whose tokens are found as lm-eval does:
  encode(context + continuation) minus encode(context), falling back to encoding the continuation
  alone when the context's tokens are not a prefix.
- Greedy generation (`generate_greedy`), batched and left-padded, optionally stopped early.
Every function takes `on_batch`, called before each forward with the variant of each row, so several
masks share one batch (apply.apply_row_masks).
"""

from __future__ import annotations

import logging
import math
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.progress import tqdm
from ..data import text as data
from ..models import lm_head
from ..models.adapters import body, get_adapter, model_device

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- log-probabilities

def _hidden_states(model: nn.Module, ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
    """Last hidden states [B, T, d_model] of the model body (no LM head: logits are made where needed)."""
    return body(model)(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state


def _has_body(model: nn.Module) -> bool:
    """Whether babel knows the model's body and LM head (a supported architecture), so that logits can
    be made only where they are needed; other callables (test doubles) are run whole."""
    try:
        get_adapter(model)
    except ValueError:
        return False
    return model.get_output_embeddings() is not None


@torch.inference_mode()
def _next_token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         scored: torch.Tensor | None = None, head_dtype: str = "float32") -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every row and t, [B, T-1], on the CPU (float64).

    With `scored` (bool [B, T-1]) the LM head runs only on the scored positions; the others are 0. The head
    computes at `head_dtype` (models/lm_head.py).
    """
    device = model_device(model)
    ids, am = input_ids.to(device), attention_mask.to(device)
    want = torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool) if scored is None else scored.bool()
    rows, cols = torch.nonzero(want, as_tuple=True)
    targets = ids[:, 1:][rows.to(device), cols.to(device)]
    if _has_body(model):
        hidden = _hidden_states(model, ids, am)[:, :-1]
        logp = lm_head.target_logprobs(model, hidden[rows.to(hidden.device), cols.to(hidden.device)], targets,
                                       head_dtype)
    else:
        logits = model(input_ids=ids, attention_mask=am, use_cache=False).logits[:, :-1]
        logp = lm_head.whole_logprobs(logits[rows.to(logits.device), cols.to(logits.device)], targets)
    out = torch.zeros(want.shape, dtype=torch.float64)
    out[rows, cols] = logp.double().cpu()
    return out


# --------------------------------------------------------------------------- perplexity


def scored_bytes(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> int:
    """UTF-8 bytes of the text of some scored tokens (decoded in order, special tokens skipped)."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return len(text.encode("utf-8"))


def _ppl_result(tokenizer: PreTrainedTokenizerBase, nll_sum: float, targets: list[int]) -> dict[str, float]:
    """nll_sum (nats), n_tokens, n_bytes, perplexity and bits per byte of some scored target tokens."""
    n_bytes = scored_bytes(tokenizer, targets)
    n_tokens = len(targets)
    if n_tokens == 0 or n_bytes == 0:
        raise ValueError("No held-out token was scored: give longer texts or a larger max_tokens.")
    return {"nll_sum": nll_sum, "n_tokens": n_tokens, "n_bytes": n_bytes,
            "perplexity": math.exp(nll_sum / n_tokens), "bits_per_byte": nll_sum / math.log(2) / n_bytes}


def _row_nll(model: nn.Module, ids: torch.Tensor, am: torch.Tensor, scored: torch.Tensor,
             head_dtype: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Summed next-token NLL of the scored targets of each row, [B], and each row's NLL per scored target in
    order; right padding beyond the longest row of the batch is trimmed, so it is never run."""
    width = int(am.sum(1).max())
    ids, am, keep = ids[:, :width], am[:, :width], scored[:, :width - 1]
    logp = _next_token_logprobs(model, ids, am, keep, head_dtype)
    return -(logp * keep).sum(1), [-logp[i][keep[i]] for i in range(len(logp))]


def _blocks(tokenizer: PreTrainedTokenizerBase, token_nll: np.ndarray, targets: list[int],
            block: int) -> dict[str, list]:
    """Per block of `block` consecutive scored tokens (the last may be shorter): summed NLL and UTF-8 bytes,
    the units of the paired bootstrap (evaluate/intervals.py); the same blocks for every variant of the same text."""
    starts = range(0, len(targets), block)
    return {"block_nll": [float(token_nll[s:s + block].sum()) for s in starts],
            "block_bytes": [scored_bytes(tokenizer, targets[s:s + block]) for s in starts]}


def _length_batches(items: list[tuple[int, int]], length: Sequence[int], batch_size: int) -> list[list]:
    """(variant, row) items in batches of up to `batch_size` rows of similar length, longest first: the short
    last row of a text (512 tokens are rows of 255 + 255 + 2) never pads a batch of full rows, so the width
    _row_nll trims to is never much more than what the batch holds (a third less body work at 512 tokens)."""
    batches: list[list] = []
    for item in sorted(items, key=lambda item: -length[item[1]]):
        batch = batches[-1] if batches else None
        if batch is None or len(batch) == batch_size or 2 * length[item[1]] < length[batch[0][1]]:
            batches.append([item])
        else:
            batch.append(item)
    return batches


def perplexity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int,
               seq_len: int, batch_size: int, head_dtype: str = "float32") -> dict[str, float]:
    """Next-token NLL of held-out texts: nll_sum (nats), n_tokens, n_bytes, perplexity, bits_per_byte."""
    return perplexity_many(model, tokenizer, texts, max_tokens, seq_len, batch_size, 1, head_dtype=head_dtype)[0]


def perplexity_many(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int,
                    seq_len: int, batch_size: int, n_variants: int,
                    on_batch: Callable[[list[int]], None] | None = None, block_tokens: int = 0,
                    head_dtype: str = "float32") -> list[dict]:
    """`perplexity` of `n_variants` variants of the model at once: the packed rows are repeated once per
    variant and batched together; before every forward `on_batch(variant of each row)` is called (e.g. the
    `select` of apply.apply_row_masks, so each row runs under its own mask). One result per variant; with
    `block_tokens` each also holds its NLL and bytes per block of that many scored tokens (`_blocks`)."""
    packed = data.pack_tokens(tokenizer, texts, seq_len, budget=max_tokens)
    scored = data.count_mask(packed, tokenizer.bos_token_id)[:, 1:]  # targets: real, not BOS, not padding
    length = packed.attention_mask.sum(1).tolist()
    items = [(v, r) for v in range(n_variants) for r in range(packed.input_ids.shape[0])]
    nll = np.zeros(n_variants)
    per_token: dict[tuple[int, int], torch.Tensor] = {}
    for chunk in tqdm(_length_batches(items, length, batch_size), desc="perplexity", unit="batch", leave=False):
        rows = [r for _, r in chunk]
        if on_batch is not None:
            on_batch([v for v, _ in chunk])
        sums, tokens = _row_nll(model, packed.input_ids[rows], packed.attention_mask[rows], scored[rows], head_dtype)
        for item, value, row_tokens in zip(chunk, sums.tolist(), tokens):
            nll[item[0]] += value
            if block_tokens > 0:  # the blocks need each scored token's NLL; plain perplexity only the sums
                per_token[item] = row_tokens
    targets = packed.input_ids[:, 1:][scored].tolist()
    out = [_ppl_result(tokenizer, float(value), targets) for value in nll]
    if block_tokens > 0:
        for v, result in enumerate(out):
            token_nll = torch.cat([per_token[(v, r)] for r in range(packed.input_ids.shape[0])]).numpy()
            result.update(_blocks(tokenizer, token_nll, targets, block_tokens))
    return out


# --------------------------------------------------------------------------- continuation log-likelihoods


def _encode_pair(tokenizer: PreTrainedTokenizerBase, context: str,
                 continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a context (special tokens added) and of its continuation (lm-eval's split)."""
    ctx = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer(continuation, add_special_tokens=False)["input_ids"]


def _pad_right(seqs: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    am = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        am[i, :len(s)] = 1
    return ids, am


@torch.inference_mode()
def _batch_logliks(model: nn.Module, pairs: Sequence[tuple[list[int], list[int]]], pad: int,
                   head_dtype: str) -> list[float]:
    """Summed log-probabilities of each continuation given its context, one right-padded batch (the LM
    head runs only on the positions that predict a continuation token)."""
    ids, am = _pad_right([c + k for c, k in pairs], pad)
    scored = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    for i, (ctx, cont) in enumerate(pairs):
        scored[i, len(ctx) - 1:len(ctx) + len(cont) - 1] = True
    logp = _next_token_logprobs(model, ids, am, scored, head_dtype)
    return [float(logp[i][scored[i]].sum()) for i in range(len(pairs))]


def continuation_logliks(model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                         pairs: Sequence[tuple[str, str]], batch_size: int = 8, desc: str = "loglik",
                         on_batch: Callable[[list[int]], None] | None = None,
                         head_dtype: str = "float32") -> pd.DataFrame:
    """log p(continuation | context) for (context, continuation) pairs: columns loglik, n_tokens.
    `on_batch(indices of the batch's pairs)` is called before every forward."""
    encoded = [_encode_pair(tokenizer, c, k) for c, k in pairs]
    for (ctx, cont), (c, k) in zip(encoded, pairs):
        if not ctx or not cont:
            raise ValueError(f"Cannot score continuation {k!r} of context {c[:40]!r}: an empty token sequence.")
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logliks = np.zeros(len(encoded))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start:start + batch_size]
        if on_batch is not None:
            on_batch(idx)
        logliks[idx] = _batch_logliks(model, [encoded[i] for i in idx], pad, head_dtype)
    return pd.DataFrame({"loglik": logliks, "n_tokens": [len(cont) for _, cont in encoded]})


# --------------------------------------------------------------------------- generation


@contextmanager
def left_padding(tokenizer: PreTrainedTokenizerBase) -> Iterator[None]:
    """Pad on the left (and with EOS if the tokenizer has no pad token) inside; restored on exit."""
    side, had_pad = tokenizer.padding_side, tokenizer.pad_token is not None
    tokenizer.padding_side = "left"
    if not had_pad:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if not had_pad:
            tokenizer.pad_token = None


class _StopAt:
    """Stopping criterion: a sequence is done once its generated text matches `pattern` with at least one
    character after the match (so the match can no longer change). For MGSM the pattern is where
    `extract_answer` cuts a generation (a new "Question"): the text it reads is the same as without stopping."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_len: int, pattern: re.Pattern) -> None:
        self.tokenizer, self.prompt_len, self.pattern = tokenizer, prompt_len, pattern

    def _done(self, text: str) -> bool:
        match = self.pattern.search(text)
        return match is not None and match.end() < len(text)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([self._done(t) for t in texts], dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate_greedy(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                    max_new_tokens: int, batch_size: int = 8, desc: str = "generate",
                    stop_at: re.Pattern | None = None,
                    on_batch: Callable[[list[int]], None] | None = None) -> list[str]:
    """Greedy continuations of prompts (batched, left-padded), special tokens removed.

    `stop_at`: a sequence stops early once its generated text matches this regex (with one character
    after the match); the output begins with exactly the text an unstopped generation would.
    `on_batch(indices of the batch's prompts)` is called before every batch is generated.
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None) or tokenizer.eos_token_id
    outputs: list[str] = []
    with left_padding(tokenizer):
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                  pad_token_id=tokenizer.pad_token_id)
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", leave=False):
            if on_batch is not None:
                on_batch(list(range(start, min(start + batch_size, len(prompts)))))
            enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True)
            enc = {k: v.to(model_device(model)) for k, v in enc.items()}
            width = enc["input_ids"].shape[1]
            stop = StoppingCriteriaList([_StopAt(tokenizer, width, stop_at)]) if stop_at else None
            out = model.generate(**enc, generation_config=config, stopping_criteria=stop)
            outputs += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return outputs
