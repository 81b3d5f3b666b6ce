"""The frequency table of notebook 02 (language, layer, expert, count, n_tokens) as arrays (docs/method.md section 3).

Frequency `f[lang, layer, expert] = count / n_tokens`: the share of the language's counted tokens
for which the expert was among the activated (layer, expert) pairs.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..models.experts import ExpertSplit

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("language", "layer", "expert", "count", "n_tokens")


def _check_columns(table: pd.DataFrame) -> None:
    """A clear error when the table lacks a column of the frequency table."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"The frequency table lacks the column(s) {missing}; expected {list(COLUMNS)} "
                         "(the table written by 02_record).")


def table_languages(table: pd.DataFrame) -> list[str]:
    """The table's languages in order of first appearance."""
    _check_columns(table)
    return [str(x) for x in pd.unique(table["language"])]


def make_table(counts: Mapping[str, np.ndarray], n_tokens: Mapping[str, int]) -> pd.DataFrame:
    """Build the frequency table from per-language [L, E] counters and token counts."""
    frames = []
    for lang, arr in counts.items():
        arr = np.asarray(arr, dtype=np.int64)
        n_layers, n_experts = arr.shape
        layer, expert = np.meshgrid(np.arange(n_layers), np.arange(n_experts), indexing="ij")
        frames.append(pd.DataFrame({
            "language": lang, "layer": layer.ravel(), "expert": expert.ravel(),
            "count": arr.ravel(), "n_tokens": np.int64(n_tokens[lang]),
        }))
    table = pd.concat(frames, ignore_index=True)
    return table.astype({"layer": int, "expert": int, "count": np.int64, "n_tokens": np.int64})


def _language_array(rows: pd.DataFrame, lang: str) -> np.ndarray:
    """[L, E] frequencies of one language's rows; errors for missing or duplicate cells."""
    n_tok = rows["n_tokens"].unique()
    if len(n_tok) != 1 or n_tok[0] <= 0:
        raise ValueError(f"Language {lang!r} has n_tokens {sorted(n_tok.tolist())} in the frequency table; "
                         "expected one positive token count on every row.")
    layer, expert = rows["layer"].to_numpy(int), rows["expert"].to_numpy(int)
    if layer.min() < 0 or expert.min() < 0:
        raise ValueError(f"Language {lang!r} has negative layer or expert ids in the frequency table.")
    shape = (layer.max() + 1, expert.max() + 1)
    if rows.duplicated(["layer", "expert"]).any():
        raise ValueError(f"Language {lang!r} has duplicate (layer, expert) rows in the frequency table.")
    out = np.full(shape, np.nan)
    out[layer, expert] = rows["count"].to_numpy(np.float64) / float(n_tok[0])
    if np.isnan(out).any():
        gaps = np.argwhere(np.isnan(out))
        raise ValueError(f"Language {lang!r} misses {len(gaps)} (layer, expert) cell(s) of its "
                         f"{shape[0]} x {shape[1]} grid, e.g. layer {gaps[0][0]}, expert {gaps[0][1]}.")
    return out


