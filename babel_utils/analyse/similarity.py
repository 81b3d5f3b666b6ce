"""Similarity of languages' frequency patterns, clustering and tests of family structure (docs/method.md section 4).

Frequencies `F` have shape [n_lang, L, E]; matrices come back as DataFrames labelled by language.
The metrics are the table METRICS: "euclidean" (a distance), "kl" (KL(P_i || P_j), not symmetric),
"kl_symmetric" ((KL(i,j) + KL(j,i)) / 2) and "pearson" (a similarity: `1 - r` is its distance). A new metric is
one `Metric` entry; every matrix, distance, test, label and figure reads what it needs from there.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from ..core.config import BabelConfig
from ..core.languages import LANGUAGES, language_name

log = logging.getLogger(__name__)

KL_SMOOTHING: float = BabelConfig.kl_smoothing  # docs/method.md section 4: added to every frequency before normalising


def _require_two(languages: Sequence[str]) -> None:
    """A clear error when a comparison gets fewer than two languages."""
    if len(languages) < 2:
        raise ValueError(f"Comparing languages needs at least two; got {list(languages)}. "
                         "Add languages to the config and run 02_record with them.")


def _vectors(F: np.ndarray, languages: Sequence[str]) -> np.ndarray:
    """Flattened frequency vectors [n_lang, L*E]; errors for fewer than two languages."""
    F = np.asarray(F, dtype=np.float64)
    if F.ndim < 2:
        raise ValueError(f"Frequencies must have shape [n_languages, ...]; got {F.shape}.")
    if len(languages) != F.shape[0]:
        raise ValueError(f"{len(languages)} language names for {F.shape[0]} languages of frequencies.")
    _require_two(languages)
    return F.reshape(F.shape[0], -1)


def _labelled(values: np.ndarray, languages: Sequence[str]) -> pd.DataFrame:
    """A square matrix as a DataFrame with languages on both axes."""
    return pd.DataFrame(values, index=list(languages), columns=list(languages))


def _euclidean(X: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances of rows."""
    return np.sqrt(np.maximum(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1), 0.0))


def _kl(X: np.ndarray, smoothing: float, symmetric: bool) -> np.ndarray:
    """Pairwise KL(P_i || P_j) of rows made distributions after adding `smoothing`."""
    if smoothing <= 0 and (X <= 0).any():
        raise ValueError("KL divergence of frequencies with zeros needs smoothing > 0.")
    P = X + smoothing
    P = P / P.sum(axis=1, keepdims=True)
    logP = np.log(P)
    kl = (P * logP).sum(1)[:, None] - P @ logP.T
    np.fill_diagonal(kl, 0.0)
    kl = np.maximum(kl, 0.0)
    return (kl + kl.T) / 2 if symmetric else kl


def _pearson(X: np.ndarray) -> np.ndarray:
    """Pairwise Pearson correlation of rows (NaN for a constant row)."""
    Z = X - X.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(Z, axis=1)
    if (norm == 0).any():
        log.warning("A language has constant frequencies; its Pearson correlations are undefined (NaN).")
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (Z @ Z.T) / np.outer(norm, norm)
    return np.clip(r, -1.0, 1.0)


@dataclass(frozen=True)
class Metric:
    """One way to compare two languages' frequency vectors."""

    name: str
    label: str  # what its values are (axis and colour-bar labels, sentences)
    pairwise: Callable[[np.ndarray, float], np.ndarray]  # (rows [n, d], KL smoothing) -> matrix [n, n]
    similarity: bool = False  # larger means more alike; its distance is then 1 - value
    symmetric: bool = True  # value(a, b) == value(b, a); an asymmetric one lists both orders per layer

    @property
    def distance_label(self) -> str:
        """What `as_distance` of its matrix holds."""
        return f"1 - {self.label}" if self.similarity else self.label


METRICS: dict[str, Metric] = {
    "euclidean": Metric("euclidean", "Euclidean distance", lambda X, s: _euclidean(X)),
    "kl": Metric("kl", "KL divergence (nats)", lambda X, s: _kl(X, s, symmetric=False), symmetric=False),
    "kl_symmetric": Metric("kl_symmetric", "symmetric KL divergence (nats)", lambda X, s: _kl(X, s, symmetric=True)),
    "pearson": Metric("pearson", "Pearson r", lambda X, s: _pearson(X), similarity=True),
}


