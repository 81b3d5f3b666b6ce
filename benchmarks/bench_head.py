"""The LM head on the CPU: torch's float32 product (MKL) against numpy's (OpenBLAS), and what it does to
the held-out evaluation of 08_pruning_eval.

    python benchmarks/bench_head.py            # the default model, 2 threads
    python benchmarks/bench_head.py --repeats 5

Prints, best of `--repeats`: GFLOP/s of hidden [M, d_model] @ W.T for the head's shape with both BLAS,
then tokens per second of `scoring.perplexity_many` (body + head, 8 variants sharing batches) with
scoring.CPU_HEAD_BLAS set to each, and the largest relative difference of bits per byte between them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from babel_utils import config, data, scoring
from babel_utils.models import load_model


def best_of(fn, repeats: int) -> float:
    """Fastest wall time of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Time both BLAS on the head alone and in the evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256, help="held-out tokens per variant")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, "float32", "cpu")
    weight = model.get_output_embeddings().weight.detach()
    vocab, width = weight.shape
    print(f"{args.model}: LM head {vocab} x {width}, torch {torch.get_num_threads()} threads")
    for rows in (64, scoring.HEAD_CHUNK):
        hidden = torch.randn(rows, width)
        flops = 2 * rows * width * vocab
        t_torch = best_of(lambda: hidden @ weight.T, args.repeats)
        t_numpy = best_of(lambda: np.matmul(hidden.numpy(), weight.numpy().T), args.repeats)
        print(f"head [{rows} x {width}] @ [{width} x {vocab}]: torch {flops / t_torch / 1e9:.0f} GFLOP/s, "
              f"numpy {flops / t_numpy / 1e9:.0f} GFLOP/s ({t_torch / t_numpy:.2f}x)")
    texts = data.heldout_texts(config.BabelConfig(), "en")
    results, rates = {}, {}
    variants = 8
    for blas in ("torch", "numpy"):
        scoring.CPU_HEAD_BLAS = blas
        run = lambda: scoring.perplexity_many(model, tokenizer, texts, args.tokens, 256, 8, variants)
        seconds = best_of(run, args.repeats)
        results[blas], rates[blas] = run(), variants * args.tokens / seconds
        print(f"perplexity_many, head by {blas}: {rates[blas]:.0f} tokens/s")
    diff = max(abs(a["bits_per_byte"] - b["bits_per_byte"]) / b["bits_per_byte"]
               for a, b in zip(results["numpy"], results["torch"]))
    print(f"evaluation speed-up {rates['numpy'] / rates['torch']:.2f}x; "
          f"largest relative difference of bits per byte {diff:.1e}")


if __name__ == "__main__":
    main()
