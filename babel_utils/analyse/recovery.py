"""Does the activation tree recover families, genera or scripts? Adjusted Rand index against permutations (05).

The languages' activation distance is clustered hierarchically (05's linkage method) and the tree is cut into
as many clusters as the grouping has groups (scipy's fcluster, maxclust). The adjusted Rand index (ARI) of
those clusters against the groups is the effect size (1: the groups exactly, about 0: what chance gives, it can
go negative). Its baseline: the ARI of the same clusters against the group labels permuted among the
languages, `n_permutations` times; p = share of permutations with an ARI at least as large (the observed
arrangement counted). Layer by layer, the same on each layer's distance shows which layers carry which grouping.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from ..core.languages import GROUP_KINDS
from .similarity import as_distance, similarity_matrix


def groupings() -> dict[str, Callable[[str], str]]:
    """What a language is grouped by: every kind of group of the language table (core/languages.py GROUP_KINDS)."""
    return {name: kind.group for name, kind in GROUP_KINDS.items()}


def _codes(values: Sequence) -> np.ndarray:
    return np.unique(np.asarray(values), return_inverse=True)[1]


def _pairs(x: np.ndarray) -> np.ndarray:
    return x * (x - 1) / 2.0


def adjusted_rand(truth: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """ARI of clusters [n] against each row of truth [P, n] (integer labels; Hubert and Arabie's formula)."""
    truth = np.atleast_2d(truth)
    n, k = truth.shape[1], int(clusters.max()) + 1
    g = int(truth.max()) + 1
    flat = truth * k + clusters[None, :] + (np.arange(len(truth)) * g * k)[:, None]
    table = np.bincount(flat.ravel(), minlength=len(truth) * g * k).reshape(len(truth), g, k)
    index = _pairs(table).sum(axis=(1, 2))
    rows, cols = _pairs(table.sum(axis=2)).sum(axis=1), _pairs(table.sum(axis=1)).sum(axis=1)
    expected = rows * cols / _pairs(n)
    top = (rows + cols) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top == expected, 1.0, (index - expected) / (top - expected))


def recovery(distance: pd.DataFrame, groups: Sequence[str], method: str, n_permutations: int,
             seed: int = 0) -> dict[str, float]:
    """ARI of the tree cut into len(set(groups)) clusters against the groups, its permutation null and p."""
    languages = list(distance.index)
    truth = _codes(groups)
    n_groups = int(truth.max()) + 1
    if n_groups < 2 or n_groups == len(languages):
        return {"ari": math.nan, "null_mean": math.nan, "p_value": math.nan, "n_groups": n_groups}
    tree = hierarchy.linkage(squareform(distance.to_numpy(dtype=np.float64), checks=False), method=method)
    clusters = hierarchy.fcluster(tree, t=n_groups, criterion="maxclust") - 1
    observed = float(adjusted_rand(truth, clusters)[0])
    rng = np.random.default_rng(seed)
    null = adjusted_rand(rng.permuted(np.tile(truth, (n_permutations, 1)), axis=1), clusters)
    p = (1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations)
    return {"ari": observed, "null_mean": float(null.mean()), "p_value": float(p), "n_groups": n_groups}


def recovery_table(distance: pd.DataFrame, method: str, n_permutations: int, seed: int = 0,
                   by: Mapping[str, Callable[[str], str]] | None = None) -> pd.DataFrame:
    """The whole tree against every grouping (`groupings()` by default): one row each."""
    langs = list(distance.index)
    rows = [{"grouping": name, **recovery(distance, [group(c) for c in langs], method, n_permutations, seed)}
            for name, group in (groupings() if by is None else by).items()]
    return pd.DataFrame(rows).assign(n_languages=len(langs), n_permutations=n_permutations)


def recovery_per_layer(F: np.ndarray, languages: Sequence[str], metric: str, method: str, n_permutations: int,
                       seed: int = 0, smoothing: float = 1e-6,
                       by: Mapping[str, Callable[[str], str]] | None = None) -> pd.DataFrame:
    """`recovery_table` on every layer's distance alone: columns layer, grouping, ari, null_mean, p_value, ..."""
    F = np.asarray(F, dtype=np.float64)
    out = []
    for layer in range(F.shape[1]):
        distance = as_distance(similarity_matrix(F[:, layer:layer + 1], languages, metric, smoothing), metric)
        out.append(recovery_table(distance, method, n_permutations, seed, by).assign(layer=layer))
    return pd.concat(out, ignore_index=True)[["layer", "grouping", "ari", "null_mean", "p_value", "n_groups",
                                              "n_languages", "n_permutations"]]


def describe_recovery(whole: pd.DataFrame, per_layer: pd.DataFrame, alpha: float = 0.05) -> str:
    """Sentences built from the tables: a grouping is said to be recovered only where p < alpha."""
    parts = []
    for r in whole.itertuples():
        if math.isnan(r.ari):
            parts.append(f"{r.grouping}: not testable ({r.n_groups} groups among {r.n_languages} languages)")
            continue
        verdict = "recovered beyond chance" if r.p_value < alpha else "not distinguishable from chance"
        parts.append(f"{r.grouping} ({r.n_groups} groups): ARI {r.ari:.2f} against {r.null_mean:.2f} for permuted "
                     f"labels, p = {r.p_value:.3g}, {verdict}")
    text = (f"Cut into as many clusters as there are groups, the tree of {int(whole['n_languages'].max())} languages "
            f"gives " + "; ".join(parts) + ".")
    for grouping, rows in per_layer.dropna(subset=["ari"]).groupby("grouping", sort=False):
        significant = rows.loc[rows["p_value"] < alpha, "layer"].tolist()
        best = rows.loc[rows["ari"].idxmax()]
        text += (f" Layer by layer, {grouping} is recovered beyond chance in {len(significant)} of {len(rows)} layers"
                 + (f" ({', '.join(map(str, significant))})" if significant else "")
                 + f"; its highest ARI is {best['ari']:.2f} at layer {int(best['layer'])}.")
    return text
