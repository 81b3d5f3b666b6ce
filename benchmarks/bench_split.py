"""Time balanced K-Means over all layers of a random-initialised FFN of a given shape.

Default: the Llama-2-7B FFN (32 layers, up_proj 11008 x 4096, 256 experts). On a GPU every layer is
split, in batches of layers as `split_model` does; on the CPU only `--cpu-layers` layers are, one at
a time, and the total is extrapolated (and labelled so). No model is loaded: the up_proj weights are
`torch.randn`.

    python benchmarks/bench_split.py                       # Llama-2-7B shape, cuda if present
    python benchmarks/bench_split.py --device cpu --cpu-layers 1
    python benchmarks/bench_split.py --d-ff 2048 --d-model 640 --layers 18   # Gemma 3 270M shape
    python benchmarks/bench_split.py --against-kmc --swap-rounds 1000 4 2   # one layer: ours vs k-means-constrained

`--against-kmc` splits one random layer of the shape on the CPU with each swap budget of `--swap-rounds`
and with `k-means-constrained` (n_init=1, max_iter=--iters, the same unit rows), and prints seconds,
objective and the speed-up of each budget.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from babel_utils.split.clustering import auto_batch_layers
from babel_utils.split.kmeans import balanced_kmeans_batch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    """Parse the shape, split random layers, print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--d-ff", type=int, default=11008)
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--n-experts", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="weights' dtype; auto = bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--batch-layers", type=int, default=0,
                        help="layers split together (0 = as split_model: all that fit on a GPU, 1 on the CPU)")
    parser.add_argument("--cpu-layers", type=int, default=1,
                        help="on the CPU, split only this many layers and extrapolate")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="torch threads of a CPU run (0 = leave torch's setting)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--swap-rounds", type=int, nargs="+", default=[1000],
                        help="swap budget(s) of the refinement (the first is used for the all-layer split)")
    parser.add_argument("--against-kmc", action="store_true",
                        help="race one layer against k-means-constrained on the CPU instead")
    args = parser.parse_args()
    if args.against_kmc:
        against_kmc(args)
        return
    logging.basicConfig(level=logging.WARNING)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else (
        torch.bfloat16 if device.type == "cuda" else torch.float32)
    n_run = args.layers if device.type == "cuda" else min(args.layers, args.cpu_layers)
    threads = args.cpu_threads or None
    gen = torch.Generator().manual_seed(args.seed)
    weights = [torch.randn(args.d_ff, args.d_model, generator=gen).to(device=device, dtype=dtype)
               for _ in range(n_run)]
    batch = args.batch_layers or auto_batch_layers(weights[0], args.n_experts)

    if device.type == "cuda":  # warm up kernels and the allocator on a small problem
        balanced_kmeans_batch(torch.randn(2, args.n_experts * 8, 64, device=device), args.n_experts, iters=2)
        _sync(device)

    seconds, results = [], []
    for first in range(0, n_run, batch):
        chunk = weights[first:first + batch]
        _sync(device)
        start = time.perf_counter()
        found = balanced_kmeans_batch(torch.stack([w.float() for w in chunk]), args.n_experts, args.iters,
                                      [args.seed + first + i for i in range(len(chunk))],
                                      swap_rounds=args.swap_rounds[0], cpu_threads=threads)
        _sync(device)
        seconds.append(time.perf_counter() - start)
        results += found
        print(f"layers {first}-{first + len(chunk) - 1}: {seconds[-1]:.2f} s", flush=True)
    for layer, r in enumerate(results):
        print(f"layer {layer}: objective {r.objective:.4f} (after Lloyd {r.objective_lloyd:.4f}), "
              f"{r.n_iter} Lloyd iterations, {r.n_swaps} swaps in {r.swap_rounds} rounds")

    total = sum(seconds)
    per_layer = total / n_run
    label = (f"split {args.layers} layers {args.d_ff}x{args.d_model} -> {args.n_experts} experts on "
             f"{device.type} ({str(dtype).removeprefix('torch.')}, {batch} layer(s) per batch)")
    if n_run == args.layers:
        print(f"{label}: {total:.1f} s ({per_layer:.2f} s/layer)")
    else:
        print(f"{label}: {per_layer * args.layers:.1f} s EXTRAPOLATED from {n_run} layer(s) "
              f"({per_layer:.2f} s/layer measured)")


def against_kmc(args: argparse.Namespace) -> None:
    """One random layer of the shape on the CPU: every swap budget of ours, then k-means-constrained."""
    import numpy as np
    from k_means_constrained import KMeansConstrained

    from babel_utils.split.clustering import objective
    from babel_utils.split.kmeans import MAX_BITS, balanced_kmeans, quantize_rows

    x = torch.randn(args.d_ff, args.d_model, generator=torch.Generator().manual_seed(args.seed))
    m = args.d_ff // args.n_experts
    print(f"one layer {args.d_ff}x{args.d_model} -> {args.n_experts} experts of {m}, CPU, "
          f"{torch.get_num_threads()} threads, iters {args.iters}, seed {args.seed}", flush=True)
    ours = {}
    for budget in args.swap_rounds:
        start = time.perf_counter()
        r = balanced_kmeans(x, args.n_experts, args.iters, args.seed, swap_rounds=budget,
                            cpu_threads=args.cpu_threads or None)
        ours[budget] = (time.perf_counter() - start, r.objective)
        print(f"ours, swap budget {budget}: {ours[budget][0]:.1f} s, objective {r.objective:.4f} "
              f"(after Lloyd {r.objective_lloyd:.4f}; {r.n_iter} Lloyd iterations, {r.swap_rounds} swap rounds)",
              flush=True)
    unit = (quantize_rows(x, MAX_BITS)[0] * 2.0 ** -MAX_BITS).numpy()
    start = time.perf_counter()
    kmc = KMeansConstrained(n_clusters=args.n_experts, size_min=m, size_max=m, n_init=1, max_iter=args.iters,
                            random_state=args.seed).fit(unit)
    kmc_seconds = time.perf_counter() - start
    kmc_objective = objective(torch.from_numpy(unit), torch.from_numpy(kmc.labels_.astype(np.int64)),
                              args.n_experts)
    print(f"k-means-constrained (n_init=1, max_iter={args.iters}): {kmc_seconds:.1f} s, objective "
          f"{kmc_objective:.4f} ({kmc.n_iter_} iterations)")
    for budget, (seconds, obj) in ours.items():
        print(f"swap budget {budget}: {kmc_seconds / seconds:.1f}x faster, objective {obj - kmc_objective:+.4f} "
              f"({(obj - kmc_objective) / kmc_objective:+.1%}) against k-means-constrained")


if __name__ == "__main__":
    main()
