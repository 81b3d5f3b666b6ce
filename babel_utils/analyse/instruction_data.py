"""The instruction data of 06's offline tuning: translation instructions built from the bundled UDHR
(calibration articles only), between the pivot language (English when studied) and every other language of the
run, tokenised with the loss on the target tokens only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ..core.config import BabelConfig
from ..core.languages import get_language
from ..data import text as data

log = logging.getLogger(__name__)


PIVOT = "en"  # instructions translate from and into this language when it is studied


SOURCE_SHARE = 0.5  # at most this share of an example's tokens goes to the source article


PROMPT = ("Translate article {article} of the Universal Declaration of Human Rights from {src} to {tgt}.\n"
          "{src}: {text}\n{tgt}:")


EVAL_EXAMPLES = 16  # losses before / after are measured on this many instructions of each set (fixed draw)


@dataclass(frozen=True)
class Example:
    """One instruction: a prompt and the target text the model learns to continue it with."""

    prompt: str
    target: str
    source: str  # language codes
    language: str
    article: int


@dataclass
class Encoded:
    """Tokenised examples, right-padded: ids, attention mask and which positions are target tokens."""

    input_ids: torch.Tensor  # [n, T]
    attention_mask: torch.Tensor  # [n, T]
    target_mask: torch.Tensor  # [n, T] bool: the token is a target token (its loss counts)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: Sequence[int] | torch.Tensor) -> "Encoded":
        """Some rows, trimmed to their longest real length."""
        index = torch.as_tensor(index, dtype=torch.long)
        mask = self.attention_mask[index]
        width = int(mask.sum(1).max())
        return Encoded(self.input_ids[index, :width], mask[:, :width], self.target_mask[index, :width])


def directions(languages: Sequence[str]) -> list[tuple[str, str]]:
    """(source, target) pairs: from the pivot into every other language and back."""
    languages = list(languages)
    if len(languages) < 2:
        raise ValueError(f"The offline instruction data translates between languages and needs at least two; "
                         f"got {languages}. Add a language, or set tuned_model to an instruction-tuned model.")
    pivot = PIVOT if PIVOT in languages else languages[0]
    others = [lang for lang in languages if lang != pivot]
    return [(pivot, lang) for lang in others] + [(lang, pivot) for lang in others]


def instruction_examples(cfg: BabelConfig, articles: tuple[int, int] | None = None) -> list[Example]:
    """Translation instructions from the bundled UDHR: every direction x article, in a fixed order.

    `articles` defaults to `cfg.calib_articles` (training data); the held-out articles make the
    held-out instructions. The UDHR is the instruction source whatever `text_source` is.
    """
    first, last = articles or cfg.calib_articles
    out = []
    for src, tgt in directions(cfg.languages):
        src_text, tgt_text = data.udhr_articles(src), data.udhr_articles(tgt)
        src_name, tgt_name = get_language(src).name, get_language(tgt).name
        for n in range(first, last + 1):
            if n not in src_text or n not in tgt_text:
                raise ValueError(f"The UDHR text lacks article {n} in {src!r} or {tgt!r}.")
            out.append(Example(PROMPT.format(article=n, src=src_name, tgt=tgt_name, text=src_text[n]),
                               " " + tgt_text[n], src, tgt, n))
    return out


def encode(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> Encoded:
    """Tokenise as BOS + prompt + target + EOS, at most `max_tokens` tokens.

    The source article inside the prompt is cut first (to at most SOURCE_SHARE of `max_tokens`), then
    the target's end; every example keeps at least one target token.
    """
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows, targets = [], []
    for ex in examples:
        prompt = tokenizer(ex.prompt, add_special_tokens=False).input_ids
        if len(prompt) > int(max_tokens * SOURCE_SHARE):
            # keep the prompt's last line ("<target language>:") after the cut source text
            tail = tokenizer("\n" + ex.prompt.rsplit("\n", 1)[1], add_special_tokens=False).input_ids
            prompt = prompt[: max(1, int(max_tokens * SOURCE_SHARE) - len(tail))] + tail
        target = tokenizer(ex.target, add_special_tokens=False).input_ids + eos
        room = max_tokens - len(bos) - len(prompt)
        if room < 1:
            raise ValueError(f"tuning_max_tokens={max_tokens} leaves no room for the target; raise it.")
        ids = bos + prompt + target[:room]
        rows.append(ids)
        targets.append([False] * (len(bos) + len(prompt)) + [True] * len(target[:room]))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    target_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (ids, tgt) in enumerate(zip(rows, targets)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        target_mask[i, : len(ids)] = torch.tensor(tgt)
    return Encoded(input_ids, attention, target_mask)


def evaluation_rows(encoded: Encoded, n: int = EVAL_EXAMPLES) -> Encoded:
    """At most `n` examples of a set, drawn once with a fixed generator, for the losses before and after."""
    index = np.sort(np.random.default_rng(0).choice(len(encoded), min(n, len(encoded)), replace=False))
    return encoded.rows(index)
