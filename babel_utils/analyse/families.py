"""Shared and specific experts per language family (or genus, or script), against random groups of languages.

For a group of the run's languages (a family with at least `family_min_languages` of them):
- shared: experts high-frequency (f >= threshold) in every language of the group;
- own: experts high-frequency in at least one language of the group and in no language outside it.
Both grow or shrink with the group's size, so each is set against the same count for random groups of as
many of the run's languages (`family_samples` draws, seeded): the p-value is the share of random groups
with at least the family's count (with the +1 of a permutation test), the effect the ratio to their mean.
Counts are sums of 0/1 values, exact in any order, so the table is the same on every CPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..core.languages import check_group_kind

MEASURES: dict[str, str] = {
    "shared": "high-frequency in every language of the group",
    "own": "high-frequency in some language of the group and in no other",
}


def _memberships(n_languages: int, size: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """[samples, n_languages] 0/1 rows, each a random group of `size` distinct languages."""
    picks = np.argsort(rng.random((samples, n_languages)), axis=1)[:, :size]
    rows = np.zeros((samples, n_languages))
    np.put_along_axis(rows, picks, 1.0, axis=1)
    return rows


def _counts(members: np.ndarray, high: np.ndarray, total: np.ndarray) -> dict[str, np.ndarray]:
    """Shared and own expert counts of each group (rows of `members`, 0/1 over languages)."""
    inside = members @ high  # [groups, experts]: how many of the group's languages hold each expert high
    size = members.sum(axis=1, keepdims=True)
    return {"shared": (inside == size).sum(axis=1),
            "own": ((inside > 0) & (inside == total)).sum(axis=1)}


def family_summary(F: np.ndarray, languages: Sequence[str], threshold: float, *, kind: str = "family",
                   min_languages: int = 2, samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per group with at least `min_languages` languages: its size, mean high-frequency experts per language,
    and for shared and own experts the count, the random groups' mean and the p-value (module doc)."""
    group_kind = check_group_kind(kind)
    if min_languages < 2:
        raise ValueError(f"min_languages={min_languages}: a group needs at least 2 languages to share experts.")
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 3 or F.shape[0] != len(languages):
        raise ValueError(f"Expected frequencies [n_languages={len(languages)}, layers, experts]; got {F.shape}.")
    high = (F >= threshold).reshape(len(languages), -1).astype(np.float64)
    total = high.sum(axis=0)
    labels = pd.Series([group_kind.group(code) for code in languages])
    sizes = labels.value_counts()
    groups = [g for g in sizes.index if sizes[g] >= min_languages and sizes[g] < len(languages)]
    rng = np.random.default_rng(seed)
    random_by_size = {m: _counts(_memberships(len(languages), m, samples, rng), high, total)
                      for m in sorted({int(sizes[g]) for g in groups})}
    rows = []
    for group in sorted(groups, key=lambda g: (-sizes[g], g)):
        members = labels.eq(group).to_numpy(dtype=np.float64)[None]
        observed = _counts(members, high, total)
        row = {kind: group, "n_languages": int(sizes[group]),
               "high_frequency": float(high[members[0] > 0].sum(axis=1).mean())}
        for measure in MEASURES:
            value, null = int(observed[measure][0]), random_by_size[int(sizes[group])][measure]
            row[measure] = value
            row[f"{measure}_random"] = float(null.mean())
            row[f"{measure}_p"] = float((1 + (null >= value).sum()) / (1 + samples))
        rows.append(row)
    columns = [kind, "n_languages", "high_frequency"] + [f"{m}{s}" for m in MEASURES for s in ("", "_random", "_p")]
    return pd.DataFrame(rows, columns=columns)


def describe_families(table: pd.DataFrame, alpha: float, kind: str = "family", largest: int = 3) -> str:
    """Sentences on the family summary, made from its counts and p-values."""
    if table.empty:
        return (f"No {kind} holds at least two of the run's languages and not all of them: nothing to summarise "
                f"per {kind} at this language set.")
    n = len(table)
    lines = []
    for measure, meaning in MEASURES.items():
        beyond = table[table[f"{measure}_p"] < alpha]
        verb = "has" if len(beyond) == 1 else "have"
        lines.append(f"{len(beyond)} of {n} {check_group_kind(kind).plural} {verb} more {measure} experts ({meaning}) than random "
                     f"groups of as many languages (p < {alpha:g}).")
    for _, row in table.head(largest).iterrows():
        lines.append(f"{row[kind]} ({row['n_languages']} languages): {row['shared']} shared "
                     f"(random groups {row['shared_random']:.1f}, p = {row['shared_p']:.3g}), {row['own']} own "
                     f"(random {row['own_random']:.1f}, p = {row['own_p']:.3g}).")
    return "\n".join(lines)
