"""Each notebook's findings, built from its numbers: the sentences of its describe_* functions, this run's answer
to each claim of the paper (claims.CLAIMS) with the rule that decides it, and the surprises worth a reader's pause.

One function per notebook; each takes what the notebook has computed and returns `report.Findings`."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..analyse import categories, similarity
from ..analyse.families import describe_families
from ..analyse.geometry import describe_mantel
from ..analyse.recovery import describe_recovery
from ..analyse.tuning import Tuned, describe_tuning
from ..evaluate import comparisons
from ..evaluate.intervals import NOT_DISTINGUISHABLE
from ..prune.methods import guided_methods
from .claims import AGREES, CANNOT_TELL, DISAGREES
from .report import Comparison, Findings

VIEW_TOLERANCE = 1e-3  # max |logit difference| of the all-experts MoE view and the dense model (01's check)
SPEEDUP_AGREES = 1.2  # "about 30 % faster": a pruned copy at least 1.2 times as fast agrees ...
SPEEDUP_DISAGREES = 1.05  # ... one under 1.05 times disagrees; in between this run cannot tell


def _majority(n_for: int, n_against: int, n: int) -> str:
    """agrees when most cases support the claim, disagrees when most contradict it, else cannot tell."""
    return AGREES if n_for > n / 2 else DISAGREES if n_against > n / 2 else CANNOT_TELL


def split(kind_text: str, view_difference: float) -> Findings:
    """01: what the split made, and whether the experts' view computes the dense model."""
    exact = view_difference < VIEW_TOLERANCE
    return Findings("01", [kind_text], [Comparison(
        "view-exact", f"with every expert on, the largest logit difference to the dense model is "
                      f"{view_difference:.1e}", AGREES if exact else DISAGREES,
        f"agrees below {VIEW_TOLERANCE:g} (float32 rounding), disagrees above")])


def record(levels_text: str, n_tokens: int, top_fraction: float) -> Findings:
    """02: what was counted and how the selected experts spread over the layers (the paper gives no number here)."""
    return Findings("02", [f"{n_tokens} tokens were counted; each selects the {top_fraction:.0%} of all (layer, "
                           "expert) cells with the highest z-scores, so a frequency of "
                           f"{top_fraction:g} is the average.", levels_text])


def heatmaps(F: np.ndarray, languages: Sequence[str], threshold: float) -> Findings:
    """03: the heatmaps in words, what 'high-frequency' means here, and whether languages' heatmaps differ."""
    high = F >= threshold
    share_high = float(high.mean(axis=(1, 2)).mean())
    found = [categories.describe_heatmaps(F, languages, threshold),
             f"'High-frequency' (f >= {threshold:g}) is a low bar here: the mean frequency is {float(F.mean()):.2f}, "
             f"so on average {share_high:.0%} of a language's experts count as high-frequency."]
    if len(languages) < 2:
        return Findings("03", found, [Comparison("heatmaps-differ", "one language: nothing to compare", CANNOT_TELL)])
    somewhere, everywhere = high.any(axis=0), high.all(axis=0)
    n_some, n_not_all = int(somewhere.sum()), int((somewhere & ~everywhere).sum())
    verdict = CANNOT_TELL if n_some == 0 else AGREES if n_not_all > n_some / 2 else DISAGREES
    return Findings("03", found, [Comparison(
        "heatmaps-differ", f"of the {n_some} experts high-frequency in some language, {n_not_all} "
                           f"({n_not_all / max(n_some, 1):.0%}) are not high-frequency in all {len(languages)}",
        verdict, "agrees when most of them are not, disagrees when most are shared by all")])


