"""The numbers the documents repeat from the committed outputs, each read from the output that states it.

A document marks such a number `<!-- fact:NAME -->VALUE<!-- /fact -->` (the marks do not show in rendered
Markdown). FACTS says where each NAME is read: a cell's output in a committed executed notebook, a committed
results table, the committed reference values. `python -m babel_utils.facts` writes every marked value from its
source (maintainers, after `make notebooks`); `python -m babel_utils.facts --check` (and tests/test_facts.py)
fails where a document says something else, marks a fact that does not exist, or a fact is marked nowhere.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .paths import FIGURES_DIR, NOTEBOOKS_DIR, REPO_ROOT

DOCUMENTS: tuple[str, ...] = ("README.md", "BENCHMARKS.md")
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
    """The text output of the first code cell of a committed notebook whose source contains `cell`."""
    path = Path(notebook) if Path(notebook).suffix else NOTEBOOKS_DIR / f"{notebook}.ipynb"
    for source, text in _cells(path):
        if cell in source:
            return text
    raise LookupError(f"No code cell of {path} contains {cell!r}: update babel_utils/facts.py to the notebook.")


def found(pattern: str, text: str, group: int | str = 1) -> str:
    """The group of the first match of `pattern` in `text`, or an error naming the pattern."""
    match = re.search(pattern, text, re.S)
    if match is None:
        raise LookupError(f"{pattern!r} is no longer in the output it is read from: update babel_utils/facts.py.")
    return match.group(group)


def _in(notebook: str, cell: str, pattern: str, group: int | str = 1) -> Callable[[], str]:
    """A reader of one number a cell prints."""
    return lambda: found(pattern, output(notebook, cell), group)


FACTS: dict[str, Fact] = {f.name: f for f in (
    Fact("kernels", "01_split: the machine line", _in("01_split", "describe_machine", r"torch CPU kernels (\w+)")),
    Fact("threads", "01_split: the machine line", _in("01_split", "describe_machine", r"\((\d+) threads")),
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
                out.append(f"{document}: unknown fact {name!r} (FACTS in babel_utils/facts.py names the known ones)")
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
    """`python -m babel_utils.facts [--check]`: write the documents' facts from their sources, or check them."""
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