def check_metric(name: str) -> Metric:
    """The metric of this name, or an error that lists the known ones."""
    if name not in METRICS:
        raise ValueError(f"Unknown similarity metric {name!r}; known: {', '.join(METRICS)} "
                         "(a new one is a Metric entry in babel_utils/analyse/similarity.py).")
    return METRICS[name]


def _matrix(X: np.ndarray, metric: str, smoothing: float = KL_SMOOTHING) -> np.ndarray:
    """Pairwise matrix of rows of X for one metric."""
    return check_metric(metric).pairwise(X, smoothing)


def euclidean_matrix(F: np.ndarray, languages: Sequence[str]) -> pd.DataFrame:
    """Euclidean distances between the languages' flattened frequency vectors."""
    return _labelled(_matrix(_vectors(F, languages), "euclidean"), languages)


def kl_matrix(F: np.ndarray, languages: Sequence[str], smoothing: float = KL_SMOOTHING,
              symmetric: bool = False) -> pd.DataFrame:
    """KL(P_row || P_column) of smoothed, normalised frequency vectors (or its symmetric mean)."""
    return _labelled(_kl(_vectors(F, languages), smoothing, symmetric), languages)


def pearson_matrix(F: np.ndarray, languages: Sequence[str]) -> pd.DataFrame:
    """Pearson correlations between the languages' flattened frequency vectors."""
    return _labelled(_matrix(_vectors(F, languages), "pearson"), languages)


def similarity_matrix(F: np.ndarray, languages: Sequence[str], metric: str,
                      smoothing: float = KL_SMOOTHING) -> pd.DataFrame:
    """The matrix of any metric in METRICS, by name."""
    return _labelled(_matrix(_vectors(F, languages), metric, smoothing), languages)