def shared_experts(totals: pd.DataFrame, n_experts_total: int, threshold: float, depth: categories.DepthSummary,
                   depth_sweep: pd.DataFrame, families: pd.DataFrame, alpha: float) -> Findings:
    """04: how many experts are high-frequency, shared and language-specific, where they sit, and per family."""
    found = [categories.describe_categories(totals, n_experts_total, threshold), str(depth),
             categories.describe_depth_sweep(depth_sweep, threshold), describe_families(families, alpha)]
    n_shared = int(totals["shared"].iloc[0])
    with_specific = int((totals["specific"] > 0).sum())
    n = len(totals)
    comparisons_ = [
        Comparison("shared-experts", f"{n_shared} experts are high-frequency in all {n} languages",
                   AGREES if n_shared > 0 else DISAGREES, "agrees when there is at least one"),
        Comparison("specific-experts", f"{with_specific} of {n} languages have experts of their own "
                                       f"({int(totals['specific'].sum())} in all)",
                   AGREES if with_specific > n / 2 else DISAGREES, "agrees when most languages have one"),
    ]
    surprises = []
    if len(families) == 1:
        surprises.append(f"Only one family ({families['family'].iloc[0]}) has enough languages here for the "
                         "per-family test: there is no figure of families, and its numbers say nothing about "
                         "families in general.")
    return Findings("04", found, comparisons_, surprises)


def language_similarity(distance: pd.DataFrame, metric: str, curve: pd.DataFrame,
                        test: similarity.PermutationResult | None, reason: str, pairs: pd.DataFrame,
                        interval: tuple[float, float] | None, n_bootstrap: int, mantel: pd.DataFrame,
                        recovered: pd.DataFrame, recovered_per_layer: pd.DataFrame, alpha: float,
                        grid: pd.DataFrame | None = None, reference_experts: int = 0) -> Findings:
    """05: which languages look alike, whether relatives do more than chance, and what the extra tests say."""
    found = [similarity.describe_similarity(distance, metric), similarity.describe_script_vs_family(distance),
             similarity.describe_per_layer(curve), similarity.describe_permutation(test, metric, alpha, reason),
             similarity.describe_bootstrap(pairs, interval, metric, n_bootstrap), describe_mantel(mantel, alpha),
             describe_recovery(recovered, recovered_per_layer, alpha)]
    if grid is not None:  # a native mixture of experts has one granularity: no grid
        found.append(similarity.describe_grid(grid, reference_experts, alpha))
    return Findings("05", found, [related_alike(test, reason, alpha)], family_surprise(distance))


def related_alike(test: similarity.PermutationResult | None, reason: str, alpha: float) -> Comparison:
    """05's answer to "related languages look alike", from the genus permutation test."""
    if test is None:
        return Comparison("related-alike", reason or "no genus test with these languages", CANNOT_TELL)
    verdict = (AGREES if test.observed > 0 and test.p_value <= alpha else
               DISAGREES if test.observed <= 0 else CANNOT_TELL)
    return Comparison("related-alike", f"different-family pairs are {test.observed:.3g} farther apart than "
                                       f"same-genus pairs on average, p = {test.p_value:.3g} "
                                       f"({test.n_same_genus_pairs} same-genus pairs)", verdict,
                      f"agrees when the permutation test finds it at the {alpha:g} level, cannot tell when the "
                      "difference is there but not significant, disagrees when it goes the other way")


def family_surprise(distance: pd.DataFrame) -> list[str]:
    """Pairs of one family but different genera farther apart than pairs of different families, if so."""
    by_relation = similarity.pair_table(distance).groupby("relation")["distance"].mean()
    family, other = similarity.RELATIONS[1], similarity.RELATIONS[2]
    if family in by_relation and other in by_relation and by_relation[family] > by_relation[other]:
        return [f"Languages of one family but different genera are farther apart on average "
                f"({by_relation[family]:.3g}) than languages of different families ({by_relation[other]:.3g}): beyond "
                "the genus, sharing a family does not make expert patterns alike here."]
    return []


def tuning(tuned: Tuned, diff: categories.TuningDiff, n_layers: int) -> Findings:
    """06: what tuning did, which layer moved most, and whether that is the last layers as in the paper."""
    summary = categories.tuning_layer_summary(diff.per_layer)
    top = int(summary.loc[summary["mean_abs_change"].idxmax(), "layer"])
    depth = categories.depth_of_layers(n_layers)[top]
    answer = Comparison("tuning-last-layer", f"layer {top} of layers 0-{n_layers - 1} ({depth} third) changes most",
                        AGREES if depth == "deep" else DISAGREES,
                        "agrees when the most-changed layer is in the deepest third")
    surprises = []
    if depth != "deep":
        surprises.append(f"The {depth} layers, not the last ones, change most under tuning (layer {top}).")
        if tuned.meta:  # our own short tuning, not a released instruction-tuned model
            surprises[-1] += (f" The tuning here is this project's own short one ({tuned.meta['steps']} steps on "
                              f"{tuned.meta['n_train_examples']} translation instructions), far from the paper's "
                              "instruction tuning: a plausible reason, not a tested one.")
    return Findings("06", [describe_tuning(tuned), categories.describe_tuning_diff(diff, n_layers)], [answer],
                    surprises)


