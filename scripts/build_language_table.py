"""Build the language table (babel_utils/resources/languages.json) and the URIEL features file
(babel_utils/resources/uriel_features.json.gz) from the shipped UDHR archive and URIEL.

Usage: pip install -e '.[uriel]'            # lang2vec 1.1.2: URIEL, offline, generation time only
       python scripts/extract_udhr.py package/declaration babel_utils/resources/udhr
       python scripts/build_language_table.py [--check]
Reads babel_utils/resources/udhr/udhr.jsonl.gz (scripts/extract_udhr.py) and lang2vec's data files
family_features.npz (genealogical paths) and feature_predictions.npz (kNN-completed syntax,
phonology and inventory features). The rules (codes, names, family, genus, script) are those of the
babel_utils.core.languages module docstring. --check writes nothing and fails unless the shipped files are
exactly what it would write.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import language_rules as R  # noqa: E402  (beside this script)

from babel_utils.core import languages as L  # noqa: E402
from babel_utils.core.paths import LANGUAGES_TABLE, UDHR_ARCHIVE_NAME, UDHR_DIR, URIEL_FEATURES  # noqa: E402

# The paper's nine rows as they were hand-written before this table: they must come out unchanged.
PAPER_ROWS = [
    ("en", "English", "Indo-European", "Germanic", "Latin"),
    ("fr", "French", "Indo-European", "Romance", "Latin"),
    ("es", "Spanish", "Indo-European", "Romance", "Latin"),
    ("pt", "Portuguese", "Indo-European", "Romance", "Latin"),
    ("hi", "Hindi", "Indo-European", "Indic", "Devanagari"),
    ("ur", "Urdu", "Indo-European", "Indic", "Arabic"),
    ("bn", "Bengali", "Indo-European", "Indic", "Bengali"),
    ("ar", "Arabic", "Afro-Asiatic", "Semitic", "Arabic"),
    ("zh", "Chinese", "Sino-Tibetan", "Sinitic", "Han"),
]
FEATURE_SETS = {"syntax_knn": "S_", "phonology_knn": "P_", "inventory_knn": "INV_"}  # lang2vec's names
NO_PLACE = -75  # the udhr package's latitude for a declaration without a place (Antarctica)
ISO3 = re.compile(r"[a-z]{3}")
MAX_SUFFIX = 12  # a longer parenthesis ("Unified Quichua, old Hispanic orthography") gives way to the file name


def lang2vec_data() -> Path:
    spec = importlib.util.find_spec("lang2vec")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("lang2vec is not installed: pip install 'lang2vec==1.1.2' (or pip install -e '.[uriel]').")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


class Uriel:
    """Genealogical paths of URIEL's family_features.npz: the FAM nodes a language belongs to, ordered
    from the largest (the family) to the smallest; nodes of equal size keep URIEL's (pre-)order."""

    def __init__(self, data_dir: Path) -> None:
        fam = np.load(data_dir / "family_features.npz")
        self.members = fam["data"][:, :, 0] > 0
        self.nodes = [str(f).removeprefix("F_") for f in fam["feats"]]
        self.index = {str(code): i for i, code in enumerate(fam["langs"])}
        self.size = self.members.sum(axis=0)
        pred = np.load(data_dir / "feature_predictions.npz")
        self.feature_langs = {str(code): i for i, code in enumerate(pred["langs"])}
        self.feature_names = [str(f) for f in pred["feats"]]
        self.features = pred["data"][:, :, 0]

    def path(self, code: str) -> list[str]:
        if code not in self.index:
            return []
        nodes = sorted(np.nonzero(self.members[self.index[code]])[0], key=lambda j: (-self.size[j], j))
        for outer, inner in zip(nodes, nodes[1:]):  # a path is a chain of nested groups
            assert not (self.members[:, inner] & ~self.members[:, outer]).any(), (code, outer, inner)
        return [self.nodes[j] for j in nodes]

    def lookup(self, record: dict) -> tuple[str, list[str]]:
        """(URIEL code, path) of a declaration: its ISO code (via URIEL_CODES), else its file name where
        that is an ISO code with a path; ("", []) when URIEL does not have it; (code, []) for an isolate."""
        iso = R.URIEL_CODES.get(record["iso639_3"], record["iso639_3"])
        candidates = [iso] + ([record["udhr"]] if ISO3.fullmatch(record["udhr"]) else [])
        for code in candidates:
            path = self.path(code)
            if path:
                return code, path
        return (iso, []) if iso in self.index else ("", [])

    def feature_bits(self, code: str) -> dict[str, str]:
        row = self.features[self.feature_langs[code]]
        return {name: "".join(str(int(row[j])) for j, f in enumerate(self.feature_names) if f.startswith(prefix))
                for name, prefix in FEATURE_SETS.items()}


def uninvert(name: str) -> str:
    """The UDHR's catalogue names read forwards: "Arabic, Standard" -> "Standard Arabic",
    "Azerbaijani, North (Latin)" -> "North Azerbaijani (Latin)"."""
    base, paren = re.match(r"^(.*?)(\s*\(.*\))?$", name).groups()
    parts = [p.strip() for p in base.split(",")]
    if len(parts) == 2 and all(parts):
        base = f"{parts[1]} {parts[0]}"
    return base + (paren or "")


def parenthesis(name: str) -> str:
    match = re.search(r"\(([^()]*)\)\s*$", name)
    return match.group(1) if match else ""


