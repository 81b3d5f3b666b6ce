"""The cached stages behind the notebooks: each computes once per parameter set and reloads after."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core import cache, results
from ..core.config import BabelConfig, section_fields
from ..data import text as data
from ..evaluate import comparisons, tasks
from ..evaluate.intervals import Blocks
from ..kinds.expert_kinds import KINDS, ExpertKind, check_kind, kind_of
from ..models.adapters import d_ff
from ..models.experts import ExpertSplit
from ..prune import masks as pruning
from ..prune import methods
from ..record.counting import LanguageCounts

log = logging.getLogger(__name__)


def split(cfg: BabelConfig, model: nn.Module) -> tuple[np.ndarray, pd.DataFrame]:
    """Expert labels [L, d_ff] of every layer and the per-layer split table (notebook 01); for a native mixture
    the identity labels [L_moe, E] and its structure (expert_kinds)."""
    stored = cache.cached(cfg, "split", lambda: kind_of(model).split(cfg, model))
    return stored["labels"], stored["split_layers"]


def record_language(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                    labels: np.ndarray, lang: str, budget: int) -> LanguageCounts:
    """Expert counts of one language's calibration text (notebook 02), cached per language."""
    return record_language_splits([cfg], model, tokenizer, [labels], lang, budget)[0]


def record_language_splits(cfgs: Sequence[BabelConfig], model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                           labels: Sequence[np.ndarray], lang: str, budget: int) -> list[LanguageCounts]:
    """`record_language` under several expert splits (configs that differ only in split fields).

    Each result is cached on its own config, exactly as `record_language` caches it; the ones not cached
    yet are counted together in one pass over the text (`counting.record_counts_many`).
    """
    _check_same_recording(cfgs)
    todo = [i for i, c in enumerate(cfgs) if not cache.is_cached(c, "record", language=lang, budget=budget)]
    fresh: dict[int, LanguageCounts] = {}
    if todo:
        cfg = cfgs[todo[0]]
        packed = data.calibration_batches(cfg, tokenizer, lang, budget)
        found = kind_of(model).record(model, packed.input_ids, packed.attention_mask,
                                      data.count_mask(packed, tokenizer.bos_token_id),
                                      [(labels[i], cfgs[i].n_experts) for i in todo], desc=f"record {lang}",
                                      **record_options(cfg))
        fresh = dict(zip(todo, found))
    out = []
    for i, c in enumerate(cfgs):
        stored = cache.cached(c, "record", lambda i=i: fresh[i].state_dict(), language=lang, budget=budget)
        out.append(LanguageCounts.from_state_dict(stored))
    return out


def _check_same_recording(cfgs: Sequence[BabelConfig]) -> None:
    """Configs recorded in one pass must agree on everything but the split (same model, text and scoring)."""
    fields = section_fields(*cache.RECORDING)
    for c in cfgs[1:]:
        differ = [f for f in fields if getattr(c, f) != getattr(cfgs[0], f)]
        if differ:
            raise ValueError(f"Configs recorded in one pass may differ only in their expert split; these differ: "
                             f"{', '.join(differ)}. Record them with separate calls.")


def record_options(cfg: BabelConfig) -> dict:
    """The recording options of a config (batch size, score, normalisation, selection, blocks)."""
    return {"batch_size": cfg.batch_size, "score": cfg.score, "normalize": cfg.normalize,
            "selection": cfg.selection, "top_fraction": cfg.top_fraction, "block": cfg.bootstrap_block}


def load_labels(cfg: BabelConfig, model: nn.Module, results_folder: Path) -> np.ndarray:
    """The expert labels written by 01_split, checked against this model and `n_experts`."""
    labels = results.load(results_folder, "labels")
    cache.check_provenance(results_folder, cfg, "labels")
    expected = kind_of(model).label_shape(model)
    split = ExpertSplit(labels)
    if labels.shape != expected or split.n_experts != cfg.n_experts:
        raise ValueError(f"The labels in {results_folder} ({split.n_layers} layers x {split.d_ff} neurons, "
                         f"{split.n_experts} experts) do not fit {cfg.model} ({expected[0]} x {expected[1]}) "
                         f"with n_experts={cfg.n_experts}. Rerun 01_split with these parameters.")
    return labels


def load_kind(cfg: BabelConfig, results_folder: Path) -> ExpertKind:
    """The expert kind 01_split found (split or native), for notebooks that do not load the model."""
    if results.find(results_folder, "expert_kind") is None:  # written since native models run: older runs split
        log.warning("%s has no expert_kind (made before babel recorded it): its experts are split", results_folder)
        return KINDS["split"]
    table = results.load(results_folder, "expert_kind")
    cache.check_provenance(results_folder, cfg, "expert_kind")
    return check_kind(str(table["kind"].iloc[0]))