def as_distance(matrix: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A metric's matrix as a symmetric distance with zero diagonal: 1 - value for a similarity, symmetrised."""
    values = matrix.to_numpy(dtype=np.float64)
    if check_metric(metric).similarity:
        values = 1.0 - values
    values = (values + values.T) / 2
    np.fill_diagonal(values, 0.0)
    return pd.DataFrame(values, index=matrix.index, columns=matrix.columns)


def per_layer_similarity(F: np.ndarray, languages: Sequence[str], metric: str,
                         smoothing: float = KL_SMOOTHING) -> pd.DataFrame:
    """Per-layer metric for language pairs: columns layer, lang_a, lang_b, metric, value.

    Symmetric metrics give each unordered pair once (in language order); "kl" gives both orders.
    """
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 3:
        raise ValueError(f"Frequencies must have shape [n_languages, layers, experts]; got {F.shape}.")
    _vectors(F, languages)
    pairs = (itertools.permutations(range(len(languages)), 2) if not check_metric(metric).symmetric
             else itertools.combinations(range(len(languages)), 2))
    pairs = list(pairs)
    rows = []
    for layer in range(F.shape[1]):
        M = _matrix(F[:, layer, :], metric, smoothing)
        rows += [(layer, languages[i], languages[j], metric, float(M[i, j])) for i, j in pairs]
    return pd.DataFrame(rows, columns=["layer", "lang_a", "lang_b", "metric", "value"])


def _check_distance(distance_df: pd.DataFrame) -> np.ndarray:
    """The values of a square distance matrix; a clear error for a similarity or a ragged one."""
    D = distance_df.to_numpy(dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1] or list(distance_df.index) != list(distance_df.columns):
        raise ValueError("Expected a square distance matrix with the same languages on rows and columns.")
    _require_two(list(distance_df.index))
    if np.isnan(D).any():
        raise ValueError("The distance matrix holds NaN (a language with constant frequencies?).")
    if not np.allclose(np.diag(D), 0.0, atol=1e-9) or (D < -1e-12).any():
        raise ValueError("This looks like a similarity, not a distance (non-zero diagonal or negative "
                         "values); pass as_distance(matrix, metric), e.g. 1 - r for Pearson.")
    if not np.allclose(D, D.T, rtol=1e-7, atol=1e-12):
        raise ValueError("The distance matrix is not symmetric (plain KL?); pass as_distance(matrix, 'kl') "
                         "or the symmetric KL.")
    return D


def dendrogram_linkage(distance_df: pd.DataFrame, method: str = "average") -> tuple[np.ndarray, list[str]]:
    """Hierarchical clustering (scipy linkage) of a distance matrix and its leaf order."""
    D = _check_distance(distance_df)
    Z = hierarchy.linkage(squareform(D, checks=False), method=method)
    leaves = hierarchy.leaves_list(Z)
    return Z, [str(distance_df.index[i]) for i in leaves]


@dataclass
class PermutationResult:
    """A group permutation test: observed statistic, p-value and null distribution."""

    observed: float
    p_value: float
    null: np.ndarray
    n_same_genus_pairs: int
    n_cross_family_pairs: int
    n_permutations: int


def _labels(languages: Sequence[str], mapping: Mapping[str, str] | None, field: str) -> np.ndarray:
    """Genus or family of each language, from the mapping or the languages table."""
    if mapping is None:
        mapping = {code: getattr(lang, field) for code, lang in LANGUAGES.items()}
    missing = [lang for lang in languages if lang not in mapping]
    if missing:
        raise ValueError(f"No {field} given for language(s) {missing}.")
    return np.array([mapping[lang] for lang in languages], dtype=object)


PAIR_VALUES_PER_CHUNK = 2**22


def _pair_statistic(values: np.ndarray, same: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """Mean cross-family distance minus mean same-genus distance, over the last axis of pair values."""
    return values[..., cross].mean(axis=-1) - values[..., same].mean(axis=-1)


def group_permutation_test(distance_df: pd.DataFrame, groups: Mapping[str, str] | None = None,
                           families: Mapping[str, str] | None = None,
                           n_permutations: int = BabelConfig.n_permutations, seed: int = 0) -> PermutationResult:
    """Are same-genus languages closer than cross-family ones? Permutation test on language labels.

    Statistic: mean distance over pairs of different families minus mean distance over pairs of the
    same genus (positive when same-genus pairs are closer). Null: the languages' (genus, family)
    labels permuted jointly, which keeps the group sizes. p = (1 + #null >= observed) / (1 + n).
    `groups` / `families` default to the genus / family of babel_utils.core.languages.
    """
    D = _check_distance(distance_df)
    langs = [str(x) for x in distance_df.index]
    genus, family = _labels(langs, groups, "genus"), _labels(langs, families, "family")
    i, j = np.triu_indices(len(langs), k=1)
    same, cross = genus[i] == genus[j], family[i] != family[j]
    if not same.any() or not cross.any():
        raise ValueError("The permutation test needs at least two languages of one genus and two families; "
                         f"got genera {dict(zip(langs, genus))} and families {dict(zip(langs, family))}.")
    observed = float(_pair_statistic(D[i, j], same, cross))
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_permutations, len(langs))), axis=1)
    # permutations in chunks of about 4 million pair values (at 500 languages all at once would take 20 GB)
    rows = max(1, PAIR_VALUES_PER_CHUNK // len(i))
    null = np.concatenate([_pair_statistic(D[p[:, i], p[:, j]], same, cross)
                           for p in np.array_split(perms, math.ceil(n_permutations / rows))])
    p_value = (1 + int((null >= observed - 1e-12).sum())) / (1 + n_permutations)
    log.info("Permutation test: observed %.4g, p = %.4g (%d permutations)", observed, p_value, n_permutations)
    return PermutationResult(observed, float(p_value), null, int(same.sum()), int(cross.sum()), n_permutations)


def bootstrap_matrix(per_chunk_counts: Mapping[str, np.ndarray], per_chunk_tokens: Mapping[str, np.ndarray],
                     metric: str, n_bootstrap: int = BabelConfig.n_bootstrap, seed: int = 0,
                     smoothing: float = KL_SMOOTHING) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Bootstrap over text chunks: mean, 2.5 % and 97.5 % percentile matrices of a metric (the matrices of
    `bootstrap_samples`)."""
    langs = list(per_chunk_counts)
    mats = bootstrap_samples(per_chunk_counts, per_chunk_tokens, metric, n_bootstrap, seed, smoothing)
    low, high = np.percentile(mats, [2.5, 97.5], axis=0)
    return _labelled(mats.mean(axis=0), langs), _labelled(low, langs), _labelled(high, langs)


# --------------------------------------------------------------------------- notebook 05: summaries

RELATIONS: tuple[str, ...] = ("same genus", "same family, other genus", "different family")


_name = language_name


def relation(a: str, b: str) -> str:
    """How two languages are related: same genus, same family (other genus) or different family."""
    la, lb = LANGUAGES.get(a), LANGUAGES.get(b)
    if la is None or lb is None:
        raise ValueError(f"No family / genus for {a!r} or {b!r}; add them to babel_utils/core/languages.py.")
    if la.genus == lb.genus:
        return RELATIONS[0]
    return RELATIONS[1] if la.family == lb.family else RELATIONS[2]


def matrices_table(F: np.ndarray, languages: Sequence[str], metrics: Sequence[str] | None = None,
                   smoothing: float = KL_SMOOTHING) -> pd.DataFrame:
    """Every metric's matrix (all of METRICS by default) in one long table: metric, lang_a, lang_b, value (all
    ordered pairs)."""
    frames = []
    for metric in METRICS if metrics is None else metrics:
        M = similarity_matrix(F, languages, metric, smoothing)
        long = M.stack().rename_axis(["lang_a", "lang_b"]).rename("value").reset_index()
        frames.append(long.assign(metric=metric)[["metric", "lang_a", "lang_b", "value"]])
    return pd.concat(frames, ignore_index=True)


def pair_table(distance_df: pd.DataFrame, low: pd.DataFrame | None = None,
               high: pd.DataFrame | None = None) -> pd.DataFrame:
    """Unordered language pairs of a distance matrix with their relation, sorted by distance (closest first)."""
    D = _check_distance(distance_df)
    langs = [str(x) for x in distance_df.index]
    rows = []
    for i, j in zip(*np.triu_indices(len(langs), k=1)):
        row = {"lang_a": langs[i], "lang_b": langs[j], "relation": relation(langs[i], langs[j]),
               "distance": float(D[i, j])}
        if low is not None and high is not None:
            row["low"], row["high"] = float(low.iloc[i, j]), float(high.iloc[i, j])
        rows.append(row)
    return pd.DataFrame(rows).sort_values("distance", kind="stable").reset_index(drop=True)


LISTED = 12  # names listed in a sentence before "and N more"


def _listing(items: Sequence[str], limit: int = LISTED) -> str:
    """Items joined by commas, the first `limit` and a count of the rest (sentences stay short at 500 languages)."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def describe_similarity(distance_df: pd.DataFrame, metric: str) -> str:
    """Closest and farthest pairs, nearest neighbours and whether they share a genus, from a distance matrix."""
    pairs = pair_table(distance_df)
    D = _check_distance(distance_df)
    langs = [str(x) for x in distance_df.index]
    label = check_metric(metric).distance_label
    close, far = pairs.iloc[0], pairs.iloc[-1]
    masked = D + np.diag(np.full(len(langs), np.inf))
    nearest = {lang: langs[int(np.argmin(masked[i]))] for i, lang in enumerate(langs)}
    with_genus = [lang for lang in langs if any(relation(lang, o) == RELATIONS[0] for o in langs if o != lang)]
    same = [lang for lang in with_genus if relation(lang, nearest[lang]) == RELATIONS[0]]
    text = (f"By {label}, the closest pair is {_name(close.lang_a)}–{_name(close.lang_b)} ({close.relation}, "
            f"{close.distance:.3g}) and the farthest {_name(far.lang_a)}–{_name(far.lang_b)} ({far.relation}, "
            f"{far.distance:.3g}). ")
    if with_genus:
        text += (f"Of the {len(with_genus)} languages that have a relative of the same genus here, {len(same)} have "
                 f"one as nearest neighbour")
        missed = [f"{_name(lang)} (nearest: {_name(nearest[lang])})" for lang in with_genus if lang not in same]
        text += (f"; not so: {_listing(missed)}." if missed else ".")
    else:
        text += "No two languages here share a genus."
    by_rel = pairs.groupby("relation")["distance"].mean().reindex(list(RELATIONS)).dropna()
    text += " Mean distance by relation: " + ", ".join(f"{r} {v:.3g}" for r, v in by_rel.items()) + "."
    return text


