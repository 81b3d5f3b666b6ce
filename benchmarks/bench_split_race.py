"""Our balanced K-Means against the peers' tool, `k-means-constrained` (min-cost flow, CPU), on a real model's
layers: objective, seconds per layer, speed-up, and whether the target (at least 10x faster with an objective at
least as good) is met, for the config's own swap budget and a small one.

    .venv/bin/python benchmarks/bench_split_race.py                    # the default config, layers 0, middle, last
    .venv/bin/python benchmarks/bench_split_race.py --write            # and store it in benchmarks/results/
    .venv/bin/python benchmarks/bench_split_race.py --config configs/smollm2.yaml --layers 0,15 --budgets 1000 4

The race was a cell of notebook 01 until the notebooks kept only the study; BENCHMARKS.md quotes the stored
result (benchmarks/results/split_race.txt, read by babel_utils/run/facts.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babel_utils.core.config import load_config  # noqa: E402
from babel_utils.core.machine import machine_info  # noqa: E402
from babel_utils.models.adapters import n_layers  # noqa: E402
from babel_utils.models.loading import load_model  # noqa: E402
from babel_utils.split import clustering  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "split_race.txt"


def main() -> None:
    """Race both tools on the named layers and print (and with --write, store) the table and its sentences."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--layers", default="shallow,middle,deep", help="layer numbers or shallow, middle, deep")
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="swap budgets of ours (default: the config's kmeans_swap_rounds and 4)")
    parser.add_argument("--write", action="store_true", help="store the result in benchmarks/results/split_race.txt")
    args = parser.parse_args()
    cfg = load_config(args.config)
    model, _ = load_model(cfg.model, cfg.dtype, "cpu", None)
    layers = clustering.named_layers(args.layers, n_layers(model))
    budgets = args.budgets or list(dict.fromkeys([cfg.kmeans_swap_rounds, 4]))
    table = clustering.compare_with_kmeans_constrained(model, layers, cfg.n_experts, cfg.kmeans_iters, cfg.seed,
                                                       matrix=cfg.cluster_matrix, swap_budgets=budgets)
    info = machine_info()
    text = (f"{cfg.model}, layers {layers}, {cfg.n_experts} experts, {cfg.kmeans_iters} iterations, seed {cfg.seed}; "
            f"torch CPU kernels {info['cpu_capability']}, {info['threads']} threads\n\n"
            f"{clustering.describe_comparison(table)}\n\n{table.to_string(index=False)}\n")
    print(text)
    if args.write:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(text, encoding="utf-8")
        print(f"written to {RESULT}")


if __name__ == "__main__":
    main()