def load_masks(cfg: BabelConfig, results_folder: Path) -> list[pruning.MaskSpec]:
    """The masks written by 07_pruning, checked to come from this config's frequencies and pruning settings."""
    found = {name: results.load(results_folder, name) for name in ("mask_specs", "masks")}
    cache.check_provenance(results_folder, cfg, "masks")
    return pruning.masks_from_results(found)


def grid_config(cfg: BabelConfig, n_experts: int) -> BabelConfig:
    """The config of one granularity of the expert grid: the run's own, or n_experts with the grid's budget."""
    if n_experts == cfg.n_experts:
        return cfg
    return cfg.replace(n_experts=n_experts, kmeans_swap_rounds=cfg.expert_grid_swap_rounds)


def expert_grid_frequencies(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                            budget: int) -> tuple[dict[int, np.ndarray], list[int]]:
    """Frequencies [n_lang, L, E] at every n_experts of `cfg.expert_grid` that divides d_ff (notebook 05).

    Each granularity is split and recorded like 01 and 02 with `grid_config(cfg, n)` and cached the same
    way (the run's own n_experts reuses their work); all granularities share one pass over each
    language's text. Returns the frequencies by n_experts and the grid values skipped because d_ff does
    not divide. A native mixture has one granularity, its own: nothing to compute.
    """
    if not kind_of(model).regroups:
        return {}, []
    width = d_ff(model)
    grid = [int(n) for n in cfg.expert_grid if width % n == 0]
    skipped = [int(n) for n in cfg.expert_grid if width % n]
    found = split_frequencies([grid_config(cfg, n) for n in grid], model, tokenizer, cfg.languages, budget)
    return {n: np.stack([freqs[lang] for lang in cfg.languages]) for n, (_, freqs) in zip(grid, found)}, skipped


# --------------------------------------------------------------------------- notebooks 07-08: pruning


def array_hash(array: np.ndarray) -> str:
    """Short sha256 of an array's dtype, shape and bytes: a cache key for masks, labels and frequencies."""
    import hashlib

    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def pruning_masks(cfg: BabelConfig, F_by_lang: dict[str, np.ndarray], levels_by_lang: dict[str, np.ndarray],
                  kind: ExpertKind = KINDS["split"]) -> list[pruning.MaskSpec]:
    """Every mask of notebook 07 (threshold, sorting, layer-wise, random; one dynamic spec) per language, less
    the methods the expert kind skips.

    Cached by the pruning parameters, the methods and a hash of the frequencies and levels they were built from.
    """
    langs = list(cfg.languages)
    names = [m for m in methods.METHODS if m not in kind.skipped_methods]

    def compute() -> dict:
        return pruning.masks_to_results(methods.build_masks(F_by_lang, levels_by_lang, cfg, methods=names))

    F = np.stack([np.asarray(pruning.language_frequencies(F_by_lang, lang)) for lang in langs])
    levels = np.stack([np.asarray(levels_by_lang[lang], dtype=np.float64) for lang in langs
                       if lang in levels_by_lang]) if levels_by_lang else np.zeros(0)
    stored = cache.cached(cfg, "pruning", compute, frequencies=array_hash(F), levels=array_hash(levels),
                          methods=names)
    return pruning.masks_from_results(stored)


def _eval_key(spec: pruning.MaskSpec, labels: np.ndarray, lang: str, task: str) -> dict:
    """Extra cache keys of one evaluation: the task and the config fields it depends on, the mask (name,
    hash, target), the labels and the evaluated language."""
    return {"part": task, "fields": section_fields(*tasks.check_task(task).reads), "mask": spec.name,
            "mask_hash": array_hash(np.asarray(spec.mask, dtype=bool)), "target": spec.language,
            "labels": array_hash(np.asarray(labels, dtype=np.int64)), "language": lang}


def _evaluate(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray,
              jobs: list[tuple[pruning.MaskSpec, str]], task: str) -> list:
    """Raw results of (mask, evaluated language) jobs computed together: static masks (and the unpruned
    model) share batches through the expert kind's row masks, each row under its own mask; a method with its
    own hooks (dynamic top-k) runs one job at a time."""
    run = tasks.check_task(task).run
    if not all(methods.batches_with_others(spec) for spec, _ in jobs):
        if len(jobs) != 1:
            raise ValueError("Masks applied by their own hooks (dynamic top-k) are evaluated one at a time.")
        (spec, lang), = jobs
        with methods.hooks(model, labels, spec, cfg.score):
            return run(cfg, model, tokenizer, [lang], None)
    masks = np.stack([np.asarray(spec.mask, dtype=bool) for spec, _ in jobs])
    with kind_of(model).row_masks(model, labels, masks) as select:
        return run(cfg, model, tokenizer, [lang for _, lang in jobs], select)


