"""Tables and verdicts of the pruning evaluation (notebook 08): every comparison against the unpruned
model and the random baseline, and the sentences that state findings, built from the numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.languages import LANGUAGES, language_name
from ..prune.masks import DENSE, MaskSpec
from ..prune.methods import BASELINE, check_method, guided_methods
from . import metrics
from .intervals import NOT_DISTINGUISHABLE, Blocks, Interval, bootstrap_mean, bpb_difference, wilson
from .intervals import verdict as interval_verdict

MATCH_TOLERANCE = 0.01  # a pruned model "matches" the unpruned one within 1 % of the unpruned value
# Held-out blocks of every evaluation, by (evaluated language, target, mask label): stages.heldout_blocks
BlockMap = Mapping[tuple[str, str, str], Blocks]


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: resamples, coverage, seed (cfg.eval_bootstrap, cfg.interval_level, cfg.seed)."""

    n: int = 1000
    level: float = 0.95
    seed: int = 0


def _side(blocks: BlockMap, rows: pd.DataFrame) -> list[Blocks]:
    """The blocks of some tidy rows (one per random seed, or one)."""
    return [blocks[(r.language, r.target, r.mask)] for r in rows.itertuples()]


def _fmt(iv: Interval) -> str:
    """A relative change with its interval: '+7.9% [+0.8%, +14.8%]'."""
    return f"{iv.estimate:+.1%} [{iv.low:+.1%}, {iv.high:+.1%}]"

TIDY_COLUMNS: tuple[str, ...] = ("language", "target", "method", "ratio", "seed", "top_k", "mask", "metric",
                                 "value")


def mask_label(spec: MaskSpec) -> str:
    """The mask's label in tables: its name ('sorting@0.25', 'random@0.25#1', 'dynamic@top192'), but
    the method alone for the unpruned model and for methods whose share pruned differs by language (threshold)."""
    return spec.method if spec.method == DENSE or not check_method(spec.method).ratio_in_label else spec.name


def metric_rows(spec: MaskSpec, lang: str, values: Mapping[str, float]) -> list[dict[str, Any]]:
    """Tidy rows (TIDY_COLUMNS) of one mask evaluated on one language."""
    return [{"language": lang, "target": spec.language, "method": spec.method, "ratio": float(spec.ratio),
             "seed": spec.seed, "top_k": spec.top_k, "mask": mask_label(spec),
             "metric": name, "value": float(value)} for name, value in values.items()]


