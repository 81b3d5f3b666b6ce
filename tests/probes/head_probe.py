"""Prints, as JSON, the bits per byte of the default model on held-out text with its LM head at each
precision, and whether bfloat16 ran natively (run in a subprocess under a forced kernel set by
tests/test_kernel_sets.py: a machine without bfloat16 products must give the committed run's numbers)."""

from __future__ import annotations

import json

import torch

from babel_utils.core.config import BabelConfig
from babel_utils.core.machine import machine_info
from babel_utils.data import text as data
from babel_utils.evaluate import scoring
from babel_utils.models import lm_head
from babel_utils.models.loading import load_model

LANGUAGES = ("en", "hi", "zh")
TOKENS = 128


def main() -> None:
    """Score each language's held-out text under each head precision and print the results."""
    cfg = BabelConfig()
    model, tokenizer = load_model(cfg.model, "float32", "cpu")
    bpb = {f"{lang} {dtype}": scoring.perplexity(model, tokenizer, data.heldout_texts(cfg, lang), TOKENS, cfg.seq_len,
                                                 cfg.batch_size, head_dtype=dtype)["bits_per_byte"]
           for lang in LANGUAGES for dtype in lm_head.HEAD_DTYPES}
    print(json.dumps({"bits_per_byte": bpb, "native_bf16": lm_head.native_bf16(torch.device("cpu")),
                      "machine": machine_info()}))


if __name__ == "__main__":
    main()
