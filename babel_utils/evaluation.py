"""Tables and verdicts of the pruning evaluation (notebook 08): every comparison against the unpruned
model and the random baseline, and the sentences that state findings, built from the numbers."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import metrics
from .languages import LANGUAGES, language_name
from .methods import BASELINE, check_method, guided_methods
from .pruning import DENSE, MaskSpec

MATCH_TOLERANCE = 0.01  # a pruned model "matches" the unpruned one within 1 % of the unpruned value
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


def match_table(df: pd.DataFrame, metric: str = "bits_per_byte") -> pd.DataFrame:
    """Masks x languages: the relative change of `metric` against the unpruned model, marked '✓' where the
    pruned model matches or beats it (within MATCH_TOLERANCE). Random masks: the mean over seeds."""
    rel = relative_to_dense(df[(df["metric"] == metric) & (df["language"] == df["target"])])
    rel = rel[rel["method"] != DENSE].copy()
    rel["mask"] = np.where(rel["method"] == BASELINE, BASELINE + "@" + rel["ratio"].map("{:.4g}".format) + " (mean)",
                           rel["mask"])
    agg = rel.groupby(["mask", "language"], sort=False).agg(relative=("relative", "mean"),
                                                           matches=("matches", "all"))
    cells = agg.apply(lambda r: f"{r['relative']:+.1%}" + (" ✓" if r["matches"] else ""), axis=1)
    table = cells.unstack("language")
    order = list(dict.fromkeys(rel["language"]))
    return table.reindex(columns=order).rename_axis(index=f"mask ({metrics.label(metric)})",
                                                    columns="language")


def guided_vs_random(df: pd.DataFrame, metric: str = "bits_per_byte") -> pd.DataFrame:
    """Per language, frequency-guided method and ratio: its value, the unpruned value and the random
    baseline of the same ratio (mean, std, best and worst seed), `gain` (how much better than the random
    mean, in the metric's units; positive = frequency-guided is better) and whether it beats the random
    mean and every random seed."""
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
    return guided[cols].sort_values(["method", "ratio", "language"], kind="stable").reset_index(drop=True)


def _names(codes: Sequence[str]) -> str:
    return ", ".join(language_name(c) for c in codes)


def verdict(comparison: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """Plain sentences, built from `guided_vs_random`, on whether frequency-guided pruning beats random
    pruning of the same size, method by method and ratio by ratio; it names the languages where it does not."""
    label = metrics.label(metric)
    lines = []
    for (method, ratio), part in comparison.groupby(["method", "ratio"], sort=True):
        n = len(part)
        wins, every = int(part["beats_random_mean"].sum()), int(part["beats_every_seed"].sum())
        gain, rel = part["gain"].mean(), part["relative_gain"].mean()
        direction = "better" if gain > 0 else "worse"
        line = (f"Frequency-guided {method} at {ratio:.0%} pruned: better than the random mean in {wins} of {n} "
                f"languages and better than every random seed in {every}; on average its {label} is "
                f"{abs(gain):.3g} {direction} than random's ({abs(rel):.1%}).")
        losers = part.loc[~part["beats_random_mean"], "language"].tolist()
        if losers:
            line += f" It does NOT beat random in: {_names(losers)}."
        lines.append(line)
    overall = comparison["beats_random_mean"].mean()
    if overall == 1.0:
        lines.append("On this model and text, frequency-guided pruning beats random pruning of the same size "
                     "in every case.")
    elif overall == 0.0:
        lines.append("On this model and text, frequency-guided pruning does not beat random pruning of the same "
                     "size in any case.")
    else:
        lines.append(f"On this model and text, frequency-guided pruning beats random pruning of the same size "
                     f"in {overall:.0%} of the (language, method, ratio) cases, not in all.")
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
    return (f"A language's own mask hurts its {label} least for {sum(own_best)} of {len(own_best)} languages. "
            f"Mean change of {label} against the unpruned model, by the relation between the mask's language "
            f"and the evaluated one: {means}.")


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
        lines.append(f"Under frequency {method}, the {best} split's experts lose least "
                     f"({per_split[best]:+.1%}; " + ", ".join(f"{s} {v:+.1%}" for s, v in per_split.items()
                                                               if s != best) + ").")
    return "\n".join(lines)


def describe_matches(df: pd.DataFrame, metric: str = "bits_per_byte") -> str:
    """A sentence on which pruned models match or beat the unpruned one on `metric` (within
    MATCH_TOLERANCE), each mask on its own language; random masks count (seed, language) pairs."""
    rel = relative_to_dense(df[(df["metric"] == metric) & (df["language"] == df["target"])])
    rel = rel[rel["method"] != DENSE].copy()
    label = metrics.label(metric)
    if not rel["matches"].any():
        best = rel.loc[rel["relative"].idxmin() if metrics.lower_is_better(metric) else rel["relative"].idxmax()]
        return (f"No pruned model matches the unpruned one on {label} (within {MATCH_TOLERANCE:.0%}) in any "
                f"language; the closest is {best['mask']} on {_names([best['language']])} ({best['relative']:+.1%}).")
    rel["group"] = np.where(rel["method"] == BASELINE, BASELINE + "@" + rel["ratio"].map("{:.4g}".format), rel["mask"])
    items = []
    for group, part in rel.groupby("group", sort=False):
        hits = part.loc[part["matches"], "language"]
        if hits.empty:
            continue
        unit = "(seed, language) pairs" if group.startswith(BASELINE + "@") else "languages"
        where = "" if unit != "languages" or len(hits) == len(part) else f" ({_names(list(hits))})"
        items.append(f"{group} in {len(hits)} of {len(part)} {unit}{where}")
    return (f"Pruned models that match or beat the unpruned one on {label} (at most {MATCH_TOLERANCE:.0%} worse): "
            + "; ".join(items) + ".")
