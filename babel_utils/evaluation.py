"""Evaluating a (pruned) model per language (SPEC section 5, notebook 08).

Metrics and the choices behind them:
- Perplexity and bits per byte on held-out text (`perplexity`). Texts are packed with
  `data.pack_tokens` (budget `eval_max_tokens`), the FULL model runs (LM head included) and the
  next-token NLL (nats) is summed over every predicted real token: not BOS, not padding; the first
  text token of a row is predicted from BOS, and the EOS separators between documents are scored
  like any token. Tokenizers without BOS cannot predict a row's first token, which is then not scored.
  bits per byte = nll_sum / ln(2) / n_bytes, where n_bytes counts the UTF-8 bytes of exactly the
  text whose tokens were scored: the scored target tokens, in order, decoded with special tokens
  skipped (EOS separators add no byte). When the whole text fits in the budget (and a BOS exists)
  this is the texts' own byte count, for a byte-level tokenizer exactly so.
- MGSM (`mgsm_eval`): zero-shot prompt "Question: {question}\\nAnswer:", the same English markers for
  every language (only the question's language changes), greedy generation, `extract_answer`
  (rules in its docstring), plus the log-likelihood of the gold answer " {answer}" given the prompt.
- X-CSQA (`choice_loglik_scores`): log-likelihood of each choice " {text}" after
  "Question: {stem}\\nAnswer:"; predicted = argmax of the log-likelihood divided by the number of
  characters of the continuation (" " + choice), as lm-eval's acc_norm (the unnormalised argmax
  is reported beside it).
Continuation tokens are found as lm-eval does: encode(context + continuation) minus encode(context),
falling back to encoding the continuation alone when the context's tokens are not a prefix.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from .progress import tqdm

from . import data
from .adapters import body, get_adapter, model_device, output_logits
from .pruning import DENSE, MaskSpec, apply_mask, dynamic_topk

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .config import BabelConfig

log = logging.getLogger(__name__)

MGSM_PROMPT = "Question: {question}\nAnswer:"
XCSQA_PROMPT = "Question: {stem}\nAnswer:"
ANSWER_TOLERANCE = 1e-6  # |predicted - gold| below this counts as correct (MGSM answers are integers)
METRICS: tuple[str, ...] = ("perplexity", "bits_per_byte", "mgsm_accuracy", "mgsm_gold_loglik",
                            "mgsm_gold_loglik_per_token", "xcsqa_accuracy")


# --------------------------------------------------------------------------- log-probabilities

HEAD_CHUNK = 256  # positions whose logits exist at once: [HEAD_CHUNK, vocab] floats (Gemma 3: 268 MB)


# Who multiplies the LM head in float32 on the CPU: "numpy" (its BLAS, OpenBLAS) or "torch" (MKL). On the
# project's AMD EPYC machine numpy's ran the head 1.4-2x faster (benchmarks/bench_head.py prints both).
CPU_HEAD_BLAS = "numpy"


def _linear(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """head(hidden) for the LM head, through CPU_HEAD_BLAS for a float32 linear head on the CPU (both are
    float32 products: only the last bits differ)."""
    weight = getattr(head, "weight", None)
    if (CPU_HEAD_BLAS != "numpy" or not isinstance(head, nn.Linear) or hidden.device.type != "cpu"
            or hidden.dtype != torch.float32 or weight.dtype != torch.float32):
        return head(hidden)
    out = torch.from_numpy(np.matmul(hidden.detach().numpy(), weight.detach().numpy().T))
    return out if head.bias is None else out + head.bias.detach()


def _logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on some hidden states [N, d_model] -> logits [N, vocab], as the model's forward does it
    (soft-capping included)."""
    return output_logits(model, _linear(model.get_output_embeddings(), hidden))


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, [T], computed in float32 one row at a time."""
    return logits.float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _hidden_states(model: nn.Module, ids: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
    """Last hidden states [B, T, d_model] of the model body (no LM head: logits are made where needed)."""
    return body(model)(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state


def _selected_logprobs(model: nn.Module, hidden: torch.Tensor, positions: torch.Tensor,
                       targets: torch.Tensor) -> torch.Tensor:
    """log p(targets[j] | hidden[positions[j]]) for flat positions of hidden [N, d]; the LM head runs
    on HEAD_CHUNK positions at a time, so memory never holds more than [HEAD_CHUNK, vocab] logits."""
    out = []
    for start in range(0, len(positions), HEAD_CHUNK):
        pos = positions[start:start + HEAD_CHUNK]
        out.append(_token_logprobs(_logits(model, hidden[pos]), targets[start:start + HEAD_CHUNK]))
    return torch.cat(out) if out else torch.zeros(0)


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
                         scored: torch.Tensor | None = None) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every row and t, [B, T-1], on the CPU (float64).

    With `scored` (bool [B, T-1]) the LM head runs only on the scored positions; the others are 0.
    """
    device = model_device(model)
    ids, am = input_ids.to(device), attention_mask.to(device)
    want = torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool) if scored is None else scored.bool()
    rows, cols = torch.nonzero(want, as_tuple=True)
    targets = ids[:, 1:][rows.to(device), cols.to(device)]
    if _has_body(model):
        hidden = _hidden_states(model, ids, am)[:, :-1]
        positions = (rows * hidden.shape[1] + cols).to(hidden.device)
        logp = _selected_logprobs(model, hidden.reshape(-1, hidden.shape[-1]), positions, targets)
    else:
        logits = model(input_ids=ids, attention_mask=am, use_cache=False).logits[:, :-1]
        logp = _token_logprobs(logits[rows.to(logits.device), cols.to(logits.device)], targets)
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


