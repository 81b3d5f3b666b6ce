"""Does the model's geometry follow genealogy, geography or script? Mantel tests (notebook 05).

The languages' activation distance (notebook 05's metric) is compared with distances from real databases:
- genealogy: 1 - the share of the longer genealogical path (URIEL, family first) two languages have in common
  (1 for an isolate, whose path is empty: it shares no ancestor with any other language);
- geography: great-circle distance (km) between the declarations' coordinates;
- syntax, phonology: the share of URIEL's (kNN-completed) features on which two languages differ;
- script: 0 for the same script, 1 otherwise;
- vocabulary: 1 - the Jaccard overlap of the token ids the two calibration texts use (languages that share a
  script share tokens, and the model sees tokens, not scripts).
Languages a database lacks (a missing coordinate) leave the test one by one, the one with the most missing
pairs first, until no pair is missing; the rest are tested. A Mantel test correlates the upper triangles of
two distance matrices (Pearson r) and compares r with r after
permuting the languages of one matrix (one-sided: p = share of permutations with r at least as large, the
observed arrangement counted). A partial Mantel test correlates the residuals of both after regressing each
on a third distance, which separates genealogy from script (languages of one script also share tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.languages import get_language, uriel_features

EARTH_RADIUS_KM = 6371.0


def _square(values: Callable[[str, str], float], languages: Sequence[str]) -> pd.DataFrame:
    m = np.array([[0.0 if a == b else values(a, b) for b in languages] for a in languages])
    return pd.DataFrame(m, index=list(languages), columns=list(languages))


def genetic_distance(languages: Sequence[str]) -> pd.DataFrame:
    """1 - (length of the common genealogical path prefix) / (length of the longer path); 1 for an isolate."""
    paths = {c: get_language(c).path for c in languages}

    def d(a: str, b: str) -> float:
        pa, pb = paths[a], paths[b]
        if not pa or not pb:
            return 1.0
        common = next((i for i, (x, y) in enumerate(zip(pa, pb)) if x != y), min(len(pa), len(pb)))
        return 1.0 - common / max(len(pa), len(pb))
    return _square(d, languages)


def geographic_distance(languages: Sequence[str]) -> pd.DataFrame:
    """Great-circle distance in km between the languages' coordinates (haversine)."""
    where = {c: (get_language(c).latitude, get_language(c).longitude) for c in languages}

    def d(a: str, b: str) -> float:
        (la, oa), (lb, ob) = where[a], where[b]
        if None in (la, oa, lb, ob):
            return math.nan
        la, oa, lb, ob = map(math.radians, (la, oa, lb, ob))
        h = math.sin((lb - la) / 2) ** 2 + math.cos(la) * math.cos(lb) * math.sin((ob - oa) / 2) ** 2
        return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))
    return _square(d, languages)


def uriel_distance(languages: Sequence[str], feature_set: str = "syntax_knn") -> pd.DataFrame:
    """Share of URIEL features (of `feature_set`) on which two languages differ; NaN where URIEL lacks one."""
    feats = {c: uriel_features(c, feature_set) for c in languages}

    def d(a: str, b: str) -> float:
        fa, fb = feats[a], feats[b]
        keys = sorted(set(fa) & set(fb))
        return float(np.mean([fa[k] != fb[k] for k in keys])) if keys else math.nan
    return _square(d, languages)


def script_distance(languages: Sequence[str]) -> pd.DataFrame:
    """0 where two languages share a script, 1 otherwise."""
    return _square(lambda a, b: float(get_language(a).script != get_language(b).script), languages)


REFERENCES: dict[str, Callable[[Sequence[str]], pd.DataFrame]] = {
    "genealogy": genetic_distance,
    "geography": geographic_distance,
    "syntax": lambda langs: uriel_distance(langs, "syntax_knn"),
    "phonology": lambda langs: uriel_distance(langs, "phonology_knn"),
    "script": script_distance,
}
# (tested, controlled): a pair is tested when both distances are at hand (vocabulary needs the texts' tokens)
PARTIAL: tuple[tuple[str, str], ...] = (("genealogy", "script"), ("script", "genealogy"),
                                        ("genealogy", "vocabulary"), ("vocabulary", "genealogy"),
                                        ("script", "vocabulary"))


def vocabulary_distance(token_sets: Mapping[str, set[int]]) -> pd.DataFrame:
    """1 - |A & B| / |A | B| of the token ids two languages' texts use (Jaccard distance)."""
    return _square(lambda a, b: 1.0 - len(token_sets[a] & token_sets[b]) / max(1, len(token_sets[a] | token_sets[b])),
                   list(token_sets))


@dataclass(frozen=True)
class MantelResult:
    """Mantel r between two distance matrices, its one-sided permutation p-value, and what it rests on."""

    r: float
    p_value: float
    n_languages: int
    n_permutations: int


def _triangle(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(len(m), 1)]


