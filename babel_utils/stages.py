"""The cached stages behind the notebooks: each computes once per parameter set and reloads after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn
from transformers import PreTrainedTokenizerBase

from . import cache, clustering, data, results
from .adapters import d_ff, n_layers
from .config import BabelConfig
from .counting import LanguageCounts, record_counts


def split(cfg: BabelConfig, model: nn.Module) -> tuple[np.ndarray, pd.DataFrame]:
    """Expert labels [L, d_ff] of every layer and the per-layer split table (notebook 01)."""
    def compute() -> dict:
        result = clustering.split_model(model, cfg.n_experts, method=cfg.split_method,
                                        matrix=cfg.cluster_matrix, iters=cfg.kmeans_iters, seed=cfg.seed)
        return {"labels": result.labels.astype(np.int64), "split_layers": result.layers}

    stored = cache.cached(cfg, "split", compute)
    return stored["labels"], stored["split_layers"]


def record_language(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                    labels: np.ndarray, lang: str, budget: int) -> LanguageCounts:
    """Expert counts of one language's calibration text (notebook 02), cached per language."""
    def compute() -> dict:
        packed = data.calibration_batches(cfg, tokenizer, lang, budget)
        counts = record_counts(model, packed.input_ids, packed.attention_mask,
                               data.count_mask(packed, tokenizer.bos_token_id), labels, cfg.n_experts,
                               batch_size=cfg.batch_size, desc=f"record {lang}", score=cfg.score,
                               normalize=cfg.normalize, selection=cfg.selection,
                               top_fraction=cfg.top_fraction, block=cfg.bootstrap_block)
        return {"counts": counts.counts, "block_counts": counts.block_counts,
                "block_tokens": counts.block_tokens, "n_tokens": {"n_tokens": counts.n_tokens}}

    stored = cache.cached(cfg, "record", compute, language=lang, budget=budget)
    return LanguageCounts(counts=stored["counts"], n_tokens=int(stored["n_tokens"]["n_tokens"]),
                          block_counts=stored["block_counts"], block_tokens=stored["block_tokens"])


def load_labels(cfg: BabelConfig, model: nn.Module, results_folder: Path) -> np.ndarray:
    """The expert labels written by 01_split, checked against this model and `n_experts`."""
    labels = results.load(results_folder, "labels")
    expected = (n_layers(model), d_ff(model))
    if labels.shape != expected or int(labels.max()) + 1 != cfg.n_experts:
        raise ValueError(f"The labels in {results_folder} ({labels.shape[0]} layers x {labels.shape[1]} neurons, "
                         f"{int(labels.max()) + 1} experts) do not fit {cfg.model} ({expected[0]} x {expected[1]}) "
                         f"with n_experts={cfg.n_experts}. Rerun 01_split with these parameters.")
    return labels


def split_compare(cfg: BabelConfig, model: nn.Module, layers: list[int]) -> pd.DataFrame:
    """Our balanced K-Means against k-means-constrained on some layers (cached with its timings)."""
    def compute() -> dict:
        return {"split_compare": clustering.compare_with_kmeans_constrained(
            model, layers, cfg.n_experts, cfg.kmeans_iters, cfg.seed, matrix=cfg.cluster_matrix)}

    return cache.cached(cfg, "split_compare", compute, layers=layers)["split_compare"]


def expert_grid_frequencies(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                            budget: int) -> tuple[dict[int, np.ndarray], list[int]]:
    """Frequencies [n_lang, L, E] at every n_experts of `cfg.expert_grid` that divides d_ff (notebook 05).

    Each granularity is split and recorded through `split` and `record_language` with
    `cfg.replace(n_experts=n)`, so they are cached like 01 and 02 (the run's own n_experts reuses their
    work). Returns the frequencies by n_experts and the grid values skipped because d_ff does not divide.
    """
    width = d_ff(model)
    by_n, skipped = {}, []
    for n in cfg.expert_grid:
        if width % n:
            skipped.append(int(n))
            continue
        cfg_n = cfg.replace(n_experts=int(n))
        labels, _ = split(cfg_n, model)
        counts = {lang: record_language(cfg_n, model, tokenizer, labels, lang, budget) for lang in cfg.languages}
        by_n[int(n)] = np.stack([c.counts / c.n_tokens for c in counts.values()])
    return by_n, skipped
