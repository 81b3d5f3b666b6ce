"""mkdocs hooks: the site is built straight from the repository's own files, at the paths they have there.

README.md (the home page), BENCHMARKS.md, docs/*.md, the executed notebooks (notebooks/ and each committed run's
under figures/<run>/notebooks/) and the figures keep their relative paths, so every link written for GitHub works
unchanged and nothing is copied on disk. Two changes at build time, in memory:
- `<!-- fact:NAME -->...<!-- /fact -->` marks go (their text stays): Python-Markdown reads a line that starts with
  an HTML comment as a raw HTML block, which would cut a list item in two.
- a link to a figure folder (`figures/default/`) goes to a generated gallery page of that folder's PNGs.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files, InclusionLevel

FACT = re.compile(r"<!-- /?fact(:[^>]*)? -->")
FIGURE_FOLDER_LINK = re.compile(r"\]\(((?:\.\./)*figures/[^/)\s]+)/\)")


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the .ipynb files into pages
def on_files(files: Files, config) -> Files:
    """Add the repository's pages, notebooks and figures to the site at their repository paths."""
    repo = Path(config.config_file_path).resolve().parent

    def add(src_uri: str, path: Path) -> None:
        files.append(File.generated(config, src_uri, abs_src_path=str(path)))

    add("index.md", repo / "README.md")
    add("BENCHMARKS.md", repo / "BENCHMARKS.md")
    for page in sorted((repo / "docs").glob("*.md")):
        add(f"docs/{page.name}", page)
    notebooks = sorted((repo / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    notebooks += sorted((repo / "figures").glob("*/notebooks/[0-9][0-9]_*.ipynb"))
    for notebook in notebooks:  # a plain File: mkdocs-jupyter cannot read a generated one
        files.append(File(str(notebook.relative_to(repo)), str(repo), config.site_dir, config.use_directory_urls))
    for run in sorted(p for p in (repo / "figures").iterdir() if p.is_dir()):
        pngs = sorted(run.glob("*.png"))
        for png in pngs:
            add(f"figures/{run.name}/{png.name}", png)
        gallery = [f"# Figures: {run.name}\n", f"Every figure of `figures/{run.name}/` ({len(pngs)} PNG files; "
                                                "a PDF of each is beside it in the repository).\n"]
        gallery += [f"## {png.stem}\n\n![{png.stem}]({png.name})\n" for png in pngs]
        files.append(File.generated(config, f"figures/{run.name}/index.md", content="\n".join(gallery),
                                    inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Drop the fact marks and send links to a figure folder to its gallery page."""
    return FIGURE_FOLDER_LINK.sub(r"](\1/index.md)", FACT.sub("", markdown))