def frequency_array(table: pd.DataFrame,
                    languages: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Frequencies as an array [n_lang, L, E] and the languages in its order."""
    langs = table_languages(table) if languages is None else list(languages)
    if not langs:
        raise ValueError("The frequency table holds no language.")
    groups = dict(tuple(table.groupby("language", sort=False)))
    arrays = []
    for lang in langs:
        if lang not in groups:
            raise ValueError(f"language {lang} has no counts in this table; run 02_record with it "
                             f"(the table holds: {', '.join(table_languages(table)) or 'nothing'}).")
        arrays.append(_language_array(groups[lang], lang))
    shapes = {lang: a.shape for lang, a in zip(langs, arrays)}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"The languages have different (layers, experts) shapes {shapes}: their counts come "
                         "from different models or n_experts; re-run 02_record with one config.")
    return np.stack(arrays), langs


def table_shape(table: pd.DataFrame) -> tuple[int, int]:
    """(layers, experts) of the table's grid."""
    _check_columns(table)
    return int(table["layer"].max()) + 1, int(table["expert"].max()) + 1


def check_table(table: pd.DataFrame, n_layers: int, n_experts: int) -> None:
    """A clear error when the table's grid is not the (layers, experts) grid of the expert labels."""
    got = table_shape(table)
    if got != (n_layers, n_experts):
        raise ValueError(f"The frequency table has {got[0]} layers x {got[1]} experts but the expert labels "
                         f"have {n_layers} layers x {n_experts} experts: the table comes from another model "
                         "or n_experts. Re-run 02_record with the config of these labels.")


def layer_shares(x: np.ndarray) -> np.ndarray:
    """Each layer's share of a language's selections, [L], from its counts or frequencies [L, E] (row sums /
    total; NaN when nothing was selected)."""
    rows = np.asarray(x).sum(axis=1)
    total = rows.sum()
    return rows / total if total > 0 else np.full(rows.shape, np.nan)


def activation_levels(table: pd.DataFrame) -> pd.DataFrame:
    """Per language and layer, the share of the language's selected experts that fall in the layer
    (`layer_shares` of its counts)."""
    n_layers, n_experts = table_shape(table)
    rows = []
    for lang, part in table.groupby("language", sort=False):
        counts = np.zeros((n_layers, n_experts), dtype=np.int64)
        counts[part["layer"].to_numpy(), part["expert"].to_numpy()] = part["count"].to_numpy()
        rows.append(pd.DataFrame({"language": lang, "layer": np.arange(n_layers), "level": layer_shares(counts)}))
    return pd.concat(rows, ignore_index=True)


def levels_by_language(levels: pd.DataFrame) -> dict[str, np.ndarray]:
    """`activation_levels` as {language: level per layer, in layer order}."""
    return {lang: part.sort_values("layer")["level"].to_numpy() for lang, part in levels.groupby("language", sort=False)}


def describe_levels(levels: pd.DataFrame) -> str:
    """A sentence on where the selected experts concentrate, computed from the activation levels."""
    mean = levels.groupby("layer")["level"].mean()
    n_layers = len(mean)
    top = mean.sort_values(ascending=False).head(3)
    spread = levels.groupby("layer")["level"].agg(lambda s: s.max() - s.min())
    widest = int(spread.idxmax())
    layers = ", ".join(f"{int(layer)} ({level:.1%})" for layer, level in top.items())
    return (f"Averaged over languages, the most active layers are {layers}, against {1 / n_layers:.1%} "
            f"for a uniform spread over {n_layers} layers; languages differ most at layer {widest} "
            f"(levels from {levels.loc[levels.layer == widest, 'level'].min():.1%} to "
            f"{levels.loc[levels.layer == widest, 'level'].max():.1%}).")


def load_run_frequencies(results_folder, cfg, min_languages: int = 1) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The frequency table of 02_record and its array [n_lang, L, E] for `cfg.languages`, checked.

    Clear errors: no table or labels yet (run 01 and 02), a table whose (layers, experts) grid is not
    that of the labels (another model or n_experts), labels of another n_experts than the config, a
    language of the config without counts, fewer languages than a comparison needs.
    """
    from ..core import cache, results

    table = results.load(results_folder, "frequencies")
    labels = results.load(results_folder, "labels")
    cache.check_provenance(results_folder, cfg, "labels")
    cache.check_provenance(results_folder, cfg, "frequencies")
    split = ExpertSplit(labels)
    n_layers, n_experts = split.n_layers, split.n_experts
    check_table(table, n_layers, n_experts)
    if n_experts != cfg.n_experts:
        raise ValueError(f"The results in {results_folder} have {n_experts} experts per layer but the config "
                         f"says n_experts={cfg.n_experts}. Re-run 01_split and 02_record with this config.")
    F, langs = frequency_array(table, cfg.languages)
    if len(langs) < min_languages:
        raise ValueError(f"This notebook compares languages and needs at least {min_languages}; the config "
                         f"names {langs}. Add languages and run 02_record with them.")
    return table, F, langs


def check_same_tokens(base: pd.DataFrame, other: pd.DataFrame, what: str = "the tuned model") -> None:
    """A clear error when two frequency tables counted different numbers of tokens for a language
    (the base table then comes from another config: token_budget, seq_len or text)."""
    a = base.groupby("language", sort=False)["n_tokens"].first()
    b = other.groupby("language", sort=False)["n_tokens"].first()
    common = [lang for lang in b.index if lang in a.index]
    differ = {lang: (int(a[lang]), int(b[lang])) for lang in common if int(a[lang]) != int(b[lang])}
    if differ:
        raise ValueError(f"The base frequencies and {what} counted different numbers of tokens (base, other): "
                         f"{differ}. The base table comes from another text or token_budget than this config; "
                         "re-run 02_record with this config.")