def describe_script_vs_family(distance_df: pd.DataFrame) -> str:
    """Do languages group by genus or by script? Same-genus pairs in different scripts against same-script
    pairs of different families (e.g. Hindi–Urdu against Urdu–Arabic)."""
    pairs = pair_table(distance_df)
    script = {c: LANGUAGES[c].script for c in distance_df.index if c in LANGUAGES}
    genus_other_script = pairs[(pairs.relation == RELATIONS[0])
                               & (pairs.lang_a.map(script) != pairs.lang_b.map(script))]
    script_other_family = pairs[(pairs.relation == RELATIONS[2])
                                & (pairs.lang_a.map(script) == pairs.lang_b.map(script))]
    if genus_other_script.empty or script_other_family.empty:
        return ("Script and family cannot be told apart with these languages: it needs a same-genus pair in two "
                "scripts and a same-script pair of different families (e.g. Hindi, Urdu and Arabic).")
    names = lambda df: _listing([f"{_name(a)}–{_name(b)}" for a, b in zip(df.lang_a, df.lang_b)])  # noqa: E731
    g, s = float(genus_other_script.distance.mean()), float(script_other_family.distance.mean())
    winner = "genus, not script" if g < s else "script, not genus"
    return (f"Same genus, different scripts ({names(genus_other_script)}): mean distance {g:.3g}; same script, "
            f"different families ({names(script_other_family)}): {s:.3g}. Here the frequencies follow the "
            f"{winner}.")