def _residual(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y minus its least-squares fit on x (with intercept)."""
    design = np.column_stack([np.ones_like(x), x])
    return y - design @ np.linalg.lstsq(design, y, rcond=None)[0]


def _complete(missing: np.ndarray) -> list[int]:
    """The languages left when those with missing pairs leave one by one (most missing first, then the
    first such), until none is missing."""
    keep = list(range(len(missing)))
    while keep:
        counts = missing[np.ix_(keep, keep)].sum(axis=1)
        if counts.max() == 0:
            break
        keep.pop(int(np.argmax(counts)))
    return keep


def mantel(a: pd.DataFrame, b: pd.DataFrame, n_permutations: int, seed: int = 0,
           control: pd.DataFrame | None = None) -> MantelResult:
    """Mantel test of distance matrices a and b over their common languages without missing values (partial
    on `control` when given): Pearson r of the upper triangles; b's languages permuted."""
    langs = [c for c in a.index if c in b.index and (control is None or c in control.index)]
    mats = [m.loc[langs, langs].to_numpy(dtype=np.float64) for m in (a, b) + ((control,) if control is not None else ())]
    keep = _complete(np.logical_or.reduce([np.isnan(m) for m in mats]))
    mats = [m[np.ix_(keep, keep)] for m in mats]
    n = len(keep)
    if n < 4:
        return MantelResult(math.nan, math.nan, n, 0)
    x = _triangle(mats[0])
    c = _triangle(mats[2]) if control is not None else None
    if c is not None:
        x = _residual(x, c)

    upper_i, upper_j = np.triu_indices(n, 1)

    def r_of(order: np.ndarray) -> float:
        y = mats[1][order[upper_i], order[upper_j]]  # the upper triangle of b with its languages permuted
        if c is not None:
            y = _residual(y, c)
        if x.std() == 0 or y.std() == 0:
            return math.nan
        return float(np.corrcoef(x, y)[0, 1])

    observed = r_of(np.arange(n))
    rng = np.random.default_rng(seed)
    null = np.array([r_of(rng.permutation(n)) for _ in range(n_permutations)])
    p = (1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations) if not math.isnan(observed) else math.nan
    return MantelResult(observed, float(p), n, n_permutations)


def mantel_table(distance: pd.DataFrame, n_permutations: int, seed: int = 0,
                 token_sets: Mapping[str, set[int]] | None = None) -> pd.DataFrame:
    """The activation distance against every reference distance (the shared vocabulary too when the texts'
    token sets are given), and the partial tests of PARTIAL whose distances are at hand."""
    langs = list(distance.index)
    refs = {name: make(langs) for name, make in REFERENCES.items()}
    if token_sets is not None:
        refs["vocabulary"] = vocabulary_distance({lang: token_sets[lang] for lang in langs})
    rows = []
    for name, ref in refs.items():
        res = mantel(distance, ref, n_permutations, seed)
        rows.append({"reference": name, "controlling_for": "", "mantel_r": res.r, "p_value": res.p_value,
                     "n_languages": res.n_languages, "n_permutations": res.n_permutations})
    for tested, controlled in [(t, c) for t, c in PARTIAL if t in refs and c in refs]:
        res = mantel(distance, refs[tested], n_permutations, seed, control=refs[controlled])
        rows.append({"reference": tested, "controlling_for": controlled, "mantel_r": res.r, "p_value": res.p_value,
                     "n_languages": res.n_languages, "n_permutations": res.n_permutations})
    return pd.DataFrame(rows)


def describe_mantel(table: pd.DataFrame, alpha: float = 0.05) -> str:
    """Sentences built from `mantel_table`: an association is stated only where p < alpha."""
    follows, none = [], []
    for r in table.itertuples():
        what = r.reference + (f" (controlling for {r.controlling_for})" if r.controlling_for else "")
        stat = f"{what}: Mantel r = {r.mantel_r:+.2f}, p = {r.p_value:.3g}"
        if math.isnan(r.mantel_r):
            none.append(f"{what}: not testable ({r.n_languages} languages with data)")
        elif r.p_value < alpha and r.mantel_r > 0:
            follows.append(stat)
        else:
            none.append(stat)
    n = int(table["n_languages"].max())
    text = f"Over {n} languages ({int(table['n_permutations'].max())} permutations each), the activation distance "
    text += ("follows " + "; ".join(follows) + f" (p < {alpha:g})." if follows
             else f"follows none of the reference distances at p < {alpha:g}.")
    if none:
        text += " No detectable association at this number of languages with " + "; ".join(none) + "."
    return text



def classical_mds(distance: pd.DataFrame, dims: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """Classical (Torgerson) MDS of a distance matrix: coordinates [language, dim 1..dims] whose Euclidean
    distances best match it, and each dimension's share of the positive eigenvalues (the variance it shows).
    Each axis's sign puts its largest coordinate positive, so the map is the same whatever the LAPACK."""
    d = distance.to_numpy(dtype=np.float64)
    n = len(d)
    if n < dims + 1:
        raise ValueError(f"A {dims}-D map needs at least {dims + 1} languages; got {n}.")
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    b = -0.5 * centre @ (d ** 2) @ centre
    values, vectors = np.linalg.eigh((b + b.T) / 2)
    top = np.argsort(values)[::-1][:dims]
    lam = np.clip(values[top], 0.0, None)
    coords = vectors[:, top] * np.sqrt(lam)
    for k in range(dims):
        if coords[np.argmax(np.abs(coords[:, k])), k] < 0:
            coords[:, k] = -coords[:, k]
    positive = values[values > 0].sum()
    table = pd.DataFrame(coords, index=pd.Index(distance.index, name="language"),
                         columns=[f"dim {k + 1}" for k in range(dims)])
    return table, lam / positive if positive > 0 else np.zeros(dims)
