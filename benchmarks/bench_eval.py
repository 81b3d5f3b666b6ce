"""Masked evaluation against a bare forward of the same model on the same tokens (notebook 08's cost).

    python benchmarks/bench_eval.py                      # the default model on the CPU
    python benchmarks/bench_eval.py --device cuda --repeats 5

Times, interleaved and best of `--repeats`, the next-token log-probabilities of `--rows` x `--tokens`
random tokens: (a) bare: the model with no hook; (b) masked: every row under its own expert mask
(apply.apply_row_masks, as 08 evaluates several masks in one batch); and the LM head alone on the
same hidden states. Prints tokens per second, the masks' overhead and the share of the time in the head.
Then the batching levers: `--masks` masks on 512 held-out tokens each (rows of BOS + 255: 255 + 255 + 2),
evaluated in shared batches of `batch_size` rows (each row its own mask, as 08 does) with rows batched by
length (scoring._length_batches), the same batches filled in (variant, row) order, and one mask at a time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from babel_utils.core import config
from babel_utils.data import text as data
from babel_utils.evaluate import scoring
from babel_utils.models import adapters, lm_head
from babel_utils.models.loading import load_model, resolve_device
from babel_utils.prune import apply


def sync(device: torch.device) -> None:
    """Wait for the GPU (timings of asynchronous kernels)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    """Time bare, masked and head-only evaluation and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--n-experts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--masks", type=int, default=8, help="masks of the batching comparison")
    parser.add_argument("--head-dtype", default=config.BabelConfig().head_dtype, choices=lm_head.HEAD_DTYPES)
    args = parser.parse_args()
    device = resolve_device(args.device)
    model, tokenizer = load_model(args.model, "float32", str(device))
    L, width = adapters.n_layers(model), adapters.d_ff(model)
    rng = np.random.default_rng(0)
    labels = np.stack([rng.permutation(np.arange(width) % args.n_experts) for _ in range(L)])
    masks = rng.random((args.rows, L, args.n_experts)) > 0.25  # a different mask per row
    ids = torch.from_numpy(rng.integers(10, 20000, (args.rows, args.tokens + 1)))
    am = torch.ones_like(ids)
    n_tokens = args.rows * args.tokens

    def bare() -> None:
        scoring._next_token_logprobs(model, ids, am, head_dtype=args.head_dtype)

    def masked() -> None:
        with apply.apply_row_masks(model, labels, masks) as select:
            select(range(args.rows))
            scoring._next_token_logprobs(model, ids, am, head_dtype=args.head_dtype)

    with torch.inference_mode():
        hidden = scoring._hidden_states(model, ids.to(device), am.to(device))[:, :-1].reshape(-1, hidden_width(model))
        targets = ids[:, 1:].reshape(-1).to(device)

    def head() -> None:
        lm_head.target_logprobs(model, hidden, targets, args.head_dtype)

    best = {"bare": float("inf"), "masked": float("inf"), "head": float("inf")}
    runs = {"bare": bare, "masked": masked, "head": head}
    for name, fn in runs.items():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():  # interleaved, so that load hits each alike
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads), {args.rows} x {args.tokens} tokens, "
          f"head {args.head_dtype}, best of {args.repeats}")
    print(f"bare forward: {n_tokens / best['bare']:.0f} tokens/s; masked (each row its own mask): "
          f"{n_tokens / best['masked']:.0f} tokens/s; overhead {best['masked'] / best['bare'] - 1:+.1%}")
    print(f"LM head alone: {best['head']:.2f} s of the bare forward's {best['bare']:.2f} s "
          f"({best['head'] / best['bare']:.0%})")
    shared_batches(model, tokenizer, labels, args)


def shared_batches(model: torch.nn.Module, tokenizer, labels: np.ndarray, args: argparse.Namespace) -> None:
    """Masks sharing batches (rows under their own masks) against one mask per evaluation."""
    cfg = config.BabelConfig().replace(head_dtype=args.head_dtype)
    texts = data.heldout_texts(cfg, "en")
    rng = np.random.default_rng(1)
    masks = rng.random((args.masks, *labels.shape[:1], args.n_experts)) > 0.25

    def shared() -> None:
        with apply.apply_row_masks(model, labels, masks) as select:
            scoring.perplexity_many(model, tokenizer, texts, 512, cfg.seq_len, cfg.batch_size, args.masks, select,
                                    head_dtype=cfg.head_dtype)

    def one_at_a_time() -> None:
        for mask in masks:
            with apply.apply_mask(model, labels, mask):
                scoring.perplexity(model, tokenizer, texts, 512, cfg.seq_len, cfg.batch_size, head_dtype=cfg.head_dtype)

    def in_row_order() -> None:  # shared batches filled in (variant, row) order: short last rows pad full ones
        real = scoring._length_batches
        scoring._length_batches = lambda items, length, size: [items[i:i + size] for i in range(0, len(items), size)]
        try:
            shared()
        finally:
            scoring._length_batches = real

    times = {}
    for name, fn in (("shared", shared), ("in row order", in_row_order), ("one at a time", one_at_a_time)):
        fn()
        times[name] = min(timed(fn) for _ in range(args.repeats))
    tokens = args.masks * 512
    print(f"{args.masks} masks x 512 held-out tokens (rows of 255 + 255 + 2), head {cfg.head_dtype}: shared batches "
          f"with rows by length {tokens / times['shared']:.0f} tokens/s; shared batches in row order "
          f"{tokens / times['in row order']:.0f} tokens/s ({times['in row order'] / times['shared']:.2f}x the time); "
          f"one mask at a time {tokens / times['one at a time']:.0f} tokens/s "
          f"({times['one at a time'] / times['shared']:.2f}x the time)")


def timed(fn) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def hidden_width(model: torch.nn.Module) -> int:
    """The width of the body's hidden states (d_model)."""
    return model.get_output_embeddings().weight.shape[1]


if __name__ == "__main__":
    main()
