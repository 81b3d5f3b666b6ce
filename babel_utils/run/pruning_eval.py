"""Notebook 08's comparisons as functions: each takes the run's model and masks and returns its tables, so that
every cell of 08 is one call and its result, and each comparison is tested without papermill.

`Masks` gathers what every comparison asks of 07's masks (a language's mask of a method at a ratio, the ratio
nearest a wish, the unpruned reference); the functions below evaluate through `stages.evaluate_jobs`, whose
per-evaluation cache lets an interrupted 08 resume where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.config import BabelConfig
from ..core.timing import paired_median_ms
from ..data import text as data
from ..evaluate import comparisons, tasks
from ..evaluate.comparisons import Bootstrap
from ..kinds.expert_kinds import ExpertKind
from ..models.adapters import body, model_device
from ..prune import masks as pruning
from ..prune import methods
from . import stages


@dataclass(frozen=True)
class Masks:
    """07's masks as 08 asks for them: by target language, method and ratio (masks exist only at the run's
    prune_ratios; random masks by their first seed unless a seed is named)."""

    specs: tuple[pruning.MaskSpec, ...]
    languages: list[str]  # the run's languages that have masks, in the config's order
    ratios: tuple[float, ...]
    default_seed: int

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, experts) of every mask."""
        return tuple(self.specs[0].mask.shape)

    def nearest(self, ratio: float) -> float:
        """The configured ratio nearest to `ratio`."""
        return pruning.nearest_ratio(self.ratios, ratio)

    def of(self, language: str, method: str, ratio: float, seed: int | None = None) -> pruning.MaskSpec:
        """The mask of a language and method at the configured ratio nearest to `ratio`."""
        return pruning.find_spec(self.specs, language, method, self.nearest(ratio), seed, self.default_seed)

    def dense(self, language: str) -> pruning.MaskSpec:
        """The unpruned reference of a language."""
        return pruning.dense_spec(language, *self.shape)


def run_masks(cfg: BabelConfig, specs: Sequence[pruning.MaskSpec]) -> Masks:
    """The masks 07 wrote for this config's languages, with a clear error for a language that has none."""
    missing = [lang for lang in cfg.languages if not any(s.language == lang for s in specs)]
    if missing:
        raise ValueError(f"07_pruning made no masks for {missing}; rerun 07_pruning with these languages.")
    return Masks(tuple(s for s in specs if s.language in cfg.languages), list(cfg.languages),
                 tuple(cfg.prune_ratios), cfg.random_seeds[0])


PHYSICAL_TOLERANCE = 1e-3  # max |logit difference| of a physically pruned copy and the masked model


@torch.inference_mode()
def check_physical(model: nn.Module, labels: np.ndarray, kind: ExpertKind, pruned: nn.Module,
                   mask: np.ndarray, input_ids: torch.Tensor) -> float:
    """Max |logit difference| between a physically pruned copy and the model under the same mask; an error
    beyond PHYSICAL_TOLERANCE (the copy would then time a different computation)."""
    with kind.mask(model, labels, mask):
        masked = model(input_ids=input_ids).logits
    diff = float((masked - pruned(input_ids=input_ids).logits).abs().max())
    if not diff < PHYSICAL_TOLERANCE:
        raise RuntimeError(f"The physically pruned model differs from the masked one by {diff:.3g} in a logit "
                           f"(tolerance {PHYSICAL_TOLERANCE}): the expert kind's prune and mask disagree.")
    return diff


def pruned_speed(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray,
                 kind: ExpertKind, masks: Masks) -> pd.DataFrame:
    """Forward time of the model body, dense against physically pruned copies (the first language's threshold
    mask and its sorting mask at the largest ratio) on `timing_tokens` held-out tokens, each copy first checked
    to compute what the masked model computes (`check_physical`, on the first 64 tokens)."""
    lang = masks.languages[0]
    ids = data.pack_tokens(tokenizer, data.heldout_texts(cfg, lang), cfg.timing_tokens + 1,
                           budget=cfg.timing_tokens).input_ids[:1].to(model_device(model))
    threshold = next(s for s in masks.specs if s.language == lang and s.method == "threshold")
    contenders, differences = {"dense": model}, {"dense": 0.0}
    for spec in (threshold, masks.of(lang, "sorting", max(masks.ratios))):
        contenders[spec.name] = kind.prune(model, labels, spec.mask)
        differences[spec.name] = check_physical(model, labels, kind, contenders[spec.name], spec.mask, ids[:, :64])
    calls = {name: (lambda b=body(m): b(input_ids=ids, use_cache=False)) for name, m in contenders.items()}
    times = paired_median_ms(calls, model_device(model), warmup=1, repeats=cfg.timing_repeats)
    return pd.DataFrame({
        "contender": list(times), "ms": [round(t, 1) for t in times.values()],
        "FFN share kept": [1.0 if name == "dense" else round(kind.kept_share(contenders[name], model), 3)
                           for name in times],
        "speed-up vs dense": [round(times["dense"] / t, 2) for t in times.values()],
        "max logit difference to masked": [float(f"{differences[name]:.2g}") for name in times],
        "tokens": cfg.timing_tokens, "threads": torch.get_num_threads()})


