"""The numbers the documents repeat from the committed outputs, each read from the output that states it.

A document marks such a number `<!-- fact:NAME -->VALUE<!-- /fact -->` (the marks do not show in rendered
Markdown). FACTS says where each NAME is read: a cell's output in a committed executed notebook, a committed
results table, the committed reference values. `python -m babel_utils.run.facts` writes every marked value from its
source (maintainers, after `make notebooks`); `python -m babel_utils.run.facts --check` (and tests/test_facts.py)
fails where a document says something else, marks a fact that does not exist, or a fact is marked nowhere.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pandas as pd

from ..core.paths import FIGURES_DIR, NOTEBOOKS_DIR, REPO_ROOT

DOCUMENTS: tuple[str, ...] = ("README.md", "BENCHMARKS.md", "docs/evaluation.md", "docs/languages.md",
                               "docs/reproducibility.md")
MARK = re.compile(r"<!-- fact:(?P<name>[\w.-]+) -->(?P<value>.*?)<!-- /fact -->", re.S)


@dataclass(frozen=True)
class Fact:
    """One number of the documents: where it is stated, and how to read it there."""

    name: str
    source: str  # the committed output it is read from, for the reader
    read: Callable[[], str]


@lru_cache(maxsize=None)
def _cells(notebook: Path) -> tuple[tuple[str, str], ...]:
    """(source, text of its outputs) of every code cell of an executed notebook."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    out = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        texts = []
        for output in cell.get("outputs", []):
            if "text" in output:
                texts.append("".join(output["text"]))
            elif "text/plain" in output.get("data", {}):
                texts.append("".join(output["data"]["text/plain"]))
        out.append(("".join(cell["source"]), "\n".join(texts)))
    return tuple(out)


def output(notebook: str | Path, cell: str) -> str:
    """The text output of the first code cell of a committed notebook whose source contains `cell` (a call, without
    the module or face it is called from, so that notebooks of older layouts are read too)."""
    path = Path(notebook) if Path(notebook).suffix else NOTEBOOKS_DIR / f"{notebook}.ipynb"
    for source, text in _cells(path):
        if cell in source:
            return text
    raise LookupError(f"No code cell of {path} contains {cell!r}: update babel_utils/run/facts.py to the notebook.")


def found(pattern: str, text: str, group: int | str = 1) -> str:
    """The group of the first match of `pattern` in `text`, or an error naming the pattern."""
    match = re.search(pattern, text, re.S)
    if match is None:
        raise LookupError(f"{pattern!r} is no longer in the output it is read from: update babel_utils/run/facts.py.")
    return match.group(group)


def printed_frame(text: str) -> pd.DataFrame:
    """A DataFrame as pandas printed it (its column blocks, wrapped with a trailing backslash, joined again)."""
    blocks = [block for block in re.split(r"\n\s*\n", text.strip("\n")) if block.strip()]
    parts = [pd.read_fwf(io.StringIO("\n".join(re.sub(r"\s*\\$", "", line) for line in block.splitlines())),
                         index_col=0) for block in blocks]
    return pd.concat(parts, axis=1)


def duration(notebook: str, cell: str) -> float:
    """Seconds the first code cell of a committed notebook whose source contains `cell` took (papermill's record)."""
    path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    for c in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if c["cell_type"] == "code" and cell in "".join(c["source"]):
            return float(c["metadata"]["papermill"]["duration"])
    raise LookupError(f"No code cell of {path} contains {cell!r}: update babel_utils/run/facts.py to the notebook.")


def _in(notebook: str | Path, cell: str, pattern: str, group: int | str = 1) -> Callable[[], str]:
    """A reader of one thing a cell prints."""
    return lambda: found(pattern, output(notebook, cell), group)


def _p(p: float) -> str:
    return f"{p:.3g}"


def _table(run: str, name: str) -> pd.DataFrame:
    """A committed results table of a many-language run (figures/<run>/tables/)."""
    return pd.read_csv(FIGURES_DIR / run / "tables" / f"{name}.csv", keep_default_na=False)