def _row_nll(model: nn.Module, ids: torch.Tensor, am: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of the scored targets of each row, [B]; right padding beyond the longest row
    of the batch is trimmed, so it is never run."""
    width = int(am.sum(1).max())
    ids, am, keep = ids[:, :width], am[:, :width], scored[:, :width - 1]
    logp = _next_token_logprobs(model, ids, am, keep)
    return -(logp * keep).sum(1)


def perplexity(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int,
               seq_len: int, batch_size: int) -> dict[str, float]:
    """Next-token NLL of held-out texts: nll_sum (nats), n_tokens, n_bytes, perplexity, bits_per_byte."""
    return perplexity_many(model, tokenizer, texts, max_tokens, seq_len, batch_size, 1)[0]


def perplexity_many(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int,
                    seq_len: int, batch_size: int, n_variants: int,
                    on_batch: Callable[[list[int]], None] | None = None) -> list[dict[str, float]]:
    """`perplexity` of `n_variants` variants of the model at once: the packed rows are repeated once per
    variant and batched together; before every forward `on_batch(variant of each row)` is called (e.g. the
    `select` of pruning.apply_row_masks, so each row runs under its own mask). One result per variant."""
    packed = data.pack_tokens(tokenizer, texts, seq_len, budget=max_tokens)
    scored = data.count_mask(packed, tokenizer.bos_token_id)[:, 1:]  # targets: real, not BOS, not padding
    items = [(v, r) for v in range(n_variants) for r in range(packed.input_ids.shape[0])]
    nll = np.zeros(n_variants)
    for start in tqdm(range(0, len(items), batch_size), desc="perplexity", unit="batch", leave=False):
        chunk = items[start:start + batch_size]
        rows = [r for _, r in chunk]
        if on_batch is not None:
            on_batch([v for v, _ in chunk])
        sums = _row_nll(model, packed.input_ids[rows], packed.attention_mask[rows], scored[rows])
        for (v, _), value in zip(chunk, sums.tolist()):
            nll[v] += value
    targets = packed.input_ids[:, 1:][scored].tolist()
    return [_ppl_result(tokenizer, float(value), targets) for value in nll]


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
def _batch_logliks(model: nn.Module, pairs: Sequence[tuple[list[int], list[int]]], pad: int) -> list[float]:
    """Summed log-probabilities of each continuation given its context, one right-padded batch (the LM
    head runs only on the positions that predict a continuation token)."""
    ids, am = _pad_right([c + k for c, k in pairs], pad)
    scored = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    for i, (ctx, cont) in enumerate(pairs):
        scored[i, len(ctx) - 1:len(ctx) + len(cont) - 1] = True
    logp = _next_token_logprobs(model, ids, am, scored)
    return [float(logp[i][scored[i]].sum()) for i in range(len(pairs))]


def continuation_logliks(model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                         pairs: Sequence[tuple[str, str]], batch_size: int = 8, desc: str = "loglik",
                         on_batch: Callable[[list[int]], None] | None = None) -> pd.DataFrame:
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
        logliks[idx] = _batch_logliks(model, [encoded[i] for i in idx], pad)
    return pd.DataFrame({"loglik": logliks, "n_tokens": [len(cont) for _, cont in encoded]})


# --------------------------------------------------------------------------- MGSM answers

# Separators that only ever group thousands, removed before parsing: (narrow) no-break, thin and figure
# spaces, the apostrophe (Swiss style). A plain space is NOT one ("3 100" reads as 3 and 100).
_GROUP_SPACES = "\u00a0\u202f\u2009\u2007'"
_PUNCT = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-", "\u066b": ".", "\u066c": ",",
                        "\uff0e": "."})
_NUMBER = re.compile(r"(?P<sign>(?<![0-9A-Za-z)\]])-)?(?P<num>\d+(?:[.," + _GROUP_SPACES + r"]\d+)*)")
_NEXT_QUESTION = re.compile(r"\n\s*Question\b|Question\s*:", re.IGNORECASE)
# Answer markers after which the first number is the answer (lower-cased text; several languages).
ANSWER_MARKERS: tuple[str, ...] = (
    "answer is", "answer:", "answer :", "réponse est", "réponse :", "réponse:", "respuesta es",
    "respuesta:", "resposta é", "resposta:", "antwort ist", "antwort:", "答案是", "答案：", "答案:",
    "उत्तर है", "उत्तर:", "উত্তর হল", "উত্তর:", "الإجابة هي", "الإجابة:", "الجواب", "جواب", "答えは", "ответ:",
)


def normalise_digits(text: str) -> str:
    """Every Unicode decimal digit (Arabic-Indic, Devanagari, Bengali, full-width, ...) as ASCII; minus
    signs as '-', the Arabic decimal and thousands separators as '.' and ','."""
    chars = [str(unicodedata.decimal(ch)) if not ch.isascii() and unicodedata.decimal(ch, None) is not None
             else ch for ch in text]
    return "".join(chars).translate(_PUNCT)


def _grouped(groups: list[str]) -> bool:
    """Thousands grouping: a first group of 1-3 digits (no leading 0), then groups of exactly 3."""
    first = groups[0]
    return (1 <= len(first) <= 3 and not (first.startswith("0") and len(first) > 1 or first == "0")
            and all(len(g) == 3 for g in groups[1:]))


def _parse_numeral(s: str) -> list[float]:
    """The number(s) written in a run of digits and separators (see `extract_answer`)."""
    s = re.sub(f"[{_GROUP_SPACES}]", "", s)
    if "," in s and "." in s:
        dec, thou = (",", ".") if s.rfind(",") > s.rfind(".") else (".", ",")
        whole, _, frac = s.rpartition(dec)
        if dec not in whole and _grouped(whole.split(thou)):
            return [float(whole.replace(thou, "") + "." + frac)]
    else:
        sep = "," if "," in s else "."
        groups = s.split(sep)
        if len(groups) == 1:
            return [float(s)]
        if _grouped(groups):
            return [float("".join(groups))]
        if len(groups) == 2:
            return [float(groups[0] + "." + groups[1])]
    return [float(g) for g in re.split(r"[.,]", s) if g]  # e.g. a date 12.03.2024 or a list 1,2,3


def numbers_in(text: str) -> list[float]:
    """Every number of a text, in order (digits normalised first)."""
    out = []
    for m in _NUMBER.finditer(normalise_digits(text)):
        values = _parse_numeral(m.group("num"))
        if m.group("sign"):
            values[0] = -values[0]
        out += values
    return out


def _answer_tail(text: str) -> str | None:
    """The text after the last answer marker, or None without one."""
    lower = text.lower()
    positions = [(lower.rfind(m), m) for m in ANSWER_MARKERS]
    pos, marker = max(positions, key=lambda p: (p[0], len(p[1])))
    return None if pos < 0 else text[pos + len(marker):]


def extract_answer(text: str) -> float | None:
    """The numeric answer of a generation, or None.

    Rules, in order: (1) digits of any script become ASCII (Eastern Arabic, Persian, Devanagari,
    Bengali, full-width, ...); U+2212 and full-width minus become '-'; '٫' and '٬' become '.' and ','.
    (2) The generation is cut where a new "Question" begins (the model continuing the prompt format).
    (3) After the last answer marker ("answer is", "Answer:", "réponse :", "答案是", ...), the first
    number is the answer; without a marker (or no number after it), the last number of the text.
    Numbers: '-' directly before the digits makes them negative unless a letter, digit or ')' precedes
    it ("10-5" is 10 and 5). No-break/thin spaces and apostrophes between digits group thousands; a
    plain space does not. With both ',' and '.', the later one is the decimal point ("1.234,5",
    "1,234.5"). With one kind: groups of exactly three digits after a 1-3 digit head are thousands
    ("1,234", "1.234", "1.000.000": MGSM answers are integers, so "1.234" reads 1234, but "0.125" and
    "3.50" are decimals); a single other separator is a decimal point or comma ("3,5" = 3.5); anything
    else is several numbers ("12.03.2024"). Numbers written in words ("eighteen", "十八") are not read.
    """
    text = normalise_digits(text)
    cut = _NEXT_QUESTION.search(text)
    text = text[:cut.start()] if cut else text
    tail = _answer_tail(text)
    if tail is not None and (after := numbers_in(tail)):
        return after[0]
    found = numbers_in(text)
    return found[-1] if found else None


def is_correct(predicted: float | None, gold: float) -> bool:
    """A predicted number equals the gold answer (within ANSWER_TOLERANCE)."""
    return predicted is not None and abs(predicted - gold) < ANSWER_TOLERANCE


def mgsm_prompt(question: str, lang: str = "") -> str:
    """The zero-shot MGSM prompt; language-neutral ("Question: ...\\nAnswer:" for every `lang`)."""
    return MGSM_PROMPT.format(question=question.strip())


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


def mgsm_eval(model: nn.Module, tokenizer: PreTrainedTokenizerBase, df: pd.DataFrame, max_new_tokens: int,
              batch_size: int = 8) -> pd.DataFrame:
    """Per problem: generation, extracted answer, correct, and the gold answer's log-likelihood (sum, mean)."""
    return mgsm_eval_many(model, tokenizer, df, max_new_tokens, batch_size, 1)[0]


def mgsm_eval_many(model: nn.Module, tokenizer: PreTrainedTokenizerBase, df: pd.DataFrame | Sequence[pd.DataFrame],
                   max_new_tokens: int, batch_size: int, n_variants: int,
                   on_batch: Callable[[list[int]], None] | None = None) -> list[pd.DataFrame]:
    """`mgsm_eval` of `n_variants` variants of the model at once, batched together; `on_batch(variant of
    each row)` is called before every forward, as in `perplexity_many`. `df`: the problems, or one table of
    problems per variant (e.g. each variant a mask evaluated on another language's problems).

    Greedy decoding is memory-bound (each step reads every weight for one token per row), so all rows of
    up to `batch_size` problems per variant share one generation batch: one pass of decoding steps
    serves every variant and language.
    """
    dfs = [df] * n_variants if isinstance(df, pd.DataFrame) else list(df)
    if len(dfs) != n_variants:
        raise ValueError(f"{len(dfs)} problem tables for {n_variants} variants.")
    prompts = [[mgsm_prompt(q, lang) for q, lang in zip(d["question"], d.get("lang", [""] * len(d)))] for d in dfs]
    items = [(v, i) for v in range(n_variants) for i in range(len(prompts[v]))]
    select = None if on_batch is None else (lambda idx: on_batch([items[j][0] for j in idx]))
    generations = generate_greedy(model, tokenizer, [prompts[v][i] for v, i in items], max_new_tokens,
                                  batch_size * n_variants, desc="mgsm", stop_at=_NEXT_QUESTION, on_batch=select)
    gold = continuation_logliks(model, tokenizer,
                                [(prompts[v][i], " " + str(dfs[v]["answer"].iloc[i])) for v, i in items],
                                batch_size, desc="mgsm gold", on_batch=select)
    tables = []
    for v in range(n_variants):
        rows = [j for j, (variant, _) in enumerate(items) if variant == v]
        out = dfs[v].copy().reset_index(drop=True)
        out["generation"] = [generations[j] for j in rows]
        out["predicted"] = [extract_answer(g) for g in out["generation"]]
        out["correct"] = [is_correct(p, float(g)) for p, g in zip(out["predicted"], out["answer_number"])]
        out["gold_loglik"] = gold["loglik"].to_numpy()[rows]
        out["gold_tokens"] = gold["n_tokens"].to_numpy()[rows]
        out["gold_loglik_mean"] = out["gold_loglik"] / out["gold_tokens"]
        tables.append(out)
    return tables


# --------------------------------------------------------------------------- X-CSQA


def xcsqa_prompt(stem: str) -> str:
    """The X-CSQA context: 'Question: {stem}\\nAnswer:' (each choice follows after a space)."""
    return XCSQA_PROMPT.format(stem=stem.strip())


def choice_loglik_scores(model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: Sequence[Mapping[str, Any]],
                         batch_size: int = 8, on_batch: Callable[[list[int]], None] | None = None) -> pd.DataFrame:
    """Per item: each choice's log-likelihood (sum, per character), predicted = argmax per character, correct."""
    pairs = [(xcsqa_prompt(item["stem"]), " " + choice) for item in items for choice in item["choices"]]
    scores = continuation_logliks(model, tokenizer, pairs, batch_size, desc="x-csqa",
                                  on_batch=on_batch)["loglik"].to_numpy()
    rows, pos = [], 0
    for item in items:
        n = len(item["choices"])
        loglik = scores[pos:pos + n]
        n_chars = np.array([len(" " + c) for c in item["choices"]])
        norm = loglik / n_chars
        pos += n
        rows.append({"id": item.get("id", ""), "stem": item["stem"], "n_choices": n,
                     "answer_index": int(item["answer_index"]), "loglik": loglik.tolist(),
                     "loglik_norm": norm.tolist(), "predicted": int(np.argmax(norm)),
                     "predicted_sum": int(np.argmax(loglik))})
    out = pd.DataFrame(rows)
    out["correct"] = out["predicted"] == out["answer_index"]
    out["correct_sum"] = out["predicted_sum"] == out["answer_index"]
    return out


# --------------------------------------------------------------------------- per language and mask


def _mgsm_languages(source: str) -> list[str]:
    """MGSM's languages; none (with a warning) when the DEFAULT folder is absent, an error for a named one."""
    try:
        return data.mgsm_languages(source)
    except FileNotFoundError:
        if source:
            raise
        log.warning("No MGSM folder at the default place (%s): MGSM metrics are left out. Set mgsm_dir.",
                    data.mgsm_dir())
        return []


def xcsqa_has(source: str, lang: str) -> bool:
    """Whether an X-CSQA source holds a language (a local folder may hold fewer than the hub's 16)."""
    if lang not in data.XCSQA_LANGUAGES:
        return False
    if "{lang}" not in source and not data._is_local(source):
        return True
    try:
        data._xcsqa_file(source, lang)
    except FileNotFoundError:
        log.warning("X-CSQA source %s has no %r; its X-CSQA accuracy is left out.", source, lang)
        return False
    return True


def evaluate_language(model: nn.Module, tokenizer: PreTrainedTokenizerBase, lang: str, cfg: BabelConfig,
                      heldout: Sequence[str]) -> dict[str, float]:
    """Metrics of one language: perplexity, bits_per_byte, MGSM (if it has the language), X-CSQA (if set).

    Metrics a language lacks (no MGSM or X-CSQA data, or cfg.xcsqa_dataset empty) are left out.
    cfg.mgsm_n and cfg.xcsqa_n problems per language (0 = all, as in data.load_mgsm / load_xcsqa).
    """
    ppl = perplexity(model, tokenizer, heldout, cfg.eval_max_tokens, cfg.seq_len, cfg.batch_size)
    metrics = {"perplexity": ppl["perplexity"], "bits_per_byte": ppl["bits_per_byte"]}
    if lang in _mgsm_languages(cfg.mgsm_dir):
        mgsm = mgsm_eval(model, tokenizer, data.load_mgsm(lang, cfg.mgsm_dir, cfg.mgsm_n),
                         cfg.gen_max_new_tokens, cfg.batch_size)
        metrics.update(mgsm_accuracy=float(mgsm["correct"].mean()),
                       mgsm_gold_loglik=float(mgsm["gold_loglik"].mean()),
                       mgsm_gold_loglik_per_token=float(mgsm["gold_loglik_mean"].mean()))
    if cfg.xcsqa_dataset and xcsqa_has(cfg.xcsqa_dataset, lang):
        items = data.load_xcsqa(lang, cfg.xcsqa_dataset, cfg.xcsqa_n)
        xcsqa = choice_loglik_scores(model, tokenizer, items, cfg.batch_size)
        metrics["xcsqa_accuracy"] = float(xcsqa["correct"].mean())
    return metrics


def mask_context(model: nn.Module, labels: np.ndarray, spec: MaskSpec, score: str = "abs") -> ContextManager[None]:
    """The hooks that realise a mask spec: none (dense), dynamic top-k, or a static expert mask."""
    if spec.method == DENSE:
        return nullcontext()
    if spec.method == "dynamic":
        return dynamic_topk(model, labels, int(spec.top_k), score)
    return apply_mask(model, labels, spec.mask)


def evaluate_mask(model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray, mask_spec: MaskSpec,
                  texts_by_lang: Mapping[str, Sequence[str]], cfg: BabelConfig) -> list[dict[str, Any]]:
    """Tidy rows (language, target, method, ratio, seed, metric, value) of one mask on each language.

    `language` is the evaluated language (a key of texts_by_lang, its held-out texts the value);
    `target` the language the mask was built for.
    """
    rows = []
    with mask_context(model, labels, mask_spec, cfg.score):
        for lang in tqdm(list(texts_by_lang), desc=f"eval {mask_spec.language}:{mask_spec.name}", unit="lang"):
            metrics = evaluate_language(model, tokenizer, lang, cfg, texts_by_lang[lang])
            rows += [{"language": lang, "target": mask_spec.language, "method": mask_spec.method,
                      "ratio": float(mask_spec.ratio), "seed": mask_spec.seed, "metric": name,
                      "value": float(value)} for name, value in metrics.items()]
    return rows


# --------------------------------------------------------------------------- tables and verdicts (notebook 08)

LOWER_IS_BETTER: tuple[str, ...] = ("perplexity", "bits_per_byte")  # every other metric: higher is better
MATCH_TOLERANCE = 0.01  # a pruned model "matches" the unpruned one within 1 % of the unpruned value
GUIDED_METHODS: tuple[str, ...] = ("sorting", "layerwise")  # frequency-guided methods with a random baseline
TIDY_COLUMNS: tuple[str, ...] = ("language", "target", "method", "ratio", "seed", "top_k", "mask", "metric",
                                 "value")
METRIC_LABELS: dict[str, str] = {
    "perplexity": "perplexity", "bits_per_byte": "bits per byte", "mgsm_accuracy": "MGSM accuracy",
    "mgsm_gold_loglik": "MGSM gold-answer log-likelihood (nats)",
    "mgsm_gold_loglik_per_token": "MGSM gold-answer log-likelihood per token (nats)",
    "xcsqa_accuracy": "X-CSQA accuracy",
}


def summarise(part: str, result: Any) -> dict[str, float]:
    """The metrics of one cached evaluation result (see stages.evaluate_jobs)."""
    if part == "heldout":
        return {"perplexity": float(result["perplexity"]), "bits_per_byte": float(result["bits_per_byte"])}
    if part == "mgsm":
        return {"mgsm_accuracy": float(result["correct"].mean()),
                "mgsm_gold_loglik": float(result["gold_loglik"].mean()),
                "mgsm_gold_loglik_per_token": float(result["gold_loglik_mean"].mean())}
    if part == "xcsqa":
        return {"xcsqa_accuracy": float(result["correct"].mean())}
    raise ValueError(f"Unknown evaluation part {part!r}; known: heldout, mgsm, xcsqa.")


def mask_label(spec: MaskSpec) -> str:
    """The mask's label in tables: its name ('sorting@0.25', 'random@0.25#1', 'dynamic@top192'), but
    'dense' for the unpruned model and 'threshold' for the threshold mask (whose share differs by language)."""
    return spec.method if spec.method in (DENSE, "threshold") else spec.name


def metric_rows(spec: MaskSpec, lang: str, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """Tidy rows (TIDY_COLUMNS) of one mask evaluated on one language."""
    return [{"language": lang, "target": spec.language, "method": spec.method, "ratio": float(spec.ratio),
             "seed": spec.seed, "top_k": spec.top_k, "mask": mask_label(spec),
             "metric": name, "value": float(value)} for name, value in metrics.items()]


def tidy(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A tidy table of metric rows with nullable integer seed and top_k columns."""
    table = pd.DataFrame(list(rows), columns=list(TIDY_COLUMNS))
    return table.astype({"seed": "Int64", "top_k": "Int64", "ratio": float, "value": float})


def lower_is_better(metric: str) -> bool:
    """Perplexity and bits per byte fall as a model gets better; accuracies and log-likelihoods rise."""
    return metric in LOWER_IS_BETTER


def _dense_values(df: pd.DataFrame) -> pd.Series:
    """The unpruned value per (language, metric)."""
    dense = df[df["method"] == DENSE]
    if dense.empty:
        raise ValueError("The table has no unpruned ('dense') rows to compare with; evaluate the dense model too.")
    return dense.groupby(["language", "metric"])["value"].first()


def relative_to_dense(df: pd.DataFrame) -> pd.DataFrame:
    """Every row with `dense` (the unpruned value of its language and metric), `change` = value - dense,
    `relative` = change / |dense|, and `matches` = as good as the unpruned model within MATCH_TOLERANCE."""
    dense = _dense_values(df)
    out = df.join(dense.rename("dense"), on=["language", "metric"])
    out["change"] = out["value"] - out["dense"]
    out["relative"] = out["change"] / out["dense"].abs().where(out["dense"] != 0)
    sign = np.where(out["metric"].map(lower_is_better), 1.0, -1.0)
    out["matches"] = sign * out["change"] <= MATCH_TOLERANCE * out["dense"].abs()
    return out


def match_table(df: pd.DataFrame, metric: str = "bits_per_byte") -> pd.DataFrame:
    """Masks x languages: the relative change of `metric` against the unpruned model, marked '✓' where the
    pruned model matches or beats it (within MATCH_TOLERANCE). Random masks: the mean over seeds."""
    rel = relative_to_dense(df[(df["metric"] == metric) & (df["language"] == df["target"])])
    rel = rel[rel["method"] != DENSE].copy()
    rel["mask"] = np.where(rel["method"] == "random", "random@" + rel["ratio"].map("{:.4g}".format) + " (mean)",
                           rel["mask"])
    agg = rel.groupby(["mask", "language"], sort=False).agg(relative=("relative", "mean"),
                                                           matches=("matches", "all"))
    cells = agg.apply(lambda r: f"{r['relative']:+.1%}" + (" ✓" if r["matches"] else ""), axis=1)
    table = cells.unstack("language")
    order = list(dict.fromkeys(rel["language"]))
    return table.reindex(columns=order).rename_axis(index=f"mask ({METRIC_LABELS.get(metric, metric)})",
                                                    columns="language")


def guided_vs_random(df: pd.DataFrame, metric: str = "bits_per_byte") -> pd.DataFrame:
    """Per language, frequency-guided method and ratio: its value, the unpruned value and the random
    baseline of the same ratio (mean, std, best and worst seed), `gain` (how much better than the random
    mean, in the metric's units; positive = frequency-guided is better) and whether it beats the random
    mean and every random seed."""
    part = df[(df["metric"] == metric) & (df["language"] == df["target"])]
    dense = _dense_values(df)
    rand = part[part["method"] == "random"].groupby(["language", "ratio"])["value"]
    stats = pd.DataFrame({"random_mean": rand.mean(), "random_std": rand.std(ddof=0), "random_min": rand.min(),
                          "random_max": rand.max(), "n_seeds": rand.count()})
    guided = part[part["method"].isin(GUIDED_METHODS)].join(stats, on=["language", "ratio"], how="inner")
    if guided.empty:
        raise ValueError(f"No frequency-guided mask with a random baseline of the same ratio for {metric!r}.")
    lower = lower_is_better(metric)
    sign = 1.0 if lower else -1.0
    guided = guided.assign(dense=[dense.get((lang, metric), np.nan) for lang in guided["language"]])
    guided["gain"] = sign * (guided["random_mean"] - guided["value"])
    guided["relative_gain"] = guided["gain"] / guided["random_mean"].abs()
    best = guided["random_min"] if lower else guided["random_max"]
    guided["beats_random_mean"] = guided["gain"] > 0
    guided["beats_every_seed"] = sign * (best - guided["value"]) > 0
    cols = ["language", "method", "ratio", "value", "dense", "random_mean", "random_std", "random_min",
            "random_max", "n_seeds", "gain", "relative_gain", "beats_random_mean", "beats_every_seed"]
    return guided[cols].sort_values(["method", "ratio", "language"], kind="stable").reset_index(drop=True)


def _names(codes: Sequence[str]) -> str:
    from .languages import LANGUAGES

    return ", ".join(LANGUAGES[c].name if c in LANGUAGES else str(c) for c in codes)


def verdict(comparison: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """Plain sentences, built from `guided_vs_random`, on whether frequency-guided pruning beats random
    pruning of the same size, method by method and ratio by ratio; it names the languages where it does not."""
    label = METRIC_LABELS.get(metric, metric)
    lines = []
    for (method, ratio), part in comparison.groupby(["method", "ratio"], sort=True):
        n = len(part)
        wins, every = int(part["beats_random_mean"].sum()), int(part["beats_every_seed"].sum())
        gain, rel = part["gain"].mean(), part["relative_gain"].mean()
        direction = "better" if gain > 0 else "worse"
        line = (f"Frequency-guided {method} at {ratio:.0%} pruned: better than the random mean in {wins} of {n} "
                f"languages and better than every random seed in {every}; on average its {label} is "
                f"{abs(gain):.3g} {direction} than random's ({abs(rel):.1%}).")
        losers = part.loc[~part["beats_random_mean"], "language"].tolist()
        if losers:
            line += f" It does NOT beat random in: {_names(losers)}."
        lines.append(line)
    overall = comparison["beats_random_mean"].mean()
    if overall == 1.0:
        lines.append("On this model and text, frequency-guided pruning beats random pruning of the same size "
                     "in every case.")
    elif overall == 0.0:
        lines.append("On this model and text, frequency-guided pruning does not beat random pruning of the same "
                     "size in any case.")
    else:
        lines.append(f"On this model and text, frequency-guided pruning beats random pruning of the same size "
                     f"in {overall:.0%} of the (language, method, ratio) cases, not in all.")
    return "\n".join(lines)


def cross_language_matrix(df: pd.DataFrame, metric: str = "bits_per_byte") -> pd.DataFrame:
    """Target (mask built from) x evaluated language: relative change of `metric` against the evaluated
    language's unpruned value. Expects one static mask per target (e.g. sorting at one ratio)."""
    rel = relative_to_dense(df[df["metric"] == metric])
    rel = rel[rel["method"] != DENSE]
    if rel.duplicated(["target", "language"]).any():
        raise ValueError("cross_language_matrix needs one mask per (target, evaluated language); filter the table.")
    order = list(dict.fromkeys(rel["target"]))
    cols = list(dict.fromkeys(rel["language"]))
    return (rel.pivot(index="target", columns="language", values="relative").reindex(index=order, columns=cols)
            .rename_axis(index="mask from", columns="evaluated on"))


def describe_cross_language(matrix: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """Whether each language is hurt least by its own mask, and whether relatives' masks (same genus,
    same family) hurt less than unrelated languages' masks, from a cross_language_matrix (lower = better
    for perplexity and bits per byte)."""
    from .languages import LANGUAGES

    lower = lower_is_better(metric)
    label = METRIC_LABELS.get(metric, metric)
    own_best, groups = [], {"own": [], "same genus": [], "same family, other genus": [], "other family": []}
    for lang in matrix.columns:
        col = matrix[lang].dropna()
        if lang not in col.index or len(col) < 2:
            continue
        best = col.idxmin() if lower else col.idxmax()
        own_best.append(best == lang)
        for target, value in col.items():
            a, b = LANGUAGES.get(target), LANGUAGES.get(lang)
            if target == lang:
                groups["own"].append(value)
            elif a and b and a.genus == b.genus:
                groups["same genus"].append(value)
            elif a and b and a.family == b.family:
                groups["same family, other genus"].append(value)
            else:
                groups["other family"].append(value)
    if not own_best:
        return "Too few languages for a cross-language comparison."
    means = ", ".join(f"{name} {np.mean(v):+.1%} ({len(v)} pairs)" for name, v in groups.items() if v)
    return (f"A language's own mask hurts its {label} least for {sum(own_best)} of {len(own_best)} languages. "
            f"Mean change of {label} against the unpruned model, by the relation between the mask's language "
            f"and the evaluated one: {means}.")


def mgsm_languages_available(source: str = "") -> list[str]:
    """MGSM's languages from a source ("" = the default folder; none, with a warning, when it is absent)."""
    return _mgsm_languages(source)


def describe_split_comparison(df: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """Sentences on what the clustering adds: per split, the mean relative change of `metric` against the
    unpruned model under each pruning method (df columns: split, language, method, metric, value, with
    'dense' rows), and which split's experts lose least under frequency-guided pruning."""
    label = METRIC_LABELS.get(metric, metric)
    part = df[df["metric"] == metric]
    dense = part[part["method"] == DENSE].groupby("language")["value"].first()
    if dense.empty:
        raise ValueError("describe_split_comparison needs the unpruned ('dense') rows.")
    part = part[part["method"] != DENSE].assign(dense=lambda d: d["language"].map(dense))
    part = part.assign(relative=(part["value"] - part["dense"]) / part["dense"].abs())
    means = part.groupby(["split", "method"], sort=False)["relative"].mean()
    lines = []
    for split in dict.fromkeys(part["split"]):
        items = ", ".join(f"{method} {means[(split, method)]:+.1%}" for method in dict.fromkeys(
            part.loc[part["split"] == split, "method"]))
        lines.append(f"Experts from the {split} split: mean change of {label} against the unpruned model: {items}.")
    guided = [m for m in GUIDED_METHODS if m in set(part["method"])]
    for method in guided:
        per_split = means.xs(method, level="method")
        best = per_split.idxmin() if lower_is_better(metric) else per_split.idxmax()
        lines.append(f"Under frequency {method}, the {best} split's experts lose least "
                     f"({per_split[best]:+.1%}; " + ", ".join(f"{s} {v:+.1%}" for s, v in per_split.items()
                                                               if s != best) + ").")
    return "\n".join(lines)


def describe_matches(df: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """A sentence on which pruned models match or beat the unpruned one on `metric` (within
    MATCH_TOLERANCE), each mask on its own language; random masks count (seed, language) pairs."""
    rel = relative_to_dense(df[(df["metric"] == metric) & (df["language"] == df["target"])])
    rel = rel[rel["method"] != DENSE].copy()
    label = METRIC_LABELS.get(metric, metric)
    if not rel["matches"].any():
        best = rel.loc[rel["relative"].idxmin() if lower_is_better(metric) else rel["relative"].idxmax()]
        return (f"No pruned model matches the unpruned one on {label} (within {MATCH_TOLERANCE:.0%}) in any "
                f"language; the closest is {best['mask']} on {_names([best['language']])} ({best['relative']:+.1%}).")
    rel["group"] = np.where(rel["method"] == "random", "random@" + rel["ratio"].map("{:.4g}".format), rel["mask"])
    items = []
    for group, part in rel.groupby("group", sort=False):
        hits = part.loc[part["matches"], "language"]
        if hits.empty:
            continue
        unit = "(seed, language) pairs" if group.startswith("random@") else "languages"
        where = "" if unit != "languages" or len(hits) == len(part) else f" ({_names(list(hits))})"
        items.append(f"{group} in {len(hits)} of {len(part)} {unit}{where}")
    return (f"Pruned models that match or beat the unpruned one on {label} (at most {MATCH_TOLERANCE:.0%} worse): "
            + "; ".join(items) + ".")
