"""The LM head on the CPU, lever by lever: what each step of models/lm_head.py buys in notebook 08's evaluation.

    python benchmarks/bench_head.py            # the default model, 2 threads
    python benchmarks/bench_head.py --repeats 5

Prints, best of `--repeats`, seconds per POSITION_CHUNK positions of log p(target) through Gemma 3 270M's
262,144 x 640 head, on hidden states of real held-out text:
  1. float32, torch's product (MKL) and one log-softmax over the whole vocabulary (the old way);
  2. float32, numpy's product (OpenBLAS), reduced over vocabulary chunks (models/lm_head.py, head_dtype float32);
  3. bfloat16 emulated: the float32 product of the rounded matrices, rounded again (a CPU without bfloat16);
  4. bfloat16 native (AVX512-BF16 / AMX; only where the CPU has it);
then tokens per second of `scoring.perplexity_many` (body + head, 8 mask variants sharing batches, as 08
runs them) at each head_dtype, and each one's largest relative difference of bits per byte from float32.
"""

from __future__ import annotations

import argparse
import time

import torch

from babel_utils.core import config
from babel_utils.data import text as data
from babel_utils.evaluate import scoring
from babel_utils.models import lm_head
from babel_utils.models.loading import load_model


def best_of(fn, repeats: int) -> float:
    """Fastest wall time of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def old_float32(model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The head as 08 ran it before models/lm_head.py: torch's product, one log-softmax over [N, vocab] logits."""
    logits = model.get_output_embeddings()(hidden)
    return logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]


def head(model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, dtype: str, native: bool):
    """lm_head.target_logprobs at `dtype`, bfloat16 natively or emulated as asked (whatever the CPU has)."""
    def run() -> torch.Tensor:
        real, lm_head.native_bf16 = lm_head.native_bf16, lambda device: native
        try:
            return lm_head.target_logprobs(model, hidden, targets, dtype)
        finally:
            lm_head.native_bf16 = real
    return run


def main() -> None:
    """Time each lever of the head and the evaluation at each precision."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=512, help="held-out tokens per variant")
    args = parser.parse_args()
    model, tokenizer = load_model(args.model, "float32", "cpu")
    cfg = config.BabelConfig()
    texts = data.heldout_texts(cfg, "en")
    n = lm_head.POSITION_CHUNK
    packed = data.pack_tokens(tokenizer, texts, n + 1, budget=n)
    with torch.inference_mode():
        hidden = scoring._hidden_states(model, packed.input_ids[:1], packed.attention_mask[:1])[0, :-1]
    targets = packed.input_ids[0, 1:]
    vocab, width = model.get_output_embeddings().weight.shape
    native = lm_head.native_bf16(torch.device("cpu"))
    print(f"{args.model}: LM head {vocab} x {width}, torch {torch.get_num_threads()} threads, "
          f"CPU kernels {torch.backends.cpu.get_cpu_capability()}, native bfloat16: {native}")
    levers = [("1. float32, torch product, whole log-softmax", lambda: old_float32(model, hidden, targets)),
              ("2. float32, numpy product, vocabulary chunks", head(model, hidden, targets, "float32", False)),
              ("3. bfloat16 emulated (float32 product, rounded)", head(model, hidden, targets, "bfloat16", False))]
    if native:
        levers.append(("4. bfloat16 native", head(model, hidden, targets, "bfloat16", True)))

    seconds = {}
    for name, fn in levers:
        fn()  # warm-up (and the head's prepared matrix)
        seconds[name] = best_of(fn, args.repeats)
    if native:
        gap = (dict(levers)["4. bfloat16 native"]() - dict(levers)["3. bfloat16 emulated (float32 product, rounded)"]()).abs().max()
        print(f"native against emulated bfloat16: largest |difference of log p| {float(gap):.1e}")
    base = seconds["1. float32, torch product, whole log-softmax"]
    for name, s in seconds.items():
        print(f"{name}: {s:.3f} s per {n} positions ({base / s:.2f}x the first)")
    variants, results, rates = 8, {}, {}
    for dtype in lm_head.HEAD_DTYPES:
        run = lambda: scoring.perplexity_many(model, tokenizer, texts, args.tokens, cfg.seq_len, cfg.batch_size,
                                              variants, head_dtype=dtype)
        results[dtype] = run()  # and the warm-up
        rates[dtype] = variants * args.tokens / best_of(run, args.repeats)
        print(f"perplexity_many, {variants} variants x {args.tokens} tokens, head {dtype}: {rates[dtype]:.0f} tokens/s")
    for dtype in lm_head.HEAD_DTYPES:
        diff = max(abs(a["bits_per_byte"] - b["bits_per_byte"]) / b["bits_per_byte"]
                   for a, b in zip(results[dtype], results["float32"]))
        print(f"head {dtype}: evaluation {rates[dtype] / rates['float32']:.2f}x the float32 head's speed; "
              f"relative difference of bits per byte from float32 {diff:.1e}")


if __name__ == "__main__":
    main()
