"""High-frequency, shared and language-specific experts, where they sit, instruction tuning (docs/method.md section 4).

Every function takes frequencies `F` of shape [n_lang, L, E] (see `frequencies.frequency_array`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.config import BabelConfig
from ..core.languages import language_name

log = logging.getLogger(__name__)

# docs/method.md section 4: an expert is high-frequency for a language when f >= 0.05 (config key high_freq_threshold).
HIGH_FREQ_THRESHOLD: float = BabelConfig.high_freq_threshold
DEPTHS: tuple[str, ...] = ("shallow", "middle", "deep")


def _check_F(F: np.ndarray, languages: Sequence[str] | None = None, min_languages: int = 1) -> np.ndarray:
    """F as a float array [n_lang, L, E], checked against the languages."""
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 3:
        raise ValueError(f"Frequencies must have shape [n_languages, layers, experts]; got {F.shape}.")
    if languages is not None and len(languages) != F.shape[0]:
        raise ValueError(f"{len(languages)} language names for {F.shape[0]} languages of frequencies.")
    if F.shape[0] < min_languages:
        raise ValueError(f"This comparison needs at least {min_languages} languages; got {F.shape[0]}.")
    return F


def high_frequency_mask(f: np.ndarray, threshold: float = HIGH_FREQ_THRESHOLD) -> np.ndarray:
    """Boolean mask of high-frequency experts (f >= threshold), any shape."""
    return np.asarray(f) >= threshold


def shared_experts(F: np.ndarray, threshold: float = HIGH_FREQ_THRESHOLD) -> np.ndarray:
    """Bool [L, E]: high-frequency in every language (multilingual shared experts)."""
    return high_frequency_mask(_check_F(F, min_languages=2), threshold).all(axis=0)


def specific_experts(F: np.ndarray, threshold: float = HIGH_FREQ_THRESHOLD) -> np.ndarray:
    """Int [L, E]: index of the single language where the expert is high-frequency, else -1."""
    mask = high_frequency_mask(_check_F(F, min_languages=2), threshold)
    return np.where(mask.sum(axis=0) == 1, mask.argmax(axis=0), -1)


def expert_counts_per_layer(F: np.ndarray, languages: Sequence[str],
                            threshold: float = HIGH_FREQ_THRESHOLD) -> pd.DataFrame:
    """Tidy counts per layer: columns layer, category (high_frequency/shared/specific), language, count."""
    F = _check_F(F, languages, min_languages=2)
    high = high_frequency_mask(F, threshold).sum(axis=2)  # [n_lang, L]
    shared = shared_experts(F, threshold).sum(axis=1)  # [L]
    spec = specific_experts(F, threshold)
    rows = []
    for layer in range(F.shape[1]):
        rows += [(layer, "high_frequency", lang, int(high[i, layer])) for i, lang in enumerate(languages)]
        rows.append((layer, "shared", "", int(shared[layer])))
        rows += [(layer, "specific", lang, int((spec[layer] == i).sum())) for i, lang in enumerate(languages)]
    return pd.DataFrame(rows, columns=["layer", "category", "language", "count"])


def depth_of_layers(n_layers: int) -> np.ndarray:
    """The third (shallow, middle, deep) of each layer: thirds as equal as possible, deeper ones smaller."""
    out = np.empty(n_layers, dtype=object)
    for name, idx in zip(DEPTHS, np.array_split(np.arange(n_layers), 3)):
        out[idx] = name
    return out


@dataclass
class DepthSummary:
    """Counts per third of the layers, the thirds that hold the most, and a sentence from the numbers."""

    table: pd.DataFrame  # depth, first_layer, last_layer, n_layers, shared, specific
    most_shared: str
    most_specific: str
    text: str

    def __str__(self) -> str:
        return self.text


def _where_phrase(kind: str, counts: pd.Series) -> tuple[str, str]:
    """The third with most of `counts` and a clause such as 'X sit mostly in the deep layers (6 of 8, 75 %)'."""
    total = int(counts.sum())
    if total == 0:
        return "none", f"no {kind} were found at this threshold"
    top = counts[counts == counts.max()].index.tolist()
    share = 100.0 * counts.max() / total
    where = " and ".join(top)
    if len(top) > 1:
        return where, (f"{kind} are split evenly between the {where} layers "
                       f"({int(counts.max())} each of {total}, {share:.0f} % each)")
    return where, f"{kind} sit mostly in the {where} layers ({int(counts.max())} of {total}, {share:.0f} %)"


def depth_summary(counts_per_layer: pd.DataFrame, n_layers: int) -> DepthSummary:
    """Sum shared and language-specific counts per third of the layers and say where most sit."""
    if len(counts_per_layer) and not 0 <= counts_per_layer["layer"].max() < n_layers:
        raise ValueError(f"The counts name layer {counts_per_layer['layer'].max()} but n_layers is {n_layers}.")
    df = counts_per_layer.assign(depth=depth_of_layers(n_layers)[counts_per_layer["layer"].to_numpy(int)])
    sums = df.pivot_table(index="depth", columns="category", values="count", aggfunc="sum", fill_value=0)
    sums = sums.reindex(index=list(DEPTHS), columns=["shared", "specific"], fill_value=0).astype(int)
    parts = np.array_split(np.arange(n_layers), 3)
    table = pd.DataFrame({
        "depth": list(DEPTHS),
        "first_layer": [int(p[0]) if len(p) else -1 for p in parts],
        "last_layer": [int(p[-1]) if len(p) else -1 for p in parts],
        "n_layers": [len(p) for p in parts],
        "shared": sums["shared"].to_numpy(),
        "specific": sums["specific"].to_numpy(),
    })
    most_shared, shared_text = _where_phrase("shared experts", sums["shared"])
    most_specific, spec_text = _where_phrase("language-specific experts", sums["specific"])
    text = f"{shared_text[0].upper()}{shared_text[1:]}; {spec_text}."
    return DepthSummary(table, most_shared, most_specific, text)


def threshold_sweep(F: np.ndarray, languages: Sequence[str], thresholds: Sequence[float]) -> pd.DataFrame:
    """Counts of shared, specific and mean high-frequency experts per language at each threshold."""
    F = _check_F(F, languages, min_languages=2)
    rows = []
    for t in thresholds:
        rows.append((float(t), "shared", float(shared_experts(F, t).sum())))
        rows.append((float(t), "specific", float((specific_experts(F, t) >= 0).sum())))
        rows.append((float(t), "high_frequency_mean", float(high_frequency_mask(F, t).sum(axis=(1, 2)).mean())))
    return pd.DataFrame(rows, columns=["threshold", "category", "count"])


@dataclass
class TuningDiff:
    """How instruction tuning moves the frequencies (docs/method.md section 4)."""

    per_layer: pd.DataFrame  # language, layer, mean_abs_change
    top_layer: pd.DataFrame  # language, layer, mean_abs_change: the layer that changes most
    overlap: pd.DataFrame  # language, n_base, n_tuned, n_both, jaccard of the high-frequency sets


def instruction_tuning_diff(F_base: np.ndarray, F_tuned: np.ndarray, languages: Sequence[str],
                            threshold: float = HIGH_FREQ_THRESHOLD) -> TuningDiff:
    """Per-layer mean |f_tuned - f_base|, the most-changed layer and high-frequency overlap per language."""
    F_base, F_tuned = _check_F(F_base, languages), _check_F(F_tuned, languages)
    if F_base.shape != F_tuned.shape:
        raise ValueError(f"Base frequencies have shape {F_base.shape} but tuned ones {F_tuned.shape}: they come "
                         "from different models or n_experts. Record the tuned model with the base model's labels.")
    change = np.abs(F_tuned - F_base).mean(axis=2)  # [n_lang, L]
    per_layer = pd.DataFrame([(lang, layer, float(change[i, layer])) for i, lang in enumerate(languages)
                              for layer in range(change.shape[1])],
                             columns=["language", "layer", "mean_abs_change"])
    top = per_layer.loc[per_layer.groupby("language", sort=False)["mean_abs_change"].idxmax()]
    hb, ht = high_frequency_mask(F_base, threshold), high_frequency_mask(F_tuned, threshold)
    both, either = (hb & ht).sum(axis=(1, 2)), (hb | ht).sum(axis=(1, 2))
    overlap = pd.DataFrame({
        "language": list(languages), "n_base": hb.sum(axis=(1, 2)), "n_tuned": ht.sum(axis=(1, 2)),
        "n_both": both, "jaccard": np.where(either > 0, both / np.maximum(either, 1), np.nan),
    })
    return TuningDiff(per_layer, top.reset_index(drop=True), overlap)


# --------------------------------------------------------------------------- notebook 03: heatmaps


def layer_profile(F: np.ndarray, languages: Sequence[str], threshold: float = HIGH_FREQ_THRESHOLD) -> pd.DataFrame:
    """Per language and layer: mean, median, 90th percentile and max frequency, and high-frequency experts."""
    F = _check_F(F, languages)
    rows = []
    for i, lang in enumerate(languages):
        for layer in range(F.shape[1]):
            f = F[i, layer]
            rows.append((lang, layer, float(f.mean()), float(np.median(f)), float(np.percentile(f, 90)),
                         float(f.max()), int((f >= threshold).sum())))
    return pd.DataFrame(rows, columns=["language", "layer", "mean", "median", "p90", "max", "n_high_frequency"])


def heatmap_stats(F: np.ndarray, languages: Sequence[str], threshold: float = HIGH_FREQ_THRESHOLD) -> pd.DataFrame:
    """Per language: max and mean frequency, high-frequency and never-selected experts, and where most sit."""
    F = _check_F(F, languages)
    n_cells = F.shape[1] * F.shape[2]
    high = high_frequency_mask(F, threshold)
    depth = depth_of_layers(F.shape[1])
    rows = []
    for i, lang in enumerate(languages):
        per_layer = high[i].sum(axis=1)
        by_depth = {d: int(per_layer[depth == d].sum()) for d in DEPTHS}
        rows.append({
            "language": lang, "max_frequency": float(F[i].max()), "mean_frequency": float(F[i].mean()),
            "n_high_frequency": int(high[i].sum()), "share_high_frequency": float(high[i].sum() / n_cells),
            "n_never_selected": int((F[i] == 0).sum()), "share_never_selected": float((F[i] == 0).sum() / n_cells),
            "layer_most_high_frequency": int(per_layer.argmax()),
            **{f"high_frequency_{d}": by_depth[d] for d in DEPTHS},
        })
    return pd.DataFrame(rows)


def describe_heatmaps(F: np.ndarray, languages: Sequence[str], threshold: float = HIGH_FREQ_THRESHOLD) -> str:
    """Sentences on the heatmaps: the hottest cell, where high-frequency experts sit, how concentrated use is."""
    F = _check_F(F, languages)
    name = language_name
    n_lang, n_layers, n_experts = F.shape
    i, layer, expert = np.unravel_index(int(np.argmax(F)), F.shape)
    high = high_frequency_mask(F, threshold)
    per_depth = pd.Series(high.sum(axis=(0, 2)), index=depth_of_layers(n_layers)).groupby(level=0).sum()
    per_depth = per_depth.reindex(list(DEPTHS), fill_value=0)
    total_high = int(per_depth.sum())
    mean = F.mean(axis=0).ravel()
    top = max(1, int(round(0.1 * mean.size)))
    top_share = float(np.sort(mean)[::-1][:top].sum() / mean.sum()) if mean.sum() > 0 else float("nan")
    never_all = int((F == 0).all(axis=0).sum())
    text = (f"The highest frequency is {F[i, layer, expert]:.2f} ({name(languages[i])}, layer {layer}, expert "
            f"{expert}): that expert is selected for {F[i, layer, expert]:.0%} of the tokens. ")
    if total_high:
        where = per_depth.idxmax()
        text += (f"Of the {total_high} (language, layer, expert) cells with f >= {threshold:g}, "
                 f"{int(per_depth[where])} ({per_depth[where] / total_high:.0%}) sit in the {where} third of the "
                 f"layers (shallow {int(per_depth['shallow'])}, middle {int(per_depth['middle'])}, deep "
                 f"{int(per_depth['deep'])}). ")
    else:
        text += f"No expert reaches f >= {threshold:g} in any language. "
    text += (f"Use is concentrated: the 10 % most used (layer, expert) cells (by mean over languages) take "
             f"{top_share:.0%} of all selections, and {never_all} of {n_layers * n_experts} cells are never "
             f"selected in any of the {n_lang} languages.")
    return text


# --------------------------------------------------------------------------- notebook 04: shared experts


def category_totals(F: np.ndarray, languages: Sequence[str], threshold: float = HIGH_FREQ_THRESHOLD) -> pd.DataFrame:
    """Per language: high-frequency experts, language-specific ones, and the shared ones (the same for all)."""
    F = _check_F(F, languages, min_languages=2)
    high = high_frequency_mask(F, threshold).sum(axis=(1, 2))
    spec = specific_experts(F, threshold)
    n_shared = int(shared_experts(F, threshold).sum())
    return pd.DataFrame({
        "language": list(languages), "high_frequency": high.astype(int),
        "specific": [int((spec == i).sum()) for i in range(len(languages))],
        "shared": n_shared,
        "shared_share_of_high": [n_shared / h if h else np.nan for h in high],
    })


def shared_expert_table(F: np.ndarray, languages: Sequence[str],
                        threshold: float = HIGH_FREQ_THRESHOLD) -> pd.DataFrame:
    """Every multilingual shared expert: layer, expert, its lowest and mean frequency over languages."""
    F = _check_F(F, languages, min_languages=2)
    layer, expert = np.nonzero(shared_experts(F, threshold))
    return pd.DataFrame({"layer": layer.astype(int), "expert": expert.astype(int),
                         "min_frequency": F[:, layer, expert].min(axis=0),
                         "mean_frequency": F[:, layer, expert].mean(axis=0)})


def describe_categories(totals: pd.DataFrame, n_experts_total: int, threshold: float) -> str:
    """A sentence on the counts of high-frequency, shared and language-specific experts per language."""
    name = language_name
    hi, lo = totals.loc[totals["high_frequency"].idxmax()], totals.loc[totals["high_frequency"].idxmin()]
    s_hi, s_lo = totals.loc[totals["specific"].idxmax()], totals.loc[totals["specific"].idxmin()]
    shared = int(totals["shared"].iloc[0])
    return (f"With f >= {threshold:g}, a language has between {int(lo.high_frequency)} ({name(lo.language)}) and "
            f"{int(hi.high_frequency)} ({name(hi.language)}) high-frequency experts of {n_experts_total}; "
            f"{shared} are shared by all {len(totals)} languages ({shared / max(int(hi.high_frequency), 1):.0%} "
            f"to {shared / max(int(lo.high_frequency), 1):.0%} of a language's high-frequency experts), and "
            f"language-specific experts number from {int(s_lo.specific)} ({name(s_lo.language)}) to "
            f"{int(s_hi.specific)} ({name(s_hi.language)}).")


def depth_sweep(F: np.ndarray, languages: Sequence[str], thresholds: Sequence[float]) -> pd.DataFrame:
    """Per threshold: shared and specific experts in each third of the layers, and the third holding most."""
    F = _check_F(F, languages, min_languages=2)
    rows = []
    for t in thresholds:
        summary = depth_summary(expert_counts_per_layer(F, languages, t), F.shape[1])
        for _, r in summary.table.iterrows():
            rows.append({"threshold": float(t), "depth": r["depth"], "shared": int(r["shared"]),
                         "specific": int(r["specific"]), "most_shared": summary.most_shared,
                         "most_specific": summary.most_specific})
    return pd.DataFrame(rows)


def _agreement(per_threshold: pd.Series, reference: str, kind: str) -> str:
    """'... in the deep layers at 3 of 4 thresholds (0.02, 0.05, 0.1)' for one category."""
    found = per_threshold[per_threshold != "none"]
    if found.empty:
        return f"no {kind} exist at any threshold of the sweep"
    same = found[found == reference]
    thresholds = ", ".join(f"{t:g}" for t in same.index)
    text = (f"{kind} sit mostly in the {reference} layers at {len(same)} of {len(per_threshold)} thresholds"
            + (f" ({thresholds})" if len(same) else ""))
    others = found[found != reference]
    if len(others):
        text += "; elsewhere: " + ", ".join(f"{where} at {t:g}" for t, where in others.items())
    missing = per_threshold[per_threshold == "none"]
    if len(missing):
        text += "; none at " + ", ".join(f"{t:g}" for t in missing.index)
    return text


def describe_depth_sweep(sweep: pd.DataFrame, threshold: float = HIGH_FREQ_THRESHOLD) -> str:
    """Does the 'where do shared / specific experts sit' answer hold across the thresholds of the sweep?"""
    per_t = sweep.drop_duplicates("threshold").set_index("threshold")
    parts = []
    for col, kind in [("most_shared", "shared experts"), ("most_specific", "language-specific experts")]:
        ref = per_t[col].get(threshold, None)
        if ref is None or ref == "none":
            found = per_t[col][per_t[col] != "none"]
            ref = found.mode().iloc[0] if len(found) else "none"
        parts.append(_agreement(per_t[col], ref, kind))
    text = "; ".join(parts)
    return f"Across the threshold sweep, {text[0].lower()}{text[1:]}."


# --------------------------------------------------------------------------- notebook 06: instruction tuning


def tuning_layer_summary(per_layer: pd.DataFrame) -> pd.DataFrame:
    """Per layer: the mean over languages of the mean absolute change, and its rank (1 = most changed)."""
    mean = per_layer.groupby("layer")["mean_abs_change"].mean()
    return pd.DataFrame({"layer": mean.index.astype(int), "mean_abs_change": mean.to_numpy(),
                         "rank": mean.rank(ascending=False, method="min").astype(int).to_numpy()})


def describe_tuning_diff(diff: TuningDiff, n_layers: int) -> str:
    """Which layer changes most (per language and on average) and how much the high-frequency sets overlap."""
    name = language_name
    summary = tuning_layer_summary(diff.per_layer)
    top = summary.loc[summary["mean_abs_change"].idxmax()]
    median = float(summary["mean_abs_change"].median())
    last = n_layers - 1
    n_last = int((diff.top_layer["layer"] == last).sum())
    depth = depth_of_layers(n_layers)
    top_depths = pd.Series(depth[diff.top_layer["layer"].to_numpy(int)]).value_counts()
    n_lang = len(diff.top_layer)
    ratio = f"{float(top['mean_abs_change']) / median:.1f} times" if median > 0 else "far above"
    where = ", ".join(f"{int(top_depths.get(d, 0))} {d}" for d in DEPTHS)
    jac = diff.overlap["jaccard"]
    lo, hi = diff.overlap.loc[jac.idxmin()], diff.overlap.loc[jac.idxmax()]
    return (f"Averaged over languages, layer {int(top['layer'])} of {n_layers} ({depth[int(top['layer'])]}) changes "
            f"most: mean |f_tuned - f_base| = {float(top['mean_abs_change']):.4f}, {ratio} the median layer's "
            f"{median:.4f}. The most-changed layer is the last one (layer {last}) for {n_last} of {n_lang} "
            f"languages; by thirds of the layers the per-language most-changed layers are {where}. The "
            f"high-frequency sets of base and tuned model overlap with Jaccard index from {float(lo.jaccard):.2f} "
            f"({name(lo.language)}) to {float(hi.jaccard):.2f} ({name(hi.language)}), mean {float(jac.mean()):.2f}.")


def counts_by_layer(counts_per_layer: pd.DataFrame) -> pd.DataFrame:
    """One row per layer from `expert_counts_per_layer`: mean high-frequency experts per language, shared
    experts, and language-specific experts summed over languages."""
    df = counts_per_layer
    high = df[df.category == "high_frequency"].groupby("layer")["count"].mean().rename("high_frequency_mean")
    shared = df[df.category == "shared"].groupby("layer")["count"].sum().rename("shared")
    specific = df[df.category == "specific"].groupby("layer")["count"].sum().rename("specific_all_languages")
    return pd.concat([high.round(1), shared, specific], axis=1).reset_index()
