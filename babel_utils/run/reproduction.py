"""Does a fresh run reproduce the committed one? Named checks of a run's results, each with a tolerance.

Each check reads one notebook's results (`results/` of a run folder) and reduces them to a small value:
the expert labels, the counts, the verdicts the notebooks state in words. `summarise` computes every
check's value; `compare` sets a fresh run's values against the reference committed beside the
notebooks (`notebooks/reference/<run>.json`). Exact checks must be equal; tolerances are stated with
each check and sized by the spread measured between real CPUs, kernel sets and thread counts
(docs/reproducibility.md, "What is reproduced exactly, and what within a tolerance").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..analyse import similarity
from ..analyse.categories import DEPTHS, depth_summary
from ..core import results
from ..core.paths import NOTEBOOKS_DIR
from ..evaluate.comparisons import cross_language_matrix, guided_vs_random
from ..prune import methods

REFERENCE_DIR = NOTEBOOKS_DIR / "reference"

# Tolerances, each sized from the spread measured between real CPUs (docs/reproducibility.md, "What is reproduced
# exactly, and what within a tolerance"). Counts: 1 or 2 threads give identical counts; the generic kernel set
# instead of the native one changes 6 of 41,472 counts, each by 1 (at most 2 cells of a language); an Intel CPU with AMX
# against the AMD reference machine changed 6 counts by 1 (at most 2 cells of a language). The count
# tolerances allow twice the largest difference in four times the most cells; derived quantities are allowed
# what such count changes can move.
MAX_COUNT_DIFF = 2  # per (language, layer, expert) count of 02
MAX_CELLS_DIFF = 24  # cells of one language whose count may differ at all (of L * E)
MAX_CATEGORY_DIFF = 4  # high-frequency / shared / specific experts per language (cells near f = 0.05 flip)
P_VALUE_TOL = 0.01  # permutation-test p-value (the null distribution itself is seeded)
STAT_REL_TOL = 0.01  # the permutation test's gap, relative
JACCARD_TOL = 0.02  # overlap of pruned or high-frequency sets
# Bits per byte of a (mask, language), relative, by the LM head's arithmetic (head_dtype, models/lm_head.py). float32
# logits move with the body's last bits only: measured 4.7e-7 (unpruned English, native against generic kernels on
# the AMD machine), 4.4e-7 (native against AVX2 kernels on the Intel CPU with AMX); over every static mask of the
# default run see BENCHMARKS.md ("The LM head"). bfloat16 rounds every logit: 2.1e-4 between the Intel CPU and the
# AMD reference (unpruned Hindi), 4.9e-5 between kernel sets on one CPU.
BPB_REL_TOL: dict[str, float] = {"float32": 2e-5, "bfloat16": 1e-3}
# A method that chooses experts per token (dynamic top-k) amplifies last-bit noise whatever the head: a near-tie
# that goes the other way keeps another expert and changes every later layer. Measured: 5.7 % of English's
# (token, layer) choices differ between the native and the generic kernels here, moving bits per byte by
# 1.1e-3 (float32 head); the Intel CPU against the AMD reference 1.1e-3 (Bengali).
PER_TOKEN_BPB_REL_TOL = 5e-3
UNRECORDED_HEAD = "bfloat16"  # the head of every run before 08 recorded its arithmetic


@dataclass(frozen=True)
class Check:
    """One reproduced quantity: which notebook makes it, how to read it, how to compare, and why so."""

    name: str
    notebook: str  # "01" ... "08"
    extract: Callable[[Path], Any]  # results folder -> JSON-able value
    compare: Callable[[Any, Any], str | None]  # (reference, found) -> None if reproduced, else what differs
    tolerance: str  # the rule, in words


# ------------------------------------------------------------------------------------- comparisons


def exact(reference: Any, found: Any) -> str | None:
    """Equal, or a short description of the first difference."""
    if reference == found:
        return None
    if isinstance(reference, dict) and isinstance(found, dict):
        keys = sorted(set(reference) | set(found), key=str)
        diff = [k for k in keys if reference.get(k) != found.get(k)]
        first = diff[0]
        return f"{len(diff)} entries differ, e.g. {first}: {reference.get(first)!r} -> {found.get(first)!r}"
    return f"{reference!r} -> {found!r}"


def numbers_within(abs_tol: float = 0.0, rel_tol: float = 0.0) -> Callable[[Any, Any], str | None]:
    """Compare {key: number} (or one number) within |a - b| <= abs_tol + rel_tol * |a|."""
    def compare(reference: Any, found: Any) -> str | None:
        ref = reference if isinstance(reference, dict) else {"value": reference}
        new = found if isinstance(found, dict) else {"value": found}
        if set(ref) != set(new):
            return f"keys differ: missing {sorted(set(ref) - set(new))[:5]}, new {sorted(set(new) - set(ref))[:5]}"
        bad = [(k, ref[k], new[k]) for k in ref
               if not (np.isnan(ref[k]) and np.isnan(new[k]))
               and not abs(new[k] - ref[k]) <= abs_tol + rel_tol * abs(ref[k])]
        if bad:
            k, a, b = max(bad, key=lambda t: abs(t[2] - t[1]) / max(abs(t[1]), 1e-12))
            return f"{len(bad)} of {len(ref)} values outside the tolerance, worst {k}: {a:.6g} -> {b:.6g}"
        return None
    return compare


def counts_within(reference: dict, found: dict) -> str | None:
    """Per language: counts differ by at most MAX_COUNT_DIFF, in at most MAX_CELLS_DIFF cells."""
    if set(reference) != set(found):
        return f"languages differ: {sorted(reference)} -> {sorted(found)}"
    for lang in reference:
        a, b = np.asarray(reference[lang]), np.asarray(found[lang])
        if a.shape != b.shape:
            return f"{lang}: {a.size} cells -> {b.size}"
        diff = np.abs(a - b)
        if diff.max() > MAX_COUNT_DIFF or (diff > 0).sum() > MAX_CELLS_DIFF:
            return (f"{lang}: {(diff > 0).sum()} cells differ (at most {MAX_CELLS_DIFF} allowed), by up to "
                    f"{diff.max()} (at most {MAX_COUNT_DIFF})")
    return None


# ------------------------------------------------------------------------------------- extractions


def _labels(res: Path) -> dict[str, str]:
    labels = results.load(res, "labels")
    return {str(i): hashlib.sha256(np.ascontiguousarray(layer.astype(np.int64)).tobytes()).hexdigest()[:16]
            for i, layer in enumerate(labels)}


def _tokens(res: Path) -> dict[str, int]:
    table = results.load(res, "tokens")
    return {str(r.language): int(r.tokens_counted) for r in table.itertuples()}


def _counts(res: Path) -> dict[str, list[int]]:
    table = results.load(res, "frequencies").sort_values(["language", "layer", "expert"])
    return {str(lang): part["count"].astype(int).tolist() for lang, part in table.groupby("language")}


def _frequencies(res: Path) -> tuple[np.ndarray, list[str]]:
    table = results.load(res, "frequencies")
    langs = list(dict.fromkeys(table["language"]))
    n_layers, n_experts = int(table["layer"].max()) + 1, int(table["expert"].max()) + 1
    F = np.zeros((len(langs), n_layers, n_experts))
    for i, lang in enumerate(langs):
        part = table[table["language"] == lang]
        F[i, part["layer"].to_numpy(), part["expert"].to_numpy()] = part["count"] / part["n_tokens"]
    return F, langs


def _high_frequency_depth(res: Path) -> str:
    """03: the third of the layers that holds most (language, layer, expert) cells with f >= threshold."""
    stats = results.load(res, "layer_profile")
    column = "n_high_frequency"
    n_layers = int(stats["layer"].max()) + 1
    thirds = np.array_split(np.arange(n_layers), 3)
    per_third = [stats[stats["layer"].isin(t)][column].sum() for t in thirds]
    return DEPTHS[int(np.argmax(per_third))]


def _categories(res: Path) -> dict[str, float]:
    table = results.load(res, "expert_category_totals")
    out = {f"{r.language} high_frequency": float(r.high_frequency) for r in table.itertuples()}
    out.update({f"{r.language} specific": float(r.specific) for r in table.itertuples()})
    out["shared"] = float(table["shared"].iloc[0])
    return out


def _depths(res: Path) -> dict[str, str]:
    counts = results.load(res, "expert_counts_per_layer")
    n_layers = int(results.load(res, "labels").shape[0])
    summary = depth_summary(counts, n_layers)
    return {"shared": summary.most_shared, "specific": summary.most_specific}


def _distance(res: Path, metric: str = "pearson") -> pd.DataFrame:
    table = results.load(res, "similarity_matrices")
    part = table[table["metric"] == metric]
    order = list(dict.fromkeys(part["lang_a"]))
    matrix = part.pivot(index="lang_a", columns="lang_b", values="value").reindex(index=order, columns=order)
    return similarity.as_distance(matrix, metric)


def _similarity_verdicts(res: Path) -> dict[str, Any]:
    """05: closest and farthest pairs, nearest neighbours, script vs genus, the dendrogram's clades."""
    distance = _distance(res)
    pairs = similarity.pair_table(distance)
    D = distance.to_numpy() + np.diag(np.full(len(distance), np.inf))
    langs = [str(x) for x in distance.index]
    Z, _ = similarity.dendrogram_linkage(distance)
    clades = []
    members: list[list[str]] = [[lang] for lang in langs]
    for a, b, _, _ in Z:
        members.append(sorted(members[int(a)] + members[int(b)]))
        clades.append(",".join(members[-1]))
    return {"closest": f"{pairs.iloc[0].lang_a}-{pairs.iloc[0].lang_b}",
            "farthest": f"{pairs.iloc[-1].lang_a}-{pairs.iloc[-1].lang_b}",
            "nearest": {lang: langs[int(np.argmin(D[i]))] for i, lang in enumerate(langs)},
            "script_vs_genus": similarity.describe_script_vs_family(distance).rsplit("follow the ", 1)[-1],
            "clades": sorted(clades)}


