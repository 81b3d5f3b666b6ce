"""Check a built documentation site: every <img>, stylesheet, script and internal link resolves to a file of the
site (anchors included), and no page fetches anything from outside (`make docs` runs it on build/site)."""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

FETCHED = {"a": ["href"], "link": ["href"], "img": ["src"], "script": ["src"], "source": ["src"]}


class _Page(HTMLParser):
    """The references and anchors of one HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if values.get(key):
                self.ids.add(str(values[key]))
        for key in FETCHED.get(tag, []):
            if values.get(key) is not None:
                self.refs.append((tag, str(values[key])))


def problems(site: Path) -> tuple[int, list[str]]:
    """(internal references checked, what is wrong): missing files, missing anchors, resources from outside."""
    site = site.resolve()
    pages: dict[Path, _Page] = {}

    def page(path: Path) -> _Page:
        if path not in pages:
            pages[path] = _Page(path.read_text(encoding="utf-8"))
        return pages[path]

    found, checked = [], 0
    for html in sorted(site.rglob("*.html")):
        for tag, ref in page(html).refs:
            url = urlsplit(ref)
            if url.scheme in ("data", "mailto", "javascript") or (ref == "" and tag == "script"):
                continue  # inline figures, or nbconvert's empty MathJax placeholder: nothing is fetched
            if url.scheme or url.netloc:
                if tag != "a":  # a page that fetches from the network does not work offline
                    found.append(f"{html.relative_to(site)}: <{tag}> from outside: {ref[:120]}")
                continue
            checked += 1
            base = site if url.path.startswith("/") else html.parent
            target = (base / unquote(url.path).lstrip("/")).resolve() if url.path else html
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site not in target.parents:
                found.append(f"{html.relative_to(site)}: <{tag}> {ref} points at nothing")
            elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in page(target).ids:
                found.append(f"{html.relative_to(site)}: <{tag}> {ref}: no anchor #{url.fragment}")
    return checked, found


def main(argv: list[str] | None = None) -> int:
    """`python scripts/check_site.py [SITE]`: exit 1 and list the problems if there are any."""
    site = Path((argv or sys.argv[1:] or ["build/site"])[0])
    if not (site / "index.html").is_file():
        print(f"No site at {site}: build it with `make docs`.", file=sys.stderr)
        return 2
    checked, found = problems(site)
    print(f"{checked} internal references checked, {len(found)} problems")
    print("\n".join(found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