def _groups(pending: list[tuple[pruning.MaskSpec, str]], task: str) -> list[list[tuple[pruning.MaskSpec, str]]]:
    """How pending jobs are batched: each job with its own hooks alone; the static ones per evaluated
    language, or all together for a task whose batches mix languages (generation)."""
    alone = [[job] for job in pending if not methods.batches_with_others(job[0])]
    static = [job for job in pending if methods.batches_with_others(job[0])]
    if tasks.check_task(task).languages_share_batches:
        return ([static] if static else []) + alone
    by_lang: dict[str, list] = {}
    for job in static:
        by_lang.setdefault(job[1], []).append(job)
    return list(by_lang.values()) + alone


def evaluate_jobs(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray,
                  jobs: list[tuple[pruning.MaskSpec, str]], task: str = "heldout",
                  desc: str = "evaluate") -> pd.DataFrame:
    """Evaluate (mask, evaluated language) pairs on a task of tasks.TASKS; tidy rows (comparisons.metric_rows)
    in the order of `jobs`.

    Each pair is cached on its own (stage "eval", keyed by the mask's name and hash, its target, the labels
    and the evaluated language), so an interrupted loop resumes where it stopped. The pairs not cached yet
    are computed in shared batches (each row under its own mask: apply.apply_row_masks; see `_groups`).
    """
    from ..core.progress import tqdm

    summarise = tasks.check_task(task).summarise

    def key(spec: pruning.MaskSpec, lang: str) -> dict:
        return _eval_key(spec, labels, lang, task)

    pending: list[tuple[pruning.MaskSpec, str]] = []
    for spec, lang in jobs:
        fresh = all((s.name, s.language, l) != (spec.name, spec.language, lang) for s, l in pending)
        if fresh and not cache.is_cached(cfg, "eval", **key(spec, lang)):
            pending.append((spec, lang))
    with tqdm(total=len(pending), desc=desc, unit="eval") as bar:
        for group in _groups(pending, task):
            for (spec, lang), value in zip(group, _evaluate(cfg, model, tokenizer, labels, group, task)):
                cache.cached(cfg, "eval", lambda value=value: {task: value}, **key(spec, lang))
            bar.update(len(group))
    rows = []
    for spec, lang in jobs:
        rows += comparisons.metric_rows(spec, lang, summarise(stored_result(cfg, labels, spec, lang, task)))
    return comparisons.tidy(rows)


def stored_result(cfg: BabelConfig, labels: np.ndarray, spec: pruning.MaskSpec, lang: str, task: str) -> Any:
    """The cached raw result of one evaluation that evaluate_jobs has computed."""
    def missing() -> dict:
        raise RuntimeError(f"Evaluation of {spec.name} on {lang} was not computed (cache folder removed meanwhile?).")
    return cache.cached(cfg, "eval", missing, **_eval_key(spec, labels, lang, task))[task]


def heldout_blocks(cfg: BabelConfig, labels: np.ndarray, jobs: list[tuple[pruning.MaskSpec, str]]) -> dict:
    """The held-out blocks (intervals.Blocks) of (mask, language) jobs that evaluate_jobs has run, keyed by
    (evaluated language, target, mask label): what the paired intervals of comparisons.* resample."""
    out = {}
    for spec, lang in jobs:
        result = stored_result(cfg, labels, spec, lang, "heldout")
        out[(lang, spec.language, comparisons.mask_label(spec))] = Blocks.of(result)
    return out


def split_frequencies(cfgs: Sequence[BabelConfig], model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                      languages: Sequence[str], budget: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Labels and per-language frequencies [L, E] under each of `cfgs` (e.g. other split methods or
    n_experts), through the cached `split` and recording stages of notebooks 01 and 02; one pass over
    each language's text serves every config."""
    labels = [split(c, model)[0] for c in cfgs]
    freqs: list[dict[str, np.ndarray]] = [{} for _ in cfgs]
    for lang in languages:
        for i, counts in enumerate(record_language_splits(cfgs, model, tokenizer, labels, lang, budget)):
            freqs[i][lang] = counts.counts / counts.n_tokens
    return list(zip(labels, freqs))
