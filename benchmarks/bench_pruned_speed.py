"""Does a physically pruned FFN run faster? Dense vs pruned forward time of a random-initialised model.

docs/method.md section 5.2 ("real speed"): a physically sliced FFN (experts removed from the weight matrices) must run
measurably faster than the dense one. This script builds a model of a given shape with random
weights (no download), prunes the lowest `--ratio` of experts by random frequencies (per layer by
default, so every layer keeps the same width; `--mode global` gives uneven widths), slices the
weights with `babel_utils.prune.surgery.physically_prune`, checks that the sliced model computes what the
masked dense model computes, and times forward passes: warm-up, then the median of `--repeats`
(torch.cuda.synchronize around each pass on a GPU). By default the model BODY is timed (embeddings
+ decoder layers, no LM head): the LM head of a 262k-token vocabulary would dominate and is not
pruned. `--target full` times the whole causal LM instead. It also times the FFNs alone.

    python benchmarks/bench_pruned_speed.py                      # gemma-270m-like body, CPU, < 1 min
    python benchmarks/bench_pruned_speed.py --shape llama2-7b --device cuda --dtype bfloat16 --tokens 2048

With `--model` (a built-in name, hub id or folder) the real model is pruned instead, and with `--run`
the mask is a real one: a mask of `07_pruning` (`--mask`, e.g. threshold or sorting@0.5, for target
`--language`) with the run's expert labels. `--export DIR` writes the physically pruned model to DIR
(`surgery.save_pruned`: safetensors + config.json with every layer's FFN width), reloads it with
`surgery.load_pruned`, and times the reloaded model:

    python benchmarks/bench_pruned_speed.py --model gemma-3-270m --run default --mask threshold --export /tmp/pruned
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, PretrainedConfig

from babel_utils.core.timing import paired_median_ms
from babel_utils.models.adapters import body, d_ff, layer_width, mlps, n_layers
from babel_utils.models.loading import resolve_device, resolve_dtype
from babel_utils.prune.apply import apply_mask
from babel_utils.prune.masks import pruned_share, sorting_mask
from babel_utils.prune.surgery import physically_prune

log = logging.getLogger("bench_pruned_speed")

SHAPES: dict[str, Callable[[], PretrainedConfig]] = {
    "tiny": lambda: LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    # Gemma 3 270M: hidden 640, d_ff 2048, 18 layers, 4 heads, 1 KV head of 256, vocabulary 262144.
    "gemma-270m-like": lambda: Gemma3TextConfig(vocab_size=262144, hidden_size=640, intermediate_size=2048,
                                                num_hidden_layers=18, num_attention_heads=4,
                                                num_key_value_heads=1, head_dim=256, sliding_window=512),
    # Llama 2 7B: hidden 4096, d_ff 11008, 32 layers, 32 heads, vocabulary 32000 (needs a GPU).
    "llama2-7b": lambda: LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="gemma-270m-like")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto = cuda if present)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto = bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--ratio", type=float, default=0.5, help="share of experts pruned")
    p.add_argument("--mode", choices=["per_layer", "global"], default="per_layer")
    p.add_argument("--experts", type=int, default=256, help="experts per layer (must divide d_ff)")
    p.add_argument("--tokens", type=int, default=256, help="tokens per sequence")
    p.add_argument("--batch", type=int, default=1, help="sequences per forward pass")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--target", choices=["body", "full"], default="body",
                   help="time the model body (no LM head) or the full causal LM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    p.add_argument("--model", default="", help="prune this real model (built-in name, hub id or folder) "
                   "instead of a random one of --shape")
    p.add_argument("--run", default="", help="take labels and the mask from runs/<RUN>/results (07_pruning)")
    p.add_argument("--mask", default="threshold", help="with --run: the mask's method or name, e.g. threshold, "
                   "sorting@0.5, layerwise@0.25")
    p.add_argument("--language", default="en", help="with --run: the mask's target language")
    p.add_argument("--export", default="", help="save the pruned model here, reload it and time the reloaded one")
    return p.parse_args(argv)


INIT_STD = 0.02  # std of the random weights (uniform, as fast to draw as it gets)
EMBED_BLOCK = 4096  # distinct random embedding rows, tiled over the vocabulary


def build_model(shape: str, device: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    """A random-initialised causal LM of the given shape, on `device` in `dtype`, in eval mode.

    Weight initialisation is skipped at construction (transformers' no_init_weights; buffers and norm
    weights are still made) and every matrix is then drawn once, uniform with std INIT_STD; the
    embedding tiles EMBED_BLOCK random rows (the default init draws the 262k x 640 embedding twice,
    which costs more than the benchmark itself).
    """
    from transformers.initialization import no_init_weights

    torch.manual_seed(seed)
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(SHAPES[shape](), dtype=dtype)
    bound = INIT_STD * 3 ** 0.5
    embedding = model.get_input_embeddings().weight
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and param is not embedding:
                param.uniform_(-bound, bound)
        # Only looked-up rows matter for timing: tile a random block instead of drawing 262k rows.
        block = torch.empty(EMBED_BLOCK, embedding.shape[1], device=embedding.device, dtype=embedding.dtype)
        block.uniform_(-bound, bound)
        rows = torch.arange(embedding.shape[0], device=embedding.device) % EMBED_BLOCK
        torch.index_select(block, 0, rows, out=embedding.data)
    return model.eval().requires_grad_(False)


def make_mask(model: nn.Module, n_experts: int, ratio: float, mode: str, seed: int) -> np.ndarray:
    """Prune the lowest `ratio` of experts by random frequencies (a stand-in for a language's)."""
    if d_ff(model) % n_experts:
        raise ValueError(f"--experts {n_experts} does not divide d_ff {d_ff(model)}.")
    freqs = np.random.default_rng(seed).random((n_layers(model), n_experts))
    return sorting_mask(freqs, ratio, mode)


def run_mask(run: str, language: str, mask: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Labels and one 07_pruning mask of a run: (labels [L, d_ff], mask [L, E], the mask's name)."""
    from babel_utils.core import paths, results
    from babel_utils.prune.masks import masks_from_results

    res = paths.results_dir(paths.run_dir(run))
    specs = masks_from_results({"mask_specs": results.load(res, "mask_specs"), "masks": results.load(res, "masks")})
    found = [s for s in specs if s.language == language and mask in (s.method, s.name)]
    if not found:
        names = sorted({s.name for s in specs if s.language == language})
        raise ValueError(f"No mask {mask!r} for {language!r} in {res}; masks there: {', '.join(names) or 'none'}.")
    return results.load(res, "labels"), found[0].mask, found[0].name


def contiguous_labels(model: nn.Module, n_experts: int) -> np.ndarray:
    """Expert e = neurons [e*m, (e+1)*m) of every layer (the split does not matter for speed)."""
    return np.tile(np.arange(d_ff(model)) // (d_ff(model) // n_experts), (n_layers(model), 1))


def synchronize(device: torch.device) -> None:
    """Wait for the GPU (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_fn(model: nn.Module, target: str, input_ids: torch.Tensor) -> Callable[[], object]:
    """One forward pass of the body or of the full model."""
    module = body(model) if target == "body" else model
    return lambda: module(input_ids=input_ids, use_cache=False)


def ffn_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Every layer's FFN applied to the same hidden states (the FFNs alone)."""
    ffns = mlps(model)
    return lambda: [ffn(x) for ffn in ffns]


@torch.inference_mode()
def max_difference(model: nn.Module, pruned: nn.Module, labels: np.ndarray, mask: np.ndarray,
                   input_ids: torch.Tensor) -> float:
    """Largest |difference| between the pruned body's output and the masked dense body's."""
    with apply_mask(model, labels, mask):
        masked = body(model)(input_ids=input_ids, use_cache=False).last_hidden_state
    sliced = body(pruned)(input_ids=input_ids, use_cache=False).last_hidden_state
    return float((masked.float() - sliced.float()).abs().max())


def report(args: argparse.Namespace, model: nn.Module, pruned: nn.Module, mask: np.ndarray,
           times: dict[str, float], diff: float, device: torch.device, dtype: torch.dtype) -> None:
    """Print the setup and the measured figures."""
    widths = [layer_width(pruned, i) for i in range(n_layers(pruned))]
    share = pruned_share(mask)
    what = ("model body (embeddings + decoder layers, no LM head)" if args.target == "body"
            else "full causal LM (LM head included)")
    kept = (f"kept widths {sorted(set(widths))}" if len(set(widths)) <= 3 else
            f"kept widths {min(widths)}-{max(widths)} (mean {np.mean(widths):.0f})")
    source = args.model or f"shape {args.shape}"
    how = args.mask_name if args.run else f"{args.mode}, random frequencies"
    print(f"{source}: {model.config.model_type}, {n_layers(model)} layers, hidden "
          f"{model.config.hidden_size}, d_ff {d_ff(model)} -> {kept}; {mask.shape[1]} experts, "
          f"{share:.0%} pruned ({how})")
    print(f"device {device} ({torch.get_num_threads()} CPU threads), {str(dtype).removeprefix('torch.')}, "
          f"{args.batch} x {args.tokens} tokens; timed: {what}; median of {args.repeats} interleaved "
          f"after {args.warmup} warm-up")
    dense, pr = times["dense"], times["pruned"]
    print(f"dense {dense:.1f} ms, pruned({share:.0%}) {pr:.1f} ms: {dense / pr:.2f}x faster, "
          f"{(1 - pr / dense) * 100:.0f} % less time")
    fd, fp = times["ffn_dense"], times["ffn_pruned"]
    print(f"FFNs alone: dense {fd:.1f} ms ({fd / dense:.0%} of the dense {args.target}), pruned {fp:.1f} ms: "
          f"{fd / fp:.2f}x faster")
    print(f"check: max |pruned - masked dense| of the body output = {diff:.2e}")
    if "reloaded" in times:
        print(f"exported to {args.export} and reloaded: {times['reloaded']:.1f} ms "
              f"({dense / times['reloaded']:.2f}x faster than dense)")


def main(argv: list[str] | None = None) -> None:
    """Build, prune, check and time."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    t0 = time.perf_counter()
    if args.model:
        from babel_utils.models.loading import load_model

        model, _ = load_model(args.model, str(dtype).removeprefix("torch."), str(device))
    else:
        model = build_model(args.shape, device, dtype, args.seed)
    if args.run:
        labels, mask, args.mask_name = run_mask(args.run, args.language, args.mask)
    else:
        labels = contiguous_labels(model, args.experts)
        mask = make_mask(model, args.experts, args.ratio, args.mode, args.seed)
    pruned = physically_prune(model, labels, mask)
    log.info("built and pruned in %.1f s", time.perf_counter() - t0)
    gen = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens), generator=gen).to(device)
    x = torch.randn(args.batch, args.tokens, model.config.hidden_size, generator=gen).to(device, dtype)
    diff = max_difference(model, pruned, labels, mask, input_ids)
    contenders = {"dense": forward_fn(model, args.target, input_ids),
                  "pruned": forward_fn(pruned, args.target, input_ids)}
    if args.export:
        from babel_utils.prune.surgery import load_pruned, save_pruned

        save_pruned(pruned, args.export)
        reloaded = load_pruned(args.export, dtype, str(device))
        with torch.inference_mode():
            same = torch.equal(body(reloaded)(input_ids=input_ids, use_cache=False).last_hidden_state,
                               body(pruned)(input_ids=input_ids, use_cache=False).last_hidden_state)
        log.info("exported to %s; the reloaded model computes the same: %s", args.export, same)
        contenders["reloaded"] = forward_fn(reloaded, args.target, input_ids)
    times = paired_median_ms(contenders, device, args.warmup, args.repeats)
    times.update(paired_median_ms({"ffn_dense": ffn_fn(model, x), "ffn_pruned": ffn_fn(pruned, x)},
                                  device, args.warmup, args.repeats))
    report(args, model, pruned, mask, times, diff, device, dtype)


if __name__ == "__main__":
    main()