def per_layer_curve(per_layer: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the mean metric over all pairs, same-genus pairs and different-family pairs."""
    rel = [relation(a, b) for a, b in zip(per_layer["lang_a"], per_layer["lang_b"])]
    df = per_layer.assign(relation=rel)
    groups = {"all pairs": df, "same genus": df[df.relation == RELATIONS[0]],
              "different family": df[df.relation == RELATIONS[2]]}
    frames = [part.groupby("layer")["value"].mean().rename("value").reset_index().assign(group=name)
              for name, part in groups.items() if len(part)]
    metric = str(per_layer["metric"].iloc[0])
    return pd.concat(frames, ignore_index=True).assign(metric=metric)[["layer", "group", "metric", "value"]]


def describe_per_layer(curve: pd.DataFrame) -> str:
    """Where in depth languages look most alike, least alike, and where related languages stand out most."""
    metric = str(curve["metric"].iloc[0])
    alike_high = check_metric(metric).similarity
    label = check_metric(metric).label
    allp = curve[curve.group == "all pairs"].set_index("layer")["value"]
    most, least = (allp.idxmax(), allp.idxmin()) if alike_high else (allp.idxmin(), allp.idxmax())
    text = (f"Per layer ({label}, mean over all pairs), languages look most alike at layer {int(most)} "
            f"({allp[most]:.3g}) and least alike at layer {int(least)} ({allp[least]:.3g}).")
    wide = curve.pivot(index="layer", columns="group", values="value")
    if {"same genus", "different family"} <= set(wide.columns):
        gap = (wide["same genus"] - wide["different family"]) if alike_high else \
            (wide["different family"] - wide["same genus"])
        text += (f" Same-genus pairs are more alike than different-family pairs in {int((gap > 0).sum())} of "
                 f"{len(gap)} layers; the gap is largest at layer {int(gap.idxmax())}.")
    return text


def genus_test_unavailable(languages: Sequence[str]) -> str:
    """Why the genus test cannot run with these languages ("" when it can): it needs a pair of one genus
    and a pair of different families."""
    langs = list(languages)
    i, j = np.triu_indices(len(langs), k=1)
    rel = {relation(langs[a], langs[b]) for a, b in zip(i, j)}
    if RELATIONS[0] in rel and RELATIONS[2] in rel:
        return ""
    return (f"The genus test is not possible with {', '.join(_name(c) for c in langs)}: it needs two languages "
            "of one genus and two of different families (the paper's nine languages have both).")


def describe_permutation(result: PermutationResult | None, metric: str, alpha: float = 0.05,
                         reason: str = "") -> str:
    """The permutation test in words: statistic, p-value and the decision at `alpha` (or why there is none)."""
    if result is None:
        return reason or "No permutation test was run."
    label = check_metric(metric).distance_label
    verdict = ("so same-genus languages are more similar than languages of different families at the "
               f"{alpha:g} level" if result.p_value <= alpha else
               f"which is not significant at the {alpha:g} level: with these languages and this text we cannot "
               "say that same-genus languages are more similar than languages of different families")
    return (f"Permutation test on {label}: different-family pairs ({result.n_cross_family_pairs}) are on average "
            f"{result.observed:.3g} farther apart than same-genus pairs ({result.n_same_genus_pairs}); "
            f"{result.n_permutations} relabellings of the languages give p = {result.p_value:.3g}, {verdict}.")


def bootstrap_samples(per_chunk_counts: Mapping[str, np.ndarray], per_chunk_tokens: Mapping[str, np.ndarray],
                      metric: str, n_bootstrap: int = BabelConfig.n_bootstrap, seed: int = 0,
                      smoothing: float = KL_SMOOTHING) -> np.ndarray:
    """Every bootstrap matrix [n_bootstrap, n_lang, n_lang] of a metric over text chunks.

    Each language's chunks ([n_chunks, L, E] counts, [n_chunks] tokens) are resampled with
    replacement, frequencies recomputed and the metric's matrix taken, `n_bootstrap` times.
    """
    langs = list(per_chunk_counts)
    counts = [np.asarray(per_chunk_counts[lang], dtype=np.float32) for lang in langs]  # exact for counts < 2**24
    missing = [lang for lang in langs if lang not in per_chunk_tokens]
    if missing:
        raise ValueError(f"No per-chunk token counts for language(s) {missing}.")
    tokens = [np.asarray(per_chunk_tokens[lang], dtype=np.float64) for lang in langs]
    _require_two(langs)
    shapes = {lang: c.shape[1:] for lang, c in zip(langs, counts)}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"The languages' chunk counts have different (layers, experts) shapes {shapes}.")
    for lang, c, t in zip(langs, counts, tokens):
        if c.ndim != 3 or t.shape != (c.shape[0],) or (t < 0).any():
            raise ValueError(f"Language {lang!r}: expected counts [n_chunks, L, E] and non-negative tokens "
                             f"[n_chunks]; got {c.shape} and {t.shape}.")
        if c.shape[0] < 1 or t.sum() <= 0:
            raise ValueError(f"Language {lang!r} has no counted tokens in its chunks (bootstrap_block = 0?).")
    flat = [c.reshape(c.shape[0], -1) for c in counts]
    rng = np.random.default_rng(seed)
    mats = np.empty((n_bootstrap, len(langs), len(langs)))
    for b in range(n_bootstrap):
        X = np.empty((len(langs), flat[0].shape[1]))
        for k, (c, t) in enumerate(zip(flat, tokens)):
            w = np.bincount(rng.integers(0, len(t), len(t)), minlength=len(t))
            X[k] = (w.astype(np.float32) @ c).astype(np.float64) / (w @ t)
        mats[b] = _matrix(X, metric, smoothing)
    return mats


def genus_statistic(matrix: np.ndarray, languages: Sequence[str], metric: str) -> np.ndarray:
    """Mean different-family distance minus mean same-genus distance of one matrix or a stack [..., n, n]."""
    M = np.asarray(matrix, dtype=np.float64)
    D = 1.0 - M if check_metric(metric).similarity else M
    D = (D + np.swapaxes(D, -1, -2)) / 2
    i, j = np.triu_indices(len(languages), k=1)
    rel = np.array([relation(languages[a], languages[b]) for a, b in zip(i, j)])
    same, cross = rel == RELATIONS[0], rel == RELATIONS[2]
    if not same.any() or not cross.any():
        raise ValueError("The genus statistic needs a same-genus pair and a different-family pair of languages.")
    return _pair_statistic(D[..., i, j], same, cross)


def describe_bootstrap(pairs: pd.DataFrame, interval: tuple[float, float] | None, metric: str,
                       n_bootstrap: int) -> str:
    """Bootstrap intervals in words: the genus statistic's 95 % interval (None: no genus test), and how
    clearly the closest pair stands apart."""
    label = check_metric(metric).distance_label
    first = pairs.iloc[0]
    overlapping = pairs.iloc[1:][pairs.iloc[1:]["low"] <= first["high"]]
    text = f"Resampling blocks of text {n_bootstrap} times"
    if interval is not None:
        low, high = interval
        text += (f", the different-family minus same-genus gap in {label} has the 95 % interval "
                 f"[{low:.3g}, {high:.3g}]"
                 + (" (above zero: the genus effect is not an accident of this text sample). " if low > 0 else
                    " (it includes zero or lies below: the text sample alone could produce or hide the effect). "))
    else:
        text += ": "
    closest = (f"the closest pair, {_name(first.lang_a)}–{_name(first.lang_b)}, has the interval "
               f"[{first.low:.3g}, {first.high:.3g}]; {len(overlapping)} other pair(s) have intervals overlapping it.")
    return text + (closest[0].upper() + closest[1:] if interval is not None else closest)


def expert_grid_table(F_by_n: Mapping[int, np.ndarray], languages: Sequence[str], metric: str,
                      reference: int, smoothing: float = KL_SMOOTHING,
                      n_permutations: int = BabelConfig.n_permutations, seed: int = 0,
                      threshold: float = BabelConfig.high_freq_threshold) -> pd.DataFrame:
    """The similarity findings at each number of experts: genus test, closest pair, agreement with `reference`.

    `spearman_vs_reference` is the rank correlation of the pair distances with those at `reference`
    experts; the shared-expert columns use `threshold`.
    """
    from scipy.stats import spearmanr

    from .categories import depth_summary, expert_counts_per_layer, shared_experts

    if reference not in F_by_n:
        raise ValueError(f"The expert grid lacks the reference n_experts={reference}; include it in expert_grid.")
    dists = {n: as_distance(similarity_matrix(F, languages, metric, smoothing), metric) for n, F in F_by_n.items()}
    i, j = np.triu_indices(len(languages), k=1)
    ref = dists[reference].to_numpy()[i, j]
    rows = []
    for n, F in sorted(F_by_n.items()):
        D = dists[n]
        test = None if genus_test_unavailable(languages) else \
            group_permutation_test(D, n_permutations=n_permutations, seed=seed)
        close = pair_table(D).iloc[0]
        rho = float(spearmanr(D.to_numpy()[i, j], ref).statistic) if len(ref) > 1 else float("nan")
        depth = depth_summary(expert_counts_per_layer(F, languages, threshold), F.shape[1])
        rows.append({"n_experts": int(n), "experts_total": int(F.shape[1] * F.shape[2]),
                     "genus_gap": test.observed if test else np.nan, "p_value": test.p_value if test else np.nan,
                     "closest_pair": f"{close.lang_a}-{close.lang_b}", "spearman_vs_reference": rho,
                     "n_shared": int(shared_experts(F, threshold).sum()), "most_shared": depth.most_shared,
                     "most_specific": depth.most_specific})
    return pd.DataFrame(rows)


def _split_pair(pair: str) -> tuple[str, str]:
    """The two codes of an "a-b" pair label, where codes may hold a '-' themselves (pt-BR-es)."""
    for k in [i for i, ch in enumerate(pair) if ch == "-"]:
        if pair[:k] in LANGUAGES and pair[k + 1:] in LANGUAGES:
            return pair[:k], pair[k + 1:]
    first, _, second = pair.partition("-")
    return first, second


def describe_grid(grid: pd.DataFrame, reference: int, alpha: float = 0.05) -> str:
    """Does the similarity finding depend on the number of experts? The grid table in words."""
    sig = grid[grid.p_value <= alpha]
    ns = ", ".join(str(n) for n in grid.n_experts)
    others = grid[grid.n_experts != reference]
    if grid.p_value.isna().all():
        text = f"At {ns} experts per layer (the genus test is not possible with these languages). "
    else:
        text = (f"At {ns} experts per layer, the genus test is significant at the {alpha:g} level for "
                f"{len(sig)} of {len(grid)} granularities"
                + (f" ({', '.join(str(n) for n in sig.n_experts)})" if 0 < len(sig) < len(grid) else "")
                + f"; p ranges from {grid.p_value.min():.3g} to {grid.p_value.max():.3g}. ")
    if len(others):
        text += (f"The pair distances keep their order: Spearman correlation with {reference} experts from "
                 f"{others.spearman_vs_reference.min():.2f} to {others.spearman_vs_reference.max():.2f}. ")
    closest = grid.closest_pair.value_counts()
    pair = closest.index[0]
    a, b = _split_pair(pair)
    text += f"The closest pair is {_name(a)}–{_name(b)} at {int(closest.iloc[0])} of {len(grid)} granularities"
    where = grid.most_shared.astype(str)
    found = where[where != "none"].value_counts()
    if found.empty:
        return text + "; no granularity has multilingual shared experts at this threshold."
    top = found.index[0]
    rest = [f"{w} at {n}" for n, w in zip(grid.n_experts, where) if w != top]
    return (text + f"; shared experts sit mostly in the {top} layers at {int(found.iloc[0])} of {len(grid)} "
            "granularities" + (f" ({', '.join(rest)})." if rest else "."))


def bootstrap_pairs(distance_df: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`pair_table` with bootstrap 2.5 % / 97.5 % bounds turned into distances (1 - value flips a similarity's)."""
    if check_metric(metric).similarity:
        low_d, high_d = as_distance(high, metric), as_distance(low, metric)
    else:
        low_d, high_d = as_distance(low, metric), as_distance(high, metric)
    return pair_table(distance_df, low_d.clip(lower=0.0), high_d.clip(lower=0.0))


def basic_interval(samples: np.ndarray, point: np.ndarray | float, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Basic (reverse-percentile) bootstrap interval: [2 point - q_hi, 2 point - q_lo] over the first axis.

    Distances between resampled frequency vectors are biased upward (resampling adds noise), so the
    plain percentile interval can lie entirely above the point estimate; the basic interval reflects
    the bootstrap spread around the estimate instead.
    """
    q_lo, q_hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    point = np.asarray(point, dtype=np.float64)
    return 2 * point - q_hi, 2 * point - q_lo


def bootstrap_intervals(samples: np.ndarray, languages: Sequence[str], point: pd.DataFrame | None = None
                        ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Mean and 95 % bounds of bootstrap matrices [n_bootstrap, n, n]: basic intervals around `point`
    (the matrix of the full text) when given, else the 2.5 % and 97.5 % percentiles."""
    if point is None:
        low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    else:
        low, high = basic_interval(samples, point.to_numpy(dtype=np.float64))
    return _labelled(samples.mean(axis=0), languages), _labelled(low, languages), _labelled(high, languages)


def genus_interval(samples: np.ndarray, point: pd.DataFrame, languages: Sequence[str], metric: str
                   ) -> tuple[float, float]:
    """Basic bootstrap 95 % interval of the genus statistic, from bootstrap matrices and the full-text matrix."""
    stats = genus_statistic(samples, languages, metric)
    low, high = basic_interval(stats, genus_statistic(point.to_numpy(dtype=np.float64), languages, metric))
    return float(low), float(high)


def test_table(result: PermutationResult | None, interval: tuple[float, float] | None, metric: str,
               n_bootstrap: int = 0) -> pd.DataFrame:
    """One row: the permutation test and, when given, the bootstrap 95 % interval of its statistic (NaN
    when the test was not possible)."""
    low, high = interval if interval is not None else (np.nan, np.nan)
    get = lambda key, default=np.nan: getattr(result, key) if result is not None else default  # noqa: E731
    return pd.DataFrame([{
        "metric": metric, "statistic": "mean different-family distance - mean same-genus distance",
        "observed": float(get("observed")), "p_value": float(get("p_value")),
        "n_permutations": int(get("n_permutations", 0)), "n_same_genus_pairs": int(get("n_same_genus_pairs", 0)),
        "n_cross_family_pairs": int(get("n_cross_family_pairs", 0)),
        "bootstrap_low": float(low), "bootstrap_high": float(high),
        "n_bootstrap": int(n_bootstrap) if interval is not None else 0,
    }])


def per_layer_all(F: np.ndarray, languages: Sequence[str], metrics: Sequence[str] | None = None,
                  smoothing: float = KL_SMOOTHING) -> pd.DataFrame:
    """`per_layer_similarity` of several metrics (all of METRICS by default) in one long table (column `metric`
    tells them apart)."""
    return pd.concat([per_layer_similarity(F, languages, m, smoothing) for m in (METRICS if metrics is None else metrics)],
                     ignore_index=True)