def _mantel(run: str, reference: str, controlling: str = "") -> Callable[[], str]:
    """A Mantel test's r and p from a run's committed table: "+0.61 (p = 0.0001)"."""
    def read() -> str:
        t = _table(run, "mantel_tests")
        row = t[(t["reference"] == reference) & (t["controlling_for"] == controlling)].iloc[0]
        return f"{float(row['mantel_r']):+.2f} (p = {_p(float(row['p_value']))})"
    return read


def _ari(run: str, grouping: str) -> Callable[[], str]:
    def read() -> str:
        t = _table(run, "cluster_recovery")
        row = t[t["grouping"] == grouping].iloc[0]
        return f"{float(row['ari']):.2f} (p = {_p(float(row['p_value']))})"
    return read


def _many(run: str, notebook: str) -> Path:
    return FIGURES_DIR / run / "notebooks" / f"{notebook}.ipynb"


def _first_sentence(notebook: str | Path, cell: str, starts: str) -> Callable[[], str]:
    """The sentence a cell prints that starts with `starts` (up to its full stop before a space or the end)."""
    return _in(notebook, cell, rf"({re.escape(starts)}.*?\.)(?:\s|$)")


def _evaluations() -> str:
    line = output("08_pruning_eval", 'print(f"{cfg.model}: {L} layers')
    masks, languages = found(r"(\d+) masks of (\d+) target languages", line, 1), found(r"of (\d+) target", line)
    return str(int(masks) + int(languages))


def _layerwise() -> str:
    text = output("08_pruning_eval", "layerwise_vs_sorting(")
    return ", ".join(re.findall(r"not distinguishable at this sample size in (\d+)", text))


_INTERVAL = r"[+-][\d.]+% \[[+-][\d.]+%, [+-][\d.]+%\]"


def _mildest() -> str:
    """The (mask, language) whose interval against the unpruned model has the lowest upper end."""
    text = output("08_pruning_eval", "against_dense(evals").split("\n\n", 1)[1]
    cells = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        languages = lines[0].split()[1:]
        for line in lines[2:]:
            for language, cell in zip([l for l in languages if l != "\\"], re.findall(_INTERVAL, line)):
                cells[(re.split(r"\s{2,}", line.strip())[0], language)] = cell
    (mask, language), cell = min(cells.items(), key=lambda kv: float(re.findall(r"([+-][\d.]+)%", kv[1])[-1]))
    return f"{mask} on {language}: bits per byte {cell} against the unpruned model"


def _mgsm_intervals() -> pd.DataFrame:
    table = printed_frame(output("08_pruning_eval", "task_intervals("))
    return table[table["task"] == "mgsm"]


def _mgsm(mask_prefix: str) -> Callable[[], str]:
    def read() -> str:
        table = _mgsm_intervals()
        values = table[table["mask"].str.startswith(mask_prefix)]["score"].astype(float)
        return f"{values.max():.1f} to {values.min():.1f}"
    return read


def _mgsm_accuracy() -> str:
    table = _mgsm_intervals()
    accuracy = table["accuracy"].astype(float)
    if (accuracy == 0).all():
        return f"0 for every mask (Wilson interval [0, {table['accuracy_high'].astype(float).max():.2f}])"
    return f"{accuracy.min():.2f} to {accuracy.max():.2f}"


def _depth(run: str, category: str, depth: str) -> Callable[[], str]:
    return lambda: str(int(_table(run, "depth_summary").set_index("depth").loc[depth, category]))


def _all_shared() -> str:
    return str(int(_table("udhr-all", "expert_category_totals")["shared"].iloc[0]))


def _all_specific() -> str:
    return str(int(_table("udhr-all", "expert_category_totals")["specific"].sum()))


def _same_genus_pairs(run: str) -> Callable[[], str]:
    return lambda: str(int(_table(run, "permutation_test")["n_same_genus_pairs"].iloc[0]))


def _permutation_p(run: str) -> Callable[[], str]:
    return lambda: _p(float(_table(run, "permutation_test")["p_value"].iloc[0]))


def _groups(run: str, grouping: str) -> Callable[[], str]:
    """How many languages, or groups of one kind, a many-language run holds (its cluster recovery table)."""
    def read() -> str:
        table = _table(run, "cluster_recovery")
        if grouping == "languages":
            return str(int(table["n_languages"].iloc[0]))
        return str(int(table.set_index("grouping").loc[grouping, "n_groups"]))
    return read