@dataclass(frozen=True)
class HeldOut:
    """The main comparison: bits per byte and perplexity of every mask on its own language."""

    evals: pd.DataFrame  # tidy rows: mask, method, ratio, seed, target, language, metric, value
    blocks: dict  # (target, language, mask name) -> per-block NLL and bytes, for the paired intervals


def held_out(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray,
             masks: Masks) -> HeldOut:
    """Every mask of 07 and the unpruned model, each on its own language's held-out text."""
    jobs = [(masks.dense(lang), lang) for lang in masks.languages] + [(s, s.language) for s in masks.specs]
    evals = stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, "heldout", desc="held-out")
    return HeldOut(evals, stages.heldout_blocks(cfg, labels, jobs))


def metric_table(evals: pd.DataFrame, metric: str, languages: Sequence[str]) -> pd.DataFrame:
    """One metric as a mask x language table, masks in evaluation order."""
    table = evals[evals["metric"] == metric].pivot(index="mask", columns="language", values="value")
    return table.reindex(index=list(dict.fromkeys(evals["mask"])), columns=list(languages))


def task_masks(cfg: BabelConfig, masks: Masks, languages: Sequence[str]) -> list[tuple[pruning.MaskSpec, str]]:
    """(mask, language) jobs of the tasks: the unpruned model and each of task_methods at task_ratio."""
    return [(spec, lang) for lang in languages
            for spec in [masks.dense(lang)] + [masks.of(lang, m, cfg.task_ratio) for m in cfg.task_methods]]


@dataclass(frozen=True)
class Benchmarks:
    """Every benchmark of evaluate.TASKS on the task masks: metrics and items of the tasks this run has data
    for, and why the others have none."""

    ratio: float  # the masks' pruned share
    languages: dict[str, list[str]]  # task -> the run's languages it was evaluated on (only tasks with some)
    metrics: pd.DataFrame  # tidy rows: mask, method, ratio, seed, target, language, metric, value
    items: pd.DataFrame  # one row per task, language, mask and item (tasks.ITEM_COLUMNS)
    skipped: dict[str, str]  # task -> why this run has none of its languages

    def describe(self) -> str:
        """Per task: what it measures, on which languages and how many items, or why it was left out."""
        lines = []
        for name in tasks.benchmark_tasks():
            task = tasks.TASKS[name]
            if name in self.skipped:
                lines.append(f"{task.title}: left out: {self.skipped[name]}")
                continue
            part = self.items[(self.items["task"] == name) & (self.items["mask"] == pruning.DENSE)]
            per_language = part.groupby("language", sort=False)
            lines.append(f"{task.title}: {task.about}. {len(self.languages[name])} language(s) "
                         f"({', '.join(self.languages[name])}), {int(per_language.size().max())} items per language, "
                         f"{int(per_language['correct'].count().max())} of them answered (accuracy); masks at "
                         f"{self.ratio:.0%} pruned.")
            answered = self.items.loc[self.items["task"] == name, "correct"].dropna()
            if len(answered) and not answered.astype(bool).any():
                lines.append(f"{task.title}: no answer was right under any mask, the unpruned model included: on "
                             f"this model accuracy cannot show what pruning costs; the {task.score} can.")
        return "\n".join(lines)

    def table(self) -> pd.DataFrame | str:
        """Metrics as a (language, mask) x metric table, or why there are none."""
        if self.metrics.empty:
            return "No benchmark has data for this run's languages (see above)."
        return self.metrics.pivot_table(index=["language", "mask"], columns="metric", values="value",
                                        sort=False).round(3)

    def examples(self) -> str:
        """One item of the unpruned model per task: the question, what the model produced, and how it was read."""
        lines = []
        for name, part in self.items[self.items["mask"] == pruning.DENSE].groupby("task", sort=False):
            row = part.iloc[0]
            produced = f"--- generated: {row['output']!r}\n" if row["output"] else ""
            lines.append(f"{tasks.TASKS[name].title} [{row['language']}] {row['item'][:200]}\n{produced}"
                         f"--- read as: {row['predicted']}; gold: {row['answer']}; correct: {row['correct']}")
        return "\n\n".join(lines) or "No benchmark has data for this run's languages."


