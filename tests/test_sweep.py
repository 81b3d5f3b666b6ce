"""`babel sweep` goes on past failed runs, lists them with the failing cell, and builds the report."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from babel_utils.core import paths
from babel_utils.core.paths import CONFIGS_DIR
from babel_utils.run import cli, runner


def write_notebook(path, *sources, tags=None):
    cells = [new_markdown_cell("# test")]
    cells.append(new_code_cell('run_name = "default"', metadata={"tags": ["parameters"]}))
    cells += [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, path)


def test_sweep_continues_past_failures_and_reports(tmp_path, monkeypatch, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_ok.ipynb", "print('fine', run_name)")
    write_notebook(notebooks / "02_fail.ipynb", "x = 1", "raise ValueError('planted failure')")
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", notebooks)
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: bad\nmodel: tiny-gpt\n")
    report = tmp_path / "report"
    code = cli.main(["sweep", str(CONFIGS_DIR / "smoke.yaml"), str(bad), "--report", str(report)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "0 of 2 runs finished" in printed
    assert "02_fail.ipynb failed at cell 4 (raise ValueError('planted failure'))" in printed and "planted failure" in printed
    assert "Unknown model 'tiny-gpt'" in printed
    smoke = paths.run_dir("smoke")
    assert (smoke / "01_ok.ipynb").exists() and (smoke / "failed" / "02_fail.ipynb").exists()
    assert not (smoke / "02_fail.ipynb").exists()
    index = (report / "index.html").read_text()
    assert "planted failure" in index and "Unknown model" in index
    assert (report / "smoke" / "01_ok.html").exists() and (report / "smoke" / "02_fail.failed.html").exists()
    assert (report / "cross_model.html").exists()
