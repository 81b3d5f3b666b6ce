"""A browsable HTML report of runs: executed notebooks as HTML, an index per run, a cross-model page."""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import nbformat
import numpy as np
from nbconvert import HTMLExporter
from scipy.cluster import hierarchy

from .. import figures
from ..analyse import categories, similarity
from ..core import results
from ..core.config import load_config
from ..core.paths import results_dir, run_figures_dir
from ..core.results import atomic_write_text
from ..record import frequencies

log = logging.getLogger(__name__)

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "img{max-width:100%;border:1px solid #ddd} .grid{display:grid;"
         "grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1em} table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left} .failed{color:#b00}")


@dataclass
class RunStatus:
    """One run of a sweep: its config, folder, and the failure if it failed."""

    config: str
    run_dir: Path | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run finished."""
        return not self.error


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _rel(path: Path, start: Path) -> str:
    return html.escape(os.path.relpath(path, start))


def notebook_html(notebook: Path, target: Path) -> Path:
    """Render one executed notebook to a self-contained HTML page (figures embedded)."""
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(notebook, as_version=4))
    atomic_write_text(target, body)
    return target


def run_report(run: Path, out: Path) -> Path:
    """HTML of a run's executed notebooks and an index page linking them and its figures."""
    run, out = Path(run), Path(out)
    items = []
    for notebook in sorted(run.glob("[0-9][0-9]_*.ipynb")):
        page = notebook_html(notebook, out / f"{notebook.stem}.html")
        items.append(f"<li><a href='{_rel(page, out)}'>{html.escape(notebook.stem)}</a></li>")
    failed = sorted((run / "failed").glob("*.ipynb")) if (run / "failed").exists() else []
    for notebook in failed:
        page = notebook_html(notebook, out / f"{notebook.stem}.failed.html")
        items.append(f"<li class='failed'><a href='{_rel(page, out)}'>{html.escape(notebook.stem)} (failed)</a></li>")
    pngs = sorted(run_figures_dir(run).glob("*.png"))
    tiles = "".join(f"<figure><a href='{_rel(f, out)}'><img src='{_rel(f, out)}'></a>"
                    f"<figcaption>{html.escape(f.stem)}</figcaption></figure>" for f in pngs)
    config = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    body = (f"<h2>Notebooks</h2><ul>{''.join(items)}</ul><h2>Figures</h2><div class='grid'>{tiles}</div>"
            f"<h2>Config</h2><pre>{html.escape(config)}</pre>")
    index = out / "index.html"
    atomic_write_text(index, _page(f"Run {run.name}", body))
    return index


def _model_label(run: Path) -> str:
    config = run / "config.yaml"
    return f"{run.name} ({load_config(config).model})" if config.exists() else run.name


def cross_model_figures(runs: Sequence[Path], out: Path) -> list[Path]:
    """Side by side for every run with frequencies: shared experts per layer, and language dendrograms."""
    runs = [r for r in runs if results.find(results_dir(r), "frequencies") is not None]
    if not runs:
        return []
    figures.set_style()
    fig_shared, axes_shared = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False,
                                           constrained_layout=True)
    fig_tree, axes_tree = plt.subplots(1, len(runs), figsize=(5.0 * len(runs), 3.8), squeeze=False,
                                       constrained_layout=True)
    for run, ax_s, ax_t in zip(runs, axes_shared[0], axes_tree[0]):
        threshold = load_config(run / "config.yaml").high_freq_threshold if (run / "config.yaml").exists() \
            else categories.HIGH_FREQ_THRESHOLD
        F, langs = frequencies.frequency_array(results.load(results_dir(run), "frequencies"))
        if len(langs) >= 2:
            shared = categories.shared_experts(F, threshold).sum(axis=1)
            ax_s.bar(np.arange(len(shared)), shared, color="C0")
            distance = similarity.as_distance(similarity.pearson_matrix(F, langs), "pearson")
            linkage, _ = similarity.dendrogram_linkage(distance)
            hierarchy.dendrogram(linkage, labels=[figures.language_name(l) for l in langs], ax=ax_t,
                                 orientation="right", color_threshold=0)
        ax_s.set(title=_model_label(run), xlabel="layer", ylabel=f"shared experts (f >= {threshold:g} in all)")
        ax_t.set(title=_model_label(run), xlabel="1 - Pearson r of frequency vectors")
    written = []
    for fig, name in [(fig_shared, "cross_model_shared_experts"), (fig_tree, "cross_model_dendrograms")]:
        path = out / f"{name}.png"
        results.atomic_write(path, lambda tmp, f=fig: f.savefig(tmp, format="png", dpi=120))
        plt.close(fig)
        written.append(path)
    return written


def sweep_report(statuses: Sequence[RunStatus], out: Path) -> Path:
    """The sweep's index: every run with its status and report, and the cross-model page."""
    out = Path(out)
    rows = []
    for status in statuses:
        link = ""
        if status.run_dir is not None and status.run_dir.exists():
            index = run_report(status.run_dir, out / status.run_dir.name)
            link = f"<a href='{_rel(index, out)}'>{html.escape(status.run_dir.name)}</a>"
        state = "ok" if status.ok else f"<span class='failed'>{html.escape(status.error)}</span>"
        rows.append(f"<tr><td>{html.escape(status.config)}</td><td>{link}</td><td>{state}</td></tr>")
    runs = [s.run_dir for s in statuses if s.run_dir is not None and s.run_dir.exists()]
    drawn = cross_model_figures(runs, out)
    images = "".join(f"<p><img src='{_rel(f, out)}'></p>" for f in drawn)
    cross = out / "cross_model.html"
    atomic_write_text(cross, _page("Across models", images or "<p>No run has frequencies yet.</p>"))
    body = (f"<table><tr><th>config</th><th>run</th><th>status</th></tr>{''.join(rows)}</table>"
            f"<p><a href='{_rel(cross, out)}'>Across models: shared experts per layer and language "
            f"dendrograms side by side</a></p>")
    index = out / "index.html"
    atomic_write_text(index, _page("Sweep", body))
    log.info("Report: %s", index)
    return index
