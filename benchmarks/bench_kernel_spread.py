"""How far notebook 08's bits per byte move when other CPU kernels compute them: the spread that the reproduction
check's tolerances (babel_utils/run/reproduction.py) are sized from.

    BABEL_CACHE=<the run's stage cache> python benchmarks/bench_kernel_spread.py runs/default --kernels generic
    python benchmarks/bench_kernel_spread.py runs/default --flips en,hi,bn,es

The first form evaluates every held-out job of the run's main comparison (the unpruned model and each mask on
its own language, eval_max_tokens, at the run's head_dtype or --head-dtype) in this process (native kernels; the
run's own evaluations are read from its stage cache) and again in a fresh process under the named kernel set
(machine.KERNEL_SETS: "generic" differs from the native kernels of an AMD CPU far more than "avx2") with an
empty stage cache. It prints the largest relative difference of bits per byte over the masks chosen once
(static masks and the unpruned model) and over the masks chosen per token (dynamic top-k), with the worst
(mask, language) of each, and the median.

`--flips` measures what makes dynamic top-k the exception: for each language it records which experts each
token keeps in each layer, natively and under the other kernel set, and prints the share of (token, layer)
choices that differ, the experts swapped, and the relative difference of bits per byte.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from babel_utils.core import config, paths
from babel_utils.core.machine import kernel_environment, machine_info
from babel_utils.data import text as data
from babel_utils.evaluate import scoring
from babel_utils.models.loading import load_model
from babel_utils.prune import apply, methods
from babel_utils.run import reproduction, stages

sys.path.insert(0, str(Path(__file__).parent))
from bench_head_precision import jobs_of  # noqa: E402


def _loaded(run: Path, head_dtype: str | None):
    """The run's config (at `head_dtype` if given), model, tokenizer, labels and masks."""
    cfg = config.load_config(run / "config.yaml")
    cfg = cfg.replace(head_dtype=head_dtype or cfg.head_dtype)
    res = paths.results_dir(run)
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, cfg.device_map)
    return cfg, model, tokenizer, stages.load_labels(cfg, model, res), stages.load_masks(cfg, res)


def main_comparison(run: Path, head_dtype: str | None) -> pd.DataFrame:
    """Bits per byte of every job of the run's main comparison, computed (or read from the cache) here."""
    cfg, model, tokenizer, labels, specs = _loaded(run, head_dtype)
    part_cfg, jobs = jobs_of(cfg, specs)["main"]
    table = stages.evaluate_jobs(part_cfg, model, tokenizer, labels, jobs, "heldout", desc="main")
    return table[table["metric"] == "bits_per_byte"].reset_index(drop=True)


def dynamic_choices(run: Path, head_dtype: str | None, languages: list[str]) -> dict:
    """Per language: the experts every token keeps in every layer under dynamic top-k [tokens * layers, E]
    (bool), and the bits per byte of its held-out text."""
    cfg, model, tokenizer, labels, specs = _loaded(run, head_dtype)
    kept: list[torch.Tensor] = []
    real = apply.top_mask

    def recording(scores: torch.Tensor, k: int) -> torch.Tensor:
        mask = real(scores, k)
        kept.append(mask.reshape(-1, mask.shape[-1]).clone())
        return mask

    out = {}
    apply.top_mask = recording  # dynamic_topk looks it up at each call
    try:
        for lang in languages:
            spec = next(s for s in specs if s.language == lang and s.method == "dynamic")
            kept.clear()
            with methods.hooks(model, labels, spec, cfg.score):
                result = scoring.perplexity(model, tokenizer, data.heldout_texts(cfg, lang), cfg.eval_max_tokens,
                                            cfg.seq_len, cfg.batch_size, head_dtype=cfg.head_dtype)
            out[lang] = (torch.cat(kept).numpy(), result["bits_per_byte"])
    finally:
        apply.top_mask = real
    return out


def _in_other_kernels(args: argparse.Namespace, tmp: str, what: str):
    """Run this script's `what` in a fresh process under the other kernel set (empty stage cache)."""
    out = Path(tmp) / f"{what}.pickle"
    env = {**kernel_environment(args.kernels), "BABEL_CACHE": str(Path(tmp) / "cache")}
    command = [sys.executable, __file__, str(args.run), "--kernels", args.kernels, "--child", str(out)]
    command += ["--head-dtype", args.head_dtype] if args.head_dtype else []
    command += ["--flips", args.flips] if args.flips else []
    subprocess.run(command, env=env, check=True)
    return pickle.loads(out.read_bytes())


def report_spread(native: pd.DataFrame, other: pd.DataFrame, head: str, kernels: str) -> None:
    """The largest and median relative differences of bits per byte, masks chosen once and per token."""
    keys = native["language"] + " " + native["mask"]
    rel = ((other["value"] - native["value"]) / native["value"]).abs()
    per_token = keys.map(reproduction.chosen_per_token)
    print(f"{len(keys)} evaluations, head {head}; native: {machine_info()['cpu_capability']}, other: {kernels}")
    for name, part in (("chosen once", ~per_token), ("chosen per token", per_token)):
        worst = rel[part].idxmax()
        print(f"{name}: {int(part.sum())} evaluations, largest relative difference of bits per byte "
              f"{rel[part].max():.2e} ({keys[worst]}: {native['value'][worst]:.7f} -> "
              f"{other['value'][worst]:.7f}), median {rel[part].median():.1e}")


def report_flips(native: dict, other: dict, kernels: str) -> None:
    """Per language: how many (token, layer) choices of dynamic top-k differ, and what it does to bits per byte."""
    for lang, (kept, bpb) in native.items():
        kept_other, bpb_other = other[lang]
        differ = (kept != kept_other).any(1)
        print(f"{lang}: {differ.sum()} of {len(kept)} (token, layer) choices differ ({differ.mean():.1%}) under "
              f"{kernels}, {int((kept != kept_other).sum()) // 2} experts swapped; bits per byte {bpb:.6f} -> "
              f"{bpb_other:.6f} ({abs(bpb_other - bpb) / bpb:.1e} relative)")


def main() -> None:
    """Compare the run's evaluations under the native kernels and under another kernel set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (runs/<run_name>) whose 07_pruning has run")
    parser.add_argument("--kernels", default="generic", help="the other kernel set (machine.KERNEL_SETS)")
    parser.add_argument("--head-dtype", default=None, help="the LM head's arithmetic (default: the run's)")
    parser.add_argument("--flips", default="", help="languages whose dynamic top-k choices to compare, e.g. en,hi")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    languages = [lang for lang in args.flips.split(",") if lang]
    measure = ((lambda: dynamic_choices(args.run, args.head_dtype, languages)) if languages
               else (lambda: main_comparison(args.run, args.head_dtype)))
    if args.child is not None:  # the other kernel set's process: compute and hand back
        args.child.write_bytes(pickle.dumps(measure()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        other = _in_other_kernels(args, tmp, "flips" if languages else "main")
    head = args.head_dtype or config.load_config(args.run / "config.yaml").head_dtype
    if languages:
        report_flips(measure(), other, args.kernels)
    else:
        report_spread(measure(), other, head, args.kernels)


if __name__ == "__main__":
    main()