def _permutation(res: Path) -> dict[str, float]:
    row = results.load(res, "permutation_test").iloc[0]
    return {"observed": float(row.observed), "p_value": float(row.p_value)}


def _permutation_verdict(res: Path) -> bool:
    return _permutation(res)["p_value"] < 0.05


def _permutation_compare(reference: dict, found: dict) -> str | None:
    if abs(found["p_value"] - reference["p_value"]) > P_VALUE_TOL:
        return f"p-value {reference['p_value']:.4f} -> {found['p_value']:.4f} (tolerance {P_VALUE_TOL})"
    return numbers_within(rel_tol=STAT_REL_TOL)(reference["observed"], found["observed"])


def _tuning_top_layer(res: Path) -> dict[str, int]:
    table = results.load(res, "tuning_top_layer")
    return {str(r.language): int(r.layer) for r in table.itertuples()}


def _tuning_overlap(res: Path) -> dict[str, float]:
    table = results.load(res, "tuning_overlap")
    return {str(r.language): float(r.jaccard) for r in table.itertuples()}


def _mask_overlap(res: Path) -> dict[str, float]:
    table = results.load(res, "mask_overlap")
    return {f"{a}-{b}@{ratio:g}": float(j) for a, b, j, ratio in
            zip(table["language A"], table["language B"], table["jaccard"], table["ratio"])}