def tidy(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A tidy table of metric rows with nullable integer seed and top_k columns."""
    table = pd.DataFrame(list(rows), columns=list(TIDY_COLUMNS))
    return table.astype({"seed": "Int64", "top_k": "Int64", "ratio": float, "value": float})


def _dense_values(df: pd.DataFrame) -> pd.Series:
    """The unpruned value per (language, metric)."""
    dense = df[df["method"] == DENSE]
    if dense.empty:
        raise ValueError("The table has no unpruned ('dense') rows to compare with; evaluate the dense model too.")
    return dense.groupby(["language", "metric"])["value"].first()


def relative_to_dense(df: pd.DataFrame) -> pd.DataFrame:
    """Every row with `dense` (the unpruned value of its language and metric), `change` = value - dense,
    `relative` = change / |dense|, and `matches` = as good as the unpruned model within MATCH_TOLERANCE."""
    dense = _dense_values(df)
    out = df.join(dense.rename("dense"), on=["language", "metric"])
    out["change"] = out["value"] - out["dense"]
    out["relative"] = out["change"] / out["dense"].abs().where(out["dense"] != 0)
    sign = np.where(out["metric"].map(metrics.lower_is_better), 1.0, -1.0)
    out["matches"] = sign * out["change"] <= MATCH_TOLERANCE * out["dense"].abs()
    return out


def against_dense(df: pd.DataFrame, blocks: BlockMap, boot: Bootstrap = Bootstrap()) -> pd.DataFrame:
    """Each mask on its own language against the unpruned model (bits per byte): the relative change with
    its paired interval (random masks: the mean over seeds, seeds resampled too) and the verdict it allows:
    'matches or beats' (the whole interval at most MATCH_TOLERANCE worse), 'worse' (the whole interval
    beyond it) or NOT_DISTINGUISHABLE."""
    part = df[(df["metric"] == "bits_per_byte") & (df["language"] == df["target"])]
    part = part.assign(group=np.where(part["method"] == BASELINE,
                                      BASELINE + "@" + part["ratio"].map("{:.4g}".format) + " (mean)", part["mask"]))
    dense = part[part["method"] == DENSE].set_index("language")
    rows = []
    for (group, lang), sub in part[part["method"] != DENSE].groupby(["group", "language"], sort=False):
        ref = dense.loc[[lang]].reset_index()
        iv = bpb_difference(_side(blocks, sub), _side(blocks, ref), boot.n, boot.level, boot.seed, relative=True)
        rows.append({"mask": group, "language": lang, "method": sub["method"].iloc[0], "ratio": sub["ratio"].iloc[0],
                     "relative": iv.estimate, "low": iv.low, "high": iv.high, "level": boot.level,
                     "verdict": interval_verdict(iv, "matches or beats", "worse", MATCH_TOLERANCE)})
    return pd.DataFrame(rows)


def match_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Masks x languages from `against_dense`: relative change of bits per byte against the unpruned model
    with its interval, marked '✓' where the interval shows the pruned model matches or beats it."""
    cells = comparison.assign(cell=[_fmt(Interval(r.relative, r.low, r.high)) + (" ✓" if r.verdict == "matches or beats"
                                                                                  else "")
                                    for r in comparison.itertuples()])
    table = cells.pivot(index="mask", columns="language", values="cell")
    return (table.reindex(index=list(dict.fromkeys(cells["mask"])), columns=list(dict.fromkeys(cells["language"])))
            .rename_axis(index=f"mask (bits per byte vs unpruned, {comparison['level'].iloc[0]:.0%} interval)",
                         columns="language"))


def guided_vs_random(df: pd.DataFrame, metric: str = "bits_per_byte", blocks: BlockMap | None = None,
                     boot: Bootstrap = Bootstrap()) -> pd.DataFrame:
    """Per language, frequency-guided method and ratio: its value, the unpruned value and the random
    baseline of the same ratio (mean, std, best and worst seed), `gain` (how much better than the random
    mean, in the metric's units; positive = frequency-guided is better) and whether it beats the random
    mean and every random seed. With `blocks` (bits per byte): the gain's paired interval (blocks and
    seeds resampled) and `verdict`: 'beats random', 'loses to random' or NOT_DISTINGUISHABLE."""
    part = df[(df["metric"] == metric) & (df["language"] == df["target"])]
    dense = _dense_values(df)
    rand = part[part["method"] == BASELINE].groupby(["language", "ratio"])["value"]
    stats = pd.DataFrame({"random_mean": rand.mean(), "random_std": rand.std(ddof=0), "random_min": rand.min(),
                          "random_max": rand.max(), "n_seeds": rand.count()})
    guided = part[part["method"].isin(guided_methods())].join(stats, on=["language", "ratio"], how="inner")
    if guided.empty:
        raise ValueError(f"No frequency-guided mask with a random baseline of the same ratio for {metric!r}.")
    lower = metrics.lower_is_better(metric)
    sign = 1.0 if lower else -1.0
    guided = guided.assign(dense=[dense.get((lang, metric), np.nan) for lang in guided["language"]])
    guided["gain"] = sign * (guided["random_mean"] - guided["value"])
    guided["relative_gain"] = guided["gain"] / guided["random_mean"].abs()
    best = guided["random_min"] if lower else guided["random_max"]
    guided["beats_random_mean"] = guided["gain"] > 0
    guided["beats_every_seed"] = sign * (best - guided["value"]) > 0
    cols = ["language", "method", "ratio", "value", "dense", "random_mean", "random_std", "random_min",
            "random_max", "n_seeds", "gain", "relative_gain", "beats_random_mean", "beats_every_seed"]
    if blocks is not None:
        if metric != "bits_per_byte":
            raise ValueError("Intervals from held-out blocks exist for bits_per_byte only.")
        randoms = part[part["method"] == BASELINE]
        ivs = [bpb_difference(_side(blocks, randoms[(randoms["language"] == r.language) & (randoms["ratio"] == r.ratio)]),
                              _side(blocks, guided.loc[[i]]), boot.n, boot.level, boot.seed)
               for i, r in zip(guided.index, guided.itertuples())]  # random minus guided: > 0 = guided better
        guided["gain_low"], guided["gain_high"] = [iv.low for iv in ivs], [iv.high for iv in ivs]
        # a gain is "better" when positive: negate to use the lower-is-better rule of interval_verdict
        guided["verdict"] = [interval_verdict(Interval(-iv.estimate, -iv.high, -iv.low), "beats random",
                                              "loses to random") for iv in ivs]
        cols += ["gain_low", "gain_high", "verdict"]
    return guided[cols].sort_values(["method", "ratio", "language"], kind="stable").reset_index(drop=True)


def _names(codes: Sequence[str]) -> str:
    return ", ".join(language_name(c) for c in codes)


def verdict(comparison: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """Plain sentences, built from `guided_vs_random`, on whether frequency-guided pruning beats random
    pruning of the same size, method by method and ratio by ratio. With intervals (a `verdict` column) a
    language counts as beaten only where the gain's interval lies above zero; without, by the point estimate."""
    label = metrics.label(metric)
    with_intervals = "verdict" in comparison
    lines = []
    for (method, ratio), part in comparison.groupby(["method", "ratio"], sort=True):
        n = len(part)
        gain, rel = part["gain"].mean(), part["relative_gain"].mean()
        direction = "better" if gain > 0 else "worse"
        if with_intervals:
            beats = part.loc[part["verdict"] == "beats random", "language"].tolist()
            loses = part.loc[part["verdict"] == "loses to random", "language"].tolist()
            line = (f"Frequency-guided {method} at {ratio:.0%} pruned: its {label} is better than random's "
                    f"(interval above zero) in {len(beats)} of {n} languages, worse in {len(loses)}, and "
                    f"{NOT_DISTINGUISHABLE} in {n - len(beats) - len(loses)}; on average "
                    f"{abs(gain):.3g} {direction} than random's ({abs(rel):.1%}).")
            if loses:
                line += f" Random is better in: {_names(loses)}."
        else:
            wins, every = int(part["beats_random_mean"].sum()), int(part["beats_every_seed"].sum())
            line = (f"Frequency-guided {method} at {ratio:.0%} pruned: better than the random mean in {wins} of {n} "
                    f"languages and better than every random seed in {every}; on average its {label} is "
                    f"{abs(gain):.3g} {direction} than random's ({abs(rel):.1%}).")
            losers = part.loc[~part["beats_random_mean"], "language"].tolist()
            if losers:
                line += f" It does NOT beat random in: {_names(losers)}."
        lines.append(line)
    won = comparison["verdict"] == "beats random" if with_intervals else comparison["beats_random_mean"]
    how = "with an interval above zero " if with_intervals else ""
    if won.all():
        lines.append(f"On this model and text, frequency-guided pruning beats random pruning of the same size {how}"
                     "in every case.")
    elif not won.any():
        lines.append(f"On this model and text, frequency-guided pruning does not beat random pruning of the same "
                     f"size {how}in any case.")
    else:
        lines.append(f"On this model and text, frequency-guided pruning beats random pruning of the same size {how}"
                     f"in {won.mean():.0%} of the (language, method, ratio) cases, not in all.")
    return "\n".join(lines)


def guided_summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """`guided_vs_random` per method and ratio: in how many languages the guided mask beats the random mean,
    every seed and the interval, loses by the interval, and the mean gains."""
    return (comparison.groupby(["method", "ratio"])
            .agg(languages=("language", "size"), beats_random_mean=("beats_random_mean", "sum"),
                 beats_every_seed=("beats_every_seed", "sum"),
                 beats_random_interval=("verdict", lambda v: int((v == "beats random").sum())),
                 loses_interval=("verdict", lambda v: int((v == "loses to random").sum())),
                 mean_gain_bpb=("gain", "mean"), mean_relative_gain=("relative_gain", "mean"),
                 mean_random_std=("random_std", "mean")))


def layerwise_vs_sorting(df: pd.DataFrame, blocks: BlockMap, boot: Bootstrap = Bootstrap()) -> pd.DataFrame:
    """Per language and ratio: bits per byte of uniform sorting minus layer-wise rates, with its paired
    interval (positive = layer-wise better) and the verdict it allows."""
    part = df[(df["metric"] == "bits_per_byte") & (df["language"] == df["target"])]
    rows = []
    for (lang, ratio), sub in part[part["method"].isin(["sorting", "layerwise"])].groupby(["language", "ratio"],
                                                                                        sort=False):
        sort, layer = sub[sub["method"] == "sorting"], sub[sub["method"] == "layerwise"]
        if sort.empty or layer.empty:
            continue
        iv = bpb_difference(_side(blocks, layer), _side(blocks, sort), boot.n, boot.level, boot.seed)
        rows.append({"language": lang, "ratio": ratio, "layerwise_minus_sorting": iv.estimate, "low": iv.low,
                     "high": iv.high, "verdict": interval_verdict(iv, "layer-wise better", "sorting better")})
    return pd.DataFrame(rows)


def describe_layerwise(table: pd.DataFrame) -> str:
    """Whether layer-wise rates beat uniform sorting, ratio by ratio, as far as the intervals show it."""
    lines = []
    for ratio, part in table.groupby("ratio", sort=True):
        counts = part["verdict"].value_counts()
        lines.append(f"At {ratio:.0%} pruned, layer-wise rates beat uniform sorting (interval below zero) in "
                     f"{counts.get('layer-wise better', 0)} of {len(part)} languages, lose in "
                     f"{counts.get('sorting better', 0)}, and are {NOT_DISTINGUISHABLE} in "
                     f"{counts.get(NOT_DISTINGUISHABLE, 0)} (mean difference "
                     f"{part['layerwise_minus_sorting'].mean():+.3f} bits per byte).")
    return "\n".join(lines)


def cross_language_matrix(df: pd.DataFrame, metric: str = "bits_per_byte") -> pd.DataFrame:
    """Target (mask built from) x evaluated language: relative change of `metric` against the evaluated
    language's unpruned value. Expects one static mask per target (e.g. sorting at one ratio)."""
    rel = relative_to_dense(df[df["metric"] == metric])
    rel = rel[rel["method"] != DENSE]
    if rel.duplicated(["target", "language"]).any():
        raise ValueError("cross_language_matrix needs one mask per (target, evaluated language); filter the table.")
    order = list(dict.fromkeys(rel["target"]))
    cols = list(dict.fromkeys(rel["language"]))
    return (rel.pivot(index="target", columns="language", values="relative").reindex(index=order, columns=cols)
            .rename_axis(index="mask from", columns="evaluated on"))


def describe_cross_language(matrix: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """Whether each language is hurt least by its own mask, and whether relatives' masks (same genus,
    same family) hurt less than unrelated languages' masks, from a cross_language_matrix (lower = better
    for perplexity and bits per byte)."""
    lower = metrics.lower_is_better(metric)
    label = metrics.label(metric)
    own_best, groups = [], {"own": [], "same genus": [], "same family, other genus": [], "other family": []}
    for lang in matrix.columns:
        col = matrix[lang].dropna()
        if lang not in col.index or len(col) < 2:
            continue
        best = col.idxmin() if lower else col.idxmax()
        own_best.append(best == lang)
        for target, value in col.items():
            a, b = LANGUAGES.get(target), LANGUAGES.get(lang)
            if target == lang:
                groups["own"].append(value)
            elif a and b and a.genus == b.genus:
                groups["same genus"].append(value)
            elif a and b and a.family == b.family:
                groups["same family, other genus"].append(value)
            else:
                groups["other family"].append(value)
    if not own_best:
        return "Too few languages for a cross-language comparison."
    means = ", ".join(f"{name} {np.mean(v):+.1%} ({len(v)} pairs)" for name, v in groups.items() if v)
    return (f"By point estimate, a language's own mask hurts its {label} least for {sum(own_best)} of "
            f"{len(own_best)} languages (describe_own_mask says where the intervals show it). Mean change of "
            f"{label} against the unpruned model, by the relation between the mask's language and the evaluated "
            f"one: {means}.")


def own_mask_intervals(cross: pd.DataFrame, blocks: BlockMap, boot: Bootstrap = Bootstrap()) -> pd.DataFrame:
    """Per evaluated language B and other language A: bits per byte of B under A's mask minus under B's own
    mask (the same static method and ratio), with its paired interval (positive = the own mask hurts less)."""
    part = cross[(cross["metric"] == "bits_per_byte") & (cross["method"] != DENSE)]
    rows = []
    for lang, sub in part.groupby("language", sort=False):
        own = sub[sub["target"] == lang]
        if own.empty:
            continue
        for target, other in sub[sub["target"] != lang].groupby("target", sort=False):
            iv = bpb_difference(_side(blocks, other), _side(blocks, own), boot.n, boot.level, boot.seed)
            rows.append({"language": lang, "other": target, "other_minus_own": iv.estimate, "low": iv.low,
                         "high": iv.high})
    return pd.DataFrame(rows)


def describe_own_mask(table: pd.DataFrame) -> str:
    """Whether each language's own mask hurts it least, as far as the intervals of `own_mask_intervals` show."""
    own_best, other_best, unclear = [], [], []
    for lang, part in table.groupby("language", sort=False):
        if (part["low"] > 0).all():
            own_best.append(lang)
        elif (part["high"] < 0).any():
            better = part.loc[part["high"] < 0, "other"].tolist()
            other_best.append(f"{language_name(lang)} ({_names(better)})")
        else:
            unclear.append(lang)
    n = len(own_best) + len(other_best) + len(unclear)
    text = (f"A language's own mask hurts it least (every interval against the other languages' masks above zero) "
            f"for {len(own_best)} of {n} languages")
    text += f" ({_names(own_best)})" if own_best else ""
    text += f"; another language's mask hurts less for {len(other_best)}" + (f": {'; '.join(other_best)}" if other_best else "")
    text += f"; for {len(unclear)} the comparison is {NOT_DISTINGUISHABLE}" + (f" ({_names(unclear)})" if unclear else "")
    return text + "."


def split_intervals(df: pd.DataFrame, blocks_by_split: Mapping[str, BlockMap], reference: str,
                    boot: Bootstrap = Bootstrap()) -> pd.DataFrame:
    """Per other split, language and pruning method: bits per byte under that split's experts minus under the
    `reference` split's (the same method and ratio), with its paired interval (positive = reference better)."""
    part = df[(df["metric"] == "bits_per_byte") & (df["method"] != DENSE)]
    ref = part[part["split"] == reference]
    rows = []
    for (split, lang, method), sub in part[part["split"] != reference].groupby(["split", "language", "method"],
                                                                              sort=False):
        base = ref[(ref["language"] == lang) & (ref["method"] == method)]
        if base.empty:
            continue
        iv = bpb_difference(_side(blocks_by_split[split], sub), _side(blocks_by_split[reference], base),
                            boot.n, boot.level, boot.seed)
        rows.append({"split": split, "language": lang, "method": method, "other_minus_reference": iv.estimate,
                     "low": iv.low, "high": iv.high,
                     "verdict": interval_verdict(Interval(-iv.estimate, -iv.high, -iv.low), f"{reference} better",
                                                 f"{split} better")})
    return pd.DataFrame(rows)


def describe_split_intervals(table: pd.DataFrame, reference: str) -> str:
    """Per other split and method: in how many languages the reference split's experts lose less (interval)."""
    lines = []
    for (split, method), part in table.groupby(["split", "method"], sort=False):
        counts = part["verdict"].value_counts()
        lines.append(f"{method} pruning with {reference} experts against {split} experts: {reference} loses less "
                     f"(interval above zero) in {counts.get(f'{reference} better', 0)} of {len(part)} languages, "
                     f"{split} in {counts.get(f'{split} better', 0)}, {NOT_DISTINGUISHABLE} in "
                     f"{counts.get(NOT_DISTINGUISHABLE, 0)}.")
    return "\n".join(lines)


def task_intervals(items: pd.DataFrame, boot: Bootstrap = Bootstrap()) -> pd.DataFrame:
    """Per task, language and mask: accuracy with its Wilson interval over the items answered (`correct` not NA)
    and the mean item score with a bootstrap interval over every item (`items`: one row per item, columns
    task, language, mask, correct, score, as tasks.ITEM_COLUMNS)."""
    rows = []
    for (task, lang, mask), part in items.groupby(["task", "language", "mask"], sort=False):
        answered = part["correct"].dropna().astype(bool)
        acc = wilson(int(answered.sum()), len(answered), boot.level)
        score = bootstrap_mean(part["score"].to_numpy(dtype=float), boot.n, boot.level, boot.seed)
        rows.append({"task": task, "language": lang, "mask": mask, "items": len(part), "answered": len(answered),
                     "accuracy": acc.estimate, "accuracy_low": acc.low, "accuracy_high": acc.high,
                     "score": score.estimate, "score_low": score.low, "score_high": score.high})
    return pd.DataFrame(rows)


def describe_split_comparison(df: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """Sentences on what the clustering adds: per split, the mean relative change of `metric` against the
    unpruned model under each pruning method (df columns: split, language, method, metric, value, with
    'dense' rows), and which split's experts lose least under frequency-guided pruning."""
    label = metrics.label(metric)
    part = df[df["metric"] == metric]
    dense = part[part["method"] == DENSE].groupby("language")["value"].first()
    if dense.empty:
        raise ValueError("describe_split_comparison needs the unpruned ('dense') rows.")
    part = part[part["method"] != DENSE].assign(dense=lambda d: d["language"].map(dense))
    part = part.assign(relative=(part["value"] - part["dense"]) / part["dense"].abs())
    means = part.groupby(["split", "method"], sort=False)["relative"].mean()
    lines = []
    for split in dict.fromkeys(part["split"]):
        items = ", ".join(f"{method} {means[(split, method)]:+.1%}" for method in dict.fromkeys(
            part.loc[part["split"] == split, "method"]))
        lines.append(f"Experts from the {split} split: mean change of {label} against the unpruned model: {items}.")
    guided = [m for m in guided_methods() if m in set(part["method"])]
    for method in guided:
        per_split = means.xs(method, level="method")
        best = per_split.idxmin() if metrics.lower_is_better(metric) else per_split.idxmax()
        lines.append(f"Under frequency {method}, by point estimate the {best} split's experts lose least "
                     f"({per_split[best]:+.1%}; " + ", ".join(f"{s} {v:+.1%}" for s, v in per_split.items()
                                                               if s != best) + ").")
    return "\n".join(lines)


def describe_matches(comparison: pd.DataFrame) -> str:
    """Which pruned models match or beat the unpruned one (at most MATCH_TOLERANCE worse), from the
    intervals of `against_dense`: only where the interval shows it; the rest is counted as worse or as not
    distinguishable at this sample size."""
    supported = comparison[comparison["verdict"] == "matches or beats"]
    worse = int((comparison["verdict"] == "worse").sum())
    unclear = int((comparison["verdict"] == NOT_DISTINGUISHABLE).sum())
    n = len(comparison)
    head = (f"Of {n} (mask, language) cases, the interval shows the pruned model matching or beating the unpruned "
            f"one (at most {MATCH_TOLERANCE:.0%} worse) in {len(supported)}, worse in {worse}, and {unclear} are "
            f"{NOT_DISTINGUISHABLE}.")
    if supported.empty:
        return head
    items = "; ".join(f"{r.mask} on {language_name(r.language)} ({_fmt(Interval(r.relative, r.low, r.high))})"
                      for r in supported.itertuples())
    return head + f" Matching or beating: {items}."