_ALL_05 = _many("udhr-all", "05_language_similarity")
_SPLIT_RACE = REPO_ROOT / "benchmarks" / "results" / "split_race.txt"  # benchmarks/bench_split_race.py --write
_DESCRIBE_05 = "describe_similarity(distance, cfg.similarity_metric))"

FACTS: dict[str, Fact] = {f.name: f for f in (
    Fact("kernels", "01_split: the machine line", _in("01_split", "describe_machine", r"torch CPU kernels (\w+)")),
    Fact("threads", "01_split: the machine line", _in("01_split", "describe_machine", r"\((\d+) threads")),
    Fact("01-race-4", "benchmarks/results/split_race.txt: the race against k-means-constrained",
         lambda: found(r"(Swap budget 4:.*?\.)\s", _SPLIT_RACE.read_text(encoding="utf-8"))),
    Fact("01-race-4-speed", "benchmarks/results/split_race.txt: the race against k-means-constrained",
         lambda: found(r"Swap budget 4:.*?time per layer: ([^;]*);", _SPLIT_RACE.read_text(encoding="utf-8"))),
    Fact("08-evaluations", "08_pruning_eval: masks and languages", _evaluations),
    Fact("08-main-seconds", "08_pruning_eval: the main comparison's cell (papermill's duration)",
         lambda: str(round(duration("08_pruning_eval", "held_out(cfg, model, tokenizer, labels, masks)")))),
    Fact("08-guided", "08_pruning_eval: guided against random",
         _first_sentence("08_pruning_eval", "verdict(comparison", "On this model and text")),
    Fact("08-dense", "08_pruning_eval: against the unpruned model",
         _first_sentence("08_pruning_eval", "against_dense(evals", "Of ")),
    Fact("08-mildest", "08_pruning_eval: the table against the unpruned model", _mildest),
    Fact("08-layerwise", "08_pruning_eval: layer-wise against sorting", _layerwise),
    Fact("08-own", "08_pruning_eval: the own mask's intervals",
         _first_sentence("08_pruning_eval", "own_mask_intervals(", "A language's own mask")),
    Fact("08-mgsm-dense", "08_pruning_eval: MGSM intervals", _mgsm("dense")),
    Fact("08-mgsm-sorting", "08_pruning_eval: MGSM intervals", _mgsm("sorting")),
    Fact("08-mgsm-random", "08_pruning_eval: MGSM intervals", _mgsm("random")),
    Fact("08-mgsm-accuracy", "08_pruning_eval: MGSM intervals", _mgsm_accuracy),
    Fact("default-partial-genealogy-vocabulary", "05_language_similarity: Mantel tests",
         _in("05_language_similarity", "describe_mantel(",
             r"genealogy \(controlling for vocabulary\): Mantel (r = [+-][\d.]+, p = [\d.]+)")),
    *(Fact(f"all-mantel-{ref}", "figures/udhr-all/tables/mantel_tests.csv", _mantel("udhr-all", ref))
      for ref in ("vocabulary", "script", "genealogy", "syntax", "phonology", "geography")),
    *(Fact(f"all-partial-{ref}-{ctrl}", "figures/udhr-all/tables/mantel_tests.csv", _mantel("udhr-all", ref, ctrl))
      for ref, ctrl in (("genealogy", "script"), ("genealogy", "vocabulary"), ("script", "vocabulary"))),
    *(Fact(f"all-ari-{g}", "figures/udhr-all/tables/cluster_recovery.csv", _ari("udhr-all", g))
      for g in ("script", "genus", "family")),
    Fact("all-ari-layers", "udhr-all 05: cluster recovery per layer",
         lambda: " ".join(re.findall(r"Layer by layer, (?:genus|script) is recovered beyond chance in \d+ of \d+ "
                                     r"layers \([\d, ]+\); its highest ARI is [\d.]+ at layer \d+\.",
                                     output(_ALL_05, "recovery_table(")))),
    Fact("all-permutation", "udhr-all 05: the permutation test",
         _first_sentence(_ALL_05, "describe_permutation(", "Permutation test on")),
    Fact("all-nearest", "udhr-all 05: nearest neighbours",
         _in(_ALL_05, _DESCRIBE_05, r"(Of the \d+ languages that have a relative of the same genus here, \d+ have "
                                    r"one as nearest neighbour)")),
    Fact("all-per-layer", "udhr-all 05: per layer",
         _in(_ALL_05, "describe_per_layer(", r"(Same-genus pairs are more alike than different-family "
                                                       r"pairs in \d+ of \d+ layers)")),
    Fact("all-closest", "udhr-all 05: the closest pair",
         _in(_ALL_05, _DESCRIBE_05, r"(By 1 - Pearson r, the closest pair is [^)]*\)[^)]*\)[^)]*\))")),
    Fact("all-shared", "figures/udhr-all/tables/expert_category_totals.csv", _all_shared),
    Fact("all-specific", "figures/udhr-all/tables/expert_category_totals.csv", _all_specific),
    Fact("all-shared-shallow", "figures/udhr-all/tables/depth_summary.csv", _depth("udhr-all", "shared", "shallow")),
    Fact("all-specific-middle", "figures/udhr-all/tables/depth_summary.csv", _depth("udhr-all", "specific", "middle")),
    Fact("all-families", "udhr-all 04: families",
         lambda: found(r"^(.*?\n.*?)\n", output(_many("udhr-all", "04_shared_experts"),
                                                 "describe_families(")).replace("\n", " ")),
    *(Fact(f"{run.split('-')[1]}-{grouping}", f"figures/{run}/tables/cluster_recovery.csv", _groups(run, grouping))
      for run in ("udhr-all", "udhr-genera") for grouping in ("languages", "family", "genus", "script")),
    *(Fact(f"genera-mantel-{ref}", "figures/udhr-genera/tables/mantel_tests.csv", _mantel("udhr-genera", ref))
      for ref in ("script", "vocabulary", "genealogy")),
    Fact("genera-partial-genealogy-vocabulary", "figures/udhr-genera/tables/mantel_tests.csv",
         _mantel("udhr-genera", "genealogy", "vocabulary")),
    Fact("genera-same-genus-pairs", "figures/udhr-genera/tables/permutation_test.csv", _same_genus_pairs("udhr-genera")),
    Fact("genera-permutation-p", "figures/udhr-genera/tables/permutation_test.csv", _permutation_p("udhr-genera")),
)}