def _bits_per_byte(res: Path) -> dict[str, Any]:
    """08: the LM head's arithmetic and every (language, mask)'s bits per byte."""
    table = results.load(res, "pruning_eval")
    part = table[table["metric"] == "bits_per_byte"]
    head = (results.made_with(res, "pruning_eval") or {}).get("head_dtype", UNRECORDED_HEAD)
    return {"head": head, "values": {f"{r.language} {r.mask}": float(r.value) for r in part.itertuples()}}


def _head_and_values(value: dict) -> tuple[str, dict[str, float]]:
    """(head arithmetic, {"language mask": bits per byte}) of a bits-per-byte value, also of a reference
    written before the head was recorded (a plain dict of numbers)."""
    return (value["head"], value["values"]) if "values" in value else (UNRECORDED_HEAD, value)


def chosen_per_token(key: str) -> bool:
    """Whether the mask of a "language mask" key chooses experts per token (a method with its own hooks)."""
    method = key.split(" ", 1)[1].split("@")[0].split("#")[0]
    return method in methods.METHODS and methods.METHODS[method].hooks is not None


def bits_per_byte_within(reference: dict, found: dict) -> str | None:
    """The same head arithmetic, then every value within its tolerance: BPB_REL_TOL of the head, or
    PER_TOKEN_BPB_REL_TOL for masks chosen per token."""
    ref_head, ref = _head_and_values(reference)
    head, new = _head_and_values(found)
    if head != ref_head:
        return (f"the LM head's arithmetic differs: {ref_head} -> {head} (head_dtype); bits per byte compare only "
                f"under the same arithmetic")
    if set(ref) != set(new):
        return numbers_within()(ref, new)  # names the missing and the new keys
    for per_token, tol in ((False, BPB_REL_TOL[head]), (True, PER_TOKEN_BPB_REL_TOL)):
        keys = [k for k in ref if chosen_per_token(k) == per_token]
        problem = numbers_within(rel_tol=tol)({k: ref[k] for k in keys}, {k: new[k] for k in keys})
        if problem:
            return problem
    return None


def _guided_wins(res: Path) -> dict[str, int]:
    table = results.load(res, "pruning_eval")
    comparison = guided_vs_random(table, "bits_per_byte")
    wins = comparison.groupby(["method", "ratio"])["beats_random_mean"].sum()
    return {f"{method}@{ratio:g}": int(n) for (method, ratio), n in wins.items()}


