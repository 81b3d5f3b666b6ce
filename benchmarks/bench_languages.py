"""Recording at many languages: tokens per second and peak memory against the number of languages.

    python benchmarks/bench_languages.py                      # 10 and 100 languages of one-per:genus, 640 tokens each
    python benchmarks/bench_languages.py --sizes 10 50 200 --budget 640

Each size runs in its own process with an empty stage cache (so nothing is reused and the peak resident memory
is that size's own): it loads the model, splits it (01's stage) and records every language (02's stage). What
grows with the languages is the counts (per language [layers, experts] and the per-block counts for the
bootstraps), not the activations, so the peak memory should stay flat while the time grows with the tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def one_size(config: str, n: int, budget: int) -> dict:
    """Split and record the first n languages of the config in this process; time, tokens and peak RSS."""
    from babel_utils.core import config as config_mod
    from babel_utils.data import text as data
    from babel_utils.models.loading import load_model
    from babel_utils.run import stages

    cfg = config_mod.load_config(config, [f"token_budget={budget}"])
    cfg = cfg.replace(languages=cfg.languages[:n])
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device)
    labels, _ = stages.split(cfg, model)
    start = time.perf_counter()
    tokens = 0
    for lang in cfg.languages:
        tokens += stages.record_language(cfg, model, tokenizer, labels, lang, data.token_budget(cfg, tokenizer)).n_tokens
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"languages": n, "tokens": int(tokens), "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1), "peak_rss_gib": round(peak_gib, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/udhr-genera.yaml", help="languages are taken from its start")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--budget", type=int, default=640, help="calibration tokens per language")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process of one size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.config, args.one, args.budget)))
        return
    print(f"{'languages':>9} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'peak RSS (GiB)':>15}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "BABEL_CACHE": cache,
                   "BABEL_MODEL_CACHE": os.environ.get("BABEL_MODEL_CACHE", os.path.join(
                       os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "babel", "models"))}
            out = subprocess.run([sys.executable, __file__, "--config", args.config, "--budget", str(args.budget),
                                  "--one", str(n)], env=env, check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{row['languages']:>9} {row['tokens']:>8} {row['seconds']:>8} {row['tokens_per_s']:>9} "
              f"{row['peak_rss_gib']:>15}")


if __name__ == "__main__":
    main()
