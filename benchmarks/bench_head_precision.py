"""What the LM head's arithmetic does to notebook 08's numbers: every held-out evaluation of a run, at each head_dtype.

    BABEL_CACHE=<the run's stage cache> python benchmarks/bench_head_precision.py runs/default

Evaluates, through the stage cache (so the run's own evaluations are reused and only the other arithmetics' are
computed), every job of the run's main comparison (the unpruned model and each mask on its own language,
eval_max_tokens) and of its cross-language matrix (cross_language_max_tokens), with the head at every head_dtype.
Prints, for each against float32, the largest relative difference of bits per byte, the largest change of a
mask's relative change against the unpruned model (what 08's verdicts read), and whether any verdict of 08
changes.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import pandas as pd

from babel_utils.core import config, paths
from babel_utils.evaluate import comparisons as evaluation
from babel_utils.models import lm_head
from babel_utils.models.loading import load_model
from babel_utils.prune import masks as pruning
from babel_utils.run import stages


def jobs_of(cfg: config.BabelConfig, specs: list[pruning.MaskSpec]) -> dict[str, tuple[config.BabelConfig, list]]:
    """08's held-out jobs by comparison: (the config they are evaluated under, [(mask, evaluated language)])."""
    langs = list(dict.fromkeys(s.language for s in specs))
    L, E = specs[0].mask.shape
    dense = {lang: pruning.dense_spec(lang, L, E) for lang in langs}
    ratio = pruning.nearest_ratio(cfg.prune_ratios, cfg.cross_language_ratio)
    mask_of = functools.partial(pruning.find_spec, specs, default_seed=cfg.random_seeds[0])
    cross = [(mask_of(a, "sorting", ratio), b) for a in langs for b in langs] + [(dense[b], b) for b in langs]
    return {"main": (cfg, [(dense[lang], lang) for lang in langs] + [(s, s.language) for s in specs]),
            "cross-language": (cfg.replace(eval_max_tokens=cfg.cross_language_max_tokens or cfg.eval_max_tokens), cross)}


def verdicts(cfg: config.BabelConfig, labels, table: pd.DataFrame, jobs: list) -> pd.Series:
    """Every verdict 08 states on the main comparison: against the unpruned model, against random, and
    layer-wise rates against uniform sorting."""
    blocks = stages.heldout_blocks(cfg, labels, jobs)
    boot = evaluation.Bootstrap(cfg.eval_bootstrap, cfg.interval_level, cfg.seed)
    dense = evaluation.against_dense(table, blocks, boot).set_index(["mask", "language"])["verdict"]
    guided = evaluation.guided_vs_random(table, "bits_per_byte", blocks, boot)
    guided = guided.set_index(["method", "ratio", "language"])["verdict"]
    layerwise = evaluation.layerwise_vs_sorting(table, blocks, boot).set_index(["ratio", "language"])["verdict"]
    named = []
    for name, part in (("vs dense", dense), ("vs random", guided), ("layer-wise vs sorting", layerwise)):
        named.append(pd.Series(part.to_numpy(), index=[f"{name} {' '.join(map(str, key))}" for key in part.index]))
    return pd.concat(named)


def main() -> None:
    """Evaluate at every head arithmetic and print the differences from float32."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (runs/<run_name>) whose 07_pruning has run")
    args = parser.parse_args()
    cfg = config.load_config(args.run / "config.yaml")
    res = paths.results_dir(args.run)
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, cfg.device_map)
    labels = stages.load_labels(cfg, model, res)
    specs = stages.load_masks(cfg, res)
    others = [d for d in lm_head.HEAD_DTYPES if d != "float32"]
    for part, (part_cfg, jobs) in jobs_of(cfg, specs).items():
        tables, said = {}, {}
        for dtype in [cfg.head_dtype] + [d for d in lm_head.HEAD_DTYPES if d != cfg.head_dtype]:
            dtype_cfg = part_cfg.replace(head_dtype=dtype)
            start = time.perf_counter()
            tables[dtype] = stages.evaluate_jobs(dtype_cfg, model, tokenizer, labels, jobs, "heldout", desc=dtype)
            print(f"{part}: {len(jobs)} evaluations of {part_cfg.eval_max_tokens} tokens at {dtype} in "
                  f"{time.perf_counter() - start:.0f} s (cached ones read)")
            if part == "main":
                said[dtype] = verdicts(dtype_cfg, labels, tables[dtype], jobs)
        bpb = {d: t[t["metric"] == "bits_per_byte"].reset_index(drop=True) for d, t in tables.items()}
        change = {d: evaluation.relative_to_dense(t)["relative"] for d, t in bpb.items()}
        for dtype in others:
            rel = (bpb[dtype]["value"] - bpb["float32"]["value"]) / bpb["float32"]["value"]
            worst = rel.abs().idxmax()
            row = bpb["float32"].loc[worst]
            print(f"{part}: bits per byte, {dtype} against float32: largest relative difference "
                  f"{rel.abs().max():.2e} ({row['mask']} on {row['language']}: {row['value']:.5f} -> "
                  f"{bpb[dtype].loc[worst, 'value']:.5f}), mean {rel.mean():+.2e}")
            print(f"{part}: {dtype}: largest change of a relative change against the unpruned model: "
                  f"{(change[dtype] - change['float32']).abs().max():.2e} (absolute, in relative units)")
            if part == "main":
                differ = said[dtype][said[dtype] != said["float32"]]
                print(f"main: {len(said['float32'])} verdicts, {len(differ)} differ between {dtype} and float32"
                      + "".join(f"\n  {k}: float32 {said['float32'][k]!r}, {dtype} {v!r}" for k, v in differ.items()))

if __name__ == "__main__":
    main()