def assign_codes(records: list[dict]) -> dict[str, str]:
    """UDHR file name -> code, by the rules of the babel_utils.core.languages docstring."""
    two_letter: dict[str, str] = {}
    for r in records:
        primary = r["bcp47"].split("-")[0]
        if len(primary) == 2:
            two_letter.setdefault(r["iso639_3"], primary)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[two_letter.get(r["iso639_3"], r["bcp47"].split("-")[0])].append(r)
    tag_count = Counter(r["bcp47"].lower() for r in records)
    codes: dict[str, str] = {}
    for primary, members in sorted(groups.items()):
        if primary in R.DEFAULT_DECLARATIONS:
            default = next(r for r in members if r["udhr"] == R.DEFAULT_DECLARATIONS[primary])
        else:
            bare = [r for r in members if r["bcp47"] == primary] or members
            default = min(bare, key=lambda r: (r["udhr"] != r["iso639_3"], bool(parenthesis(r["name"])), r["udhr"]))
        codes[default["udhr"]] = primary
        for r in sorted(members, key=lambda r: r["udhr"]):
            if r is default:
                continue
            subtags = r["bcp47"].split("-")[1:]
            tag = "-".join([primary] + subtags)
            suffix = r["udhr"].removeprefix(r["iso639_3"]).strip("_") or r["udhr"]
            named = R.slug(parenthesis(r["name"]))
            for candidate in ([tag] if subtags and tag_count[r["bcp47"].lower()] == 1 else []) + \
                    [f"{primary}-{named}" if 0 < len(named) <= MAX_SUFFIX else "",
                     f"{primary}-{R.slug(suffix)}", f"{primary}-{R.slug(r['udhr'])}"]:
                if candidate and candidate.lower() not in {c.lower() for c in codes.values()}:
                    codes[r["udhr"]] = candidate
                    break
            else:
                raise AssertionError(f"no free code for {r['udhr']}")
    return codes


def build(archive: Path, uriel: Uriel) -> tuple[list[dict], dict]:
    with gzip.open(archive, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    codes = assign_codes(records)
    rows = []
    for r in records:
        code = codes[r["udhr"]]
        name = R.PAPER_NAMES.get(r["udhr"], uninvert(r["name"]))
        uriel_code, path = uriel.lookup(r)
        family, genus = R.family_and_genus(path, re.sub(r"\s*\(.*\)$", "", name)) if uriel_code else ("", "")
        text = "\n".join(r["articles"])
        placed = r["latitude"] != NO_PLACE
        rows.append({
            "code": code, "name": name, "family": family, "genus": genus, "script": R.detect_script(text),
            "iso639_3": r["iso639_3"], "udhr": r["udhr"], "bcp47": r["bcp47"], "path": path,
            "latitude": r["latitude"] if placed else None, "longitude": r["longitude"] if placed else None,
            "direction": r["direction"], "uriel": uriel_code, "aliases": [],
            "article_chars": [len(t) for t in r["articles"]],
        })
    by_code = {row["code"]: row for row in rows}
    default_of_iso = {}
    for row in rows:
        if "-" not in row["code"]:
            default_of_iso.setdefault(row["iso639_3"], row["code"])
    taken = {c.lower() for c in by_code}
    alias_owner: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        for alias in (row["bcp47"], row["udhr"], row["iso639_3"] if default_of_iso.get(row["iso639_3"]) == row["code"]
                      else ""):
            if alias and alias.lower() not in taken:
                alias_owner[alias.lower()].add(row["code"])
    for row in rows:
        row["aliases"] = sorted({a for a in (row["bcp47"], row["udhr"], row["iso639_3"])
                                 if a and alias_owner.get(a.lower()) == {row["code"]}})
    paper = [by_code[c] for c in L.PAPER_LANGUAGES]
    rest = sorted((row for row in rows if row["code"] not in L.PAPER_LANGUAGES), key=lambda x: x["code"].lower())
    rows = paper + rest
    got = [(r["code"], r["name"], r["family"], r["genus"], r["script"]) for r in paper]
    assert got == PAPER_ROWS, f"the paper's rows changed: {got}"
    features = {"source": "lang2vec 1.1.2 (URIEL), feature_predictions.npz: kNN-completed, 0/1 per feature",
                "sets": {name: [f for f in uriel.feature_names if f.startswith(prefix)]
                         for name, prefix in FEATURE_SETS.items()},
                "languages": {code: uriel.feature_bits(code) for code in sorted({r["uriel"] for r in rows} - {""})
                              if code in uriel.feature_langs}}
    return rows, features


def table_text(rows: list[dict]) -> str:
    """The table as JSON, one row a line (readable diffs)."""
    body = ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows)
    head = ('{"source": "scripts/build_language_table.py from udhr@6.0.0 (babel_utils/resources/udhr) and '
            'URIEL via lang2vec 1.1.2; rules in the babel_utils.core.languages docstring",\n"languages": [\n')
    return head + body + "\n]}\n"


def gzip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as fh:
        fh.write(text.encode("utf-8"))
    return buffer.getvalue()


def main(check: bool = False) -> int:
    rows, features = build(UDHR_DIR / UDHR_ARCHIVE_NAME, Uriel(lang2vec_data()))
    outputs = {LANGUAGES_TABLE: table_text(rows).encode("utf-8"),
               URIEL_FEATURES: gzip_bytes(json.dumps(features, ensure_ascii=False, sort_keys=True))}
    with_family = sum(1 for r in rows if r["family"] and r["script"])
    print(f"{len(rows)} languages, {with_family} with family and script, "
          f"{len({r['family'] for r in rows if r['family']})} families, {len({r['script'] for r in rows})} scripts; "
          f"not in URIEL: {[r['code'] for r in rows if not r['uriel']]}; "
          f"isolates: {[r['code'] for r in rows if r['uriel'] and not r['path']]}")
    if check:
        differ = [p.name for p, data in outputs.items() if not p.exists() or p.read_bytes() != data]
        print("identical" if not differ else f"differ: {differ}")
        return 1 if differ else 0
    for path, data in outputs.items():
        path.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