def pruning(specs_text: str, overlap_text: str) -> Findings:
    """07: which masks were built and how much languages agree on what to drop (the paper gives no number here)."""
    return Findings("07", [specs_text, overlap_text])


def pruning_eval(guided: pd.DataFrame, layerwise: pd.DataFrame, vs_dense: pd.DataFrame, speed: pd.DataFrame,
                 split_intervals: pd.DataFrame | None = None, split_method: str = "kmeans",
                 benchmark_text: str = "") -> Findings:
    """08: what pruning costs against random pruning, layer-wise rates and the unpruned model, and what it buys."""
    found = [comparisons.verdict(guided, "bits_per_byte"), comparisons.describe_layerwise(layerwise),
             comparisons.describe_matches(vs_dense)] + ([benchmark_text] if benchmark_text else [])
    n = len(guided)
    beats, loses = int((guided["verdict"] == "beats random").sum()), int((guided["verdict"] == "loses to random").sum())
    free = int((vs_dense["verdict"] == "matches or beats").sum())
    worse = int((vs_dense["verdict"] == "worse").sum())
    lw_better = int((layerwise["verdict"] == "layer-wise better").sum())
    lw_worse = int((layerwise["verdict"] == "sorting better").sum())
    pruned = speed[speed["contender"] != "dense"]
    fastest = pruned.loc[pruned["speed-up vs dense"].idxmax()]
    speedup = float(fastest["speed-up vs dense"])
    majority = "agrees when most cases support it (interval), disagrees when most contradict it"
    answers = [
        Comparison("guided-beats-random", f"frequency-guided masks beat random ones in {beats} of {n} (language, "
                                          f"method, ratio) cases, lose in {loses}, {NOT_DISTINGUISHABLE} in "
                                          f"{n - beats - loses}", _majority(beats, loses, n), majority),
        Comparison("pruning-free", f"{free} of {len(vs_dense)} pruned models are at most "
                                   f"{comparisons.MATCH_TOLERANCE:.0%} worse than the unpruned one (interval); "
                                   f"{worse} are worse",
                   AGREES if free else DISAGREES if worse == len(vs_dense) else CANNOT_TELL,
                   "agrees when at least one is, disagrees when every one is worse"),
        Comparison("layerwise-better", f"layer-wise rates beat uniform sorting in {lw_better} of {len(layerwise)} "
                                       f"(language, ratio) cases, lose in {lw_worse}",
                   _majority(lw_better, lw_worse, len(layerwise)), majority),
        Comparison("real-speedup", f"the fastest pruned copy ({fastest['contender']}, {fastest['FFN share kept']:.0%} "
                                   f"of the FFN kept) runs {speedup:.2f} times as fast as the dense body",
                   AGREES if speedup >= SPEEDUP_AGREES else DISAGREES if speedup < SPEEDUP_DISAGREES else CANNOT_TELL,
                   f"agrees from {SPEEDUP_AGREES:g} times, disagrees under {SPEEDUP_DISAGREES:g}"),
    ]
    return Findings("08", found, answers, _split_surprises(split_intervals, split_method))


def _split_surprises(intervals: pd.DataFrame | None, split_method: str) -> list[str]:
    """A frequency-guided method under which the run's own split loses measurably less than no other split: then
    the clustering is not what makes the method work (`intervals`: comparisons.split_intervals)."""
    if intervals is None or intervals.empty:
        return []
    out = []
    for (split, method), part in intervals.groupby(["split", "method"], sort=False):
        if method not in guided_methods():
            continue
        wins = int((part["verdict"] == f"{split_method} better").sum())
        if wins == 0:
            out.append(f"Under {method} masks, {split_method} experts do not lose measurably less than experts from "
                       f"the {split} split in any of {len(part)} languages (mean difference "
                       f"{part['other_minus_reference'].mean():+.3f} bits per byte, {split} minus {split_method}): "
                       "here the clustering is not what makes frequency-guided pruning work.")
    return out