def benchmarks(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray,
               masks: Masks) -> Benchmarks:
    """Each benchmark task on the run's languages it has: the unpruned model and task_methods at task_ratio."""
    evaluated, skipped, metric_parts, item_parts = {}, {}, [], []
    for name in tasks.benchmark_tasks():
        task = tasks.TASKS[name]
        languages = tasks.languages_with(name, cfg, masks.languages)
        if not languages:
            skipped[name] = task.missing(cfg)
            continue
        evaluated[name] = languages
        jobs = task_masks(cfg, masks, languages)
        metric_parts.append(stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, name, desc=name))
        item_parts += [task.items(stages.stored_result(cfg, labels, spec, lang, name))
                       .assign(task=name, language=lang, mask=comparisons.mask_label(spec)) for spec, lang in jobs]
    metrics = pd.concat(metric_parts, ignore_index=True) if metric_parts else comparisons.tidy([])
    columns = ["task", "language", "mask", *tasks.ITEM_COLUMNS]
    items = pd.concat(item_parts, ignore_index=True)[columns] if item_parts else pd.DataFrame(columns=columns)
    return Benchmarks(masks.nearest(cfg.task_ratio), evaluated, metrics, items, skipped)


@dataclass(frozen=True)
class CrossLanguage:
    """Every language's sorting mask on every language's held-out text."""

    evals: pd.DataFrame
    blocks: dict
    ratio: float
    max_tokens: int


def cross_language(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray,
                   masks: Masks) -> CrossLanguage:
    """The sorting mask of each language A at cross_language_ratio on each language B (and B's unpruned model),
    on cross_language_max_tokens held-out tokens."""
    ratio = masks.nearest(cfg.cross_language_ratio)
    cfg_cross = cfg.replace(eval_max_tokens=cfg.cross_language_max_tokens or cfg.eval_max_tokens)
    langs = masks.languages
    jobs = [(masks.of(a, "sorting", ratio), b) for a in langs for b in langs] + [(masks.dense(b), b) for b in langs]
    evals = stages.evaluate_jobs(cfg_cross, model, tokenizer, labels, jobs, "heldout", desc="cross-language")
    return CrossLanguage(evals, stages.heldout_blocks(cfg_cross, labels, jobs), ratio, cfg_cross.eval_max_tokens)


@dataclass(frozen=True)
class SplitComparison:
    """Frequency-guided and random pruning with experts from other splits of the FFN neurons."""

    table: pd.DataFrame  # evaluations with a `split` column, the unpruned rows in each split's part
    intervals: pd.DataFrame  # per other split, language and method: the difference against the run's split
    languages: list[str]
    ratio: float
    max_tokens: int


def split_comparison(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, labels: np.ndarray,
                     kind: ExpertKind, masks: Masks, boot: Bootstrap) -> SplitComparison | None:
    """The run's split against each of split_compare_methods (None for a native mixture, whose experts are
    its own): each split recorded like 01-02 (cached), its masks built like 07 at split_compare_ratio for the
    frequency-guided methods and the random baseline (its first seed), all scored on the same held-out text."""
    if not kind.regroups:
        return None
    langs = [lang for lang in cfg.split_compare_languages if lang in masks.languages] or masks.languages[:1]
    ratio = masks.nearest(cfg.split_compare_ratio)
    compared = methods.guided_methods() + [methods.BASELINE]
    cfg_split = cfg.replace(eval_max_tokens=cfg.split_compare_max_tokens or cfg.eval_max_tokens)
    others = [m for m in cfg.split_compare_methods if m != cfg.split_method]
    budget = data.token_budget(cfg, tokenizer)
    recorded = dict(zip(others, stages.split_frequencies([cfg.replace(split_method=m) for m in others],
                                                         model, tokenizer, langs, budget)))
    dense = stages.evaluate_jobs(cfg_split, model, tokenizer, labels, [(masks.dense(lang), lang) for lang in langs],
                                 "heldout", desc="dense")
    parts, blocks = [], {}
    for split in [cfg.split_method] + others:
        cfg_s = cfg_split.replace(split_method=split)
        if split == cfg.split_method:
            labels_s, specs = labels, [masks.of(lang, m, ratio) for lang in langs for m in compared]
        else:
            labels_s, freqs = recorded[split]
            one_ratio = cfg_s.replace(prune_ratios=(ratio,), random_seeds=cfg.random_seeds[:1])
            specs = [spec for lang in langs for spec in methods.build_language_masks(
                lang, freqs[lang], pruning.activation_levels(freqs[lang]), one_ratio, compared)]
        jobs = [(s, s.language) for s in specs]
        evals = stages.evaluate_jobs(cfg_s, model, tokenizer, labels_s, jobs, "heldout", desc=f"{split} split")
        blocks[split] = stages.heldout_blocks(cfg_s, labels_s, jobs)
        parts.append(pd.concat([evals, dense], ignore_index=True).assign(split=split))
    table = pd.concat(parts, ignore_index=True)
    intervals = comparisons.split_intervals(table, blocks, cfg.split_method, boot)
    return SplitComparison(table, intervals, langs, ratio, cfg_split.eval_max_tokens)


def pruning_eval_table(held: HeldOut, bench: Benchmarks) -> pd.DataFrame:
    """08's tidy rows on the masks' own languages, held-out text and every benchmark, in one table."""
    return pd.concat([part for part in (held.evals, bench.metrics) if len(part)], ignore_index=True)