def _own_mask_best(res: Path) -> dict[str, str]:
    """08: for each evaluated language, the language whose mask hurts its bits per byte least."""
    matrix = cross_language_matrix(results.load(res, "cross_language"), "bits_per_byte")
    return {str(lang): str(matrix[lang].idxmin()) for lang in matrix.columns}


CHECKS: tuple[Check, ...] = (
    Check("labels", "01", _labels, exact, "identical: the split is exact arithmetic"),
    Check("tokens counted", "02", _tokens, exact, "identical: tokenisation is not float arithmetic"),
    Check("counts", "02", _counts, counts_within,
          f"per language at most {MAX_COUNT_DIFF} apart in at most {MAX_CELLS_DIFF} cells"),
    Check("most high-frequency cells in", "03", _high_frequency_depth, exact, "the same third of the layers"),
    Check("expert categories", "04", _categories, numbers_within(abs_tol=MAX_CATEGORY_DIFF),
          f"high-frequency, shared, specific experts within {MAX_CATEGORY_DIFF}"),
    Check("where shared and specific experts sit", "04", _depths, exact, "the same answer"),
    Check("similarity verdicts", "05", _similarity_verdicts, exact,
          "closest and farthest pair, every nearest neighbour, script vs genus, dendrogram clades: identical"),
    Check("permutation test", "05", _permutation, _permutation_compare,
          f"p within {P_VALUE_TOL}, gap within {STAT_REL_TOL:.0%}"),
    Check("permutation verdict", "05", _permutation_verdict, exact, "p < 0.05 either in both or in neither"),
    Check("layer that tuning changes most", "06", _tuning_top_layer, exact, "the same layer for every language"),
    Check("high-frequency overlap after tuning", "06", _tuning_overlap, numbers_within(abs_tol=JACCARD_TOL),
          f"Jaccard within {JACCARD_TOL}"),
    Check("overlap of pruned sets", "07", _mask_overlap, numbers_within(abs_tol=JACCARD_TOL),
          f"Jaccard within {JACCARD_TOL}"),
    Check("bits per byte", "08", _bits_per_byte, bits_per_byte_within,
          "the same LM head; every (mask, language) within "
          + ", ".join(f"{tol:.0e} ({head})" for head, tol in BPB_REL_TOL.items())
          + f" relative, {PER_TOKEN_BPB_REL_TOL:.0e} where experts are chosen per token"),
    Check("guided beats random", "08", _guided_wins, exact, "languages where it wins, per method and ratio"),
    Check("mask that hurts least", "08", _own_mask_best, exact, "the same mask's language for every language"),
)


def checks(notebooks: Sequence[str] | None = None) -> list[Check]:
    """The checks of the given notebooks ("01", ...; None = all)."""
    return [c for c in CHECKS if notebooks is None or c.notebook in notebooks]


def summarise(results_folder: Path, notebooks: Sequence[str] | None = None) -> dict[str, Any]:
    """Every check's value from a run's results folder."""
    return {c.name: _jsonable(c.extract(Path(results_folder))) for c in checks(notebooks)}


def compare(reference: dict[str, Any], found: dict[str, Any], notebooks: Sequence[str] | None = None
            ) -> list[str]:
    """What a run does not reproduce, one line per failed check (empty: everything reproduced)."""
    failures = []
    for check in checks(notebooks):
        if check.name not in reference:
            failures.append(f"{check.name}: no reference value (write the reference with `babel reproduce RUN --write`)")
            continue
        problem = check.compare(reference[check.name], found[check.name])
        if problem:
            failures.append(f"{check.name} ({check.notebook}, tolerance: {check.tolerance}): {problem}")
    return failures


def reference_path(run_name: str) -> Path:
    """Where the reference values of a run are committed."""
    return REFERENCE_DIR / f"{run_name}.json"


def write_reference(results_folder: Path, run_name: str) -> Path:
    """Store a run's check values as the reference (after re-executing the committed notebooks)."""
    path = reference_path(run_name)
    values = summarise(results_folder)
    body = ",\n".join(f"  {json.dumps(name)}: {json.dumps(value, ensure_ascii=False)}" for name, value in values.items())
    results.atomic_write_text(path, f'{{"run": {json.dumps(run_name)},\n"checks": {{\n{body}\n}}}}\n')
    return path


def load_reference(run_name: str) -> dict[str, Any]:
    """The committed reference values of a run."""
    path = reference_path(run_name)
    if not path.exists():
        raise FileNotFoundError(f"No reference values at {path}; write them with `babel reproduce runs/{run_name} --write` (make notebooks does).")
    return results.read_json(path)["checks"]


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars to Python), so the stored and the fresh values compare alike."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