def marks(text: str) -> list[tuple[str, str]]:
    """(name, value) of every fact marked in a document's text."""
    return [(m["name"], m["value"]) for m in MARK.finditer(text)]


def problems(root: Path = REPO_ROOT) -> list[str]:
    """Every marked value that differs from its source, every unknown mark and every fact marked nowhere."""
    out, used = [], set()
    for document in DOCUMENTS:
        for name, value in marks((root / document).read_text(encoding="utf-8")):
            used.add(name)
            if name not in FACTS:
                out.append(f"{document}: unknown fact {name!r} (FACTS in babel_utils/run/facts.py names the known ones)")
            elif value != FACTS[name].read():
                out.append(f"{document}: {name} says {value!r}, {FACTS[name].source} says {FACTS[name].read()!r}")
    out += [f"fact {name!r} is marked in none of {', '.join(DOCUMENTS)}" for name in FACTS if name not in used]
    return out


def write(root: Path = REPO_ROOT) -> list[str]:
    """Write every marked value from its source; the documents changed."""
    changed = []
    for document in DOCUMENTS:
        path = root / document
        text = path.read_text(encoding="utf-8")
        new = MARK.sub(lambda m: (f"<!-- fact:{m['name']} -->{FACTS[m['name']].read()}<!-- /fact -->"
                                  if m["name"] in FACTS else m.group(0)), text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(document)
    return changed


def main(argv: list[str] | None = None) -> int:
    """`python -m babel_utils.run.facts [--check]`: write the documents' facts from their sources, or check them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences (exit 1 if any)")
    args = parser.parse_args(argv)
    if not args.check:
        for document in write():
            print(f"updated {document}")
    found_problems = problems()
    for problem in found_problems:
        print(problem, file=sys.stderr)
    return 1 if found_problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
