"""`babel run`: bad input ends in a clear error before anything is written."""

from __future__ import annotations

import pytest

from babel_utils.core import paths
from babel_utils.core.paths import CONFIGS_DIR
from babel_utils.run import cli

SMOKE = str(CONFIGS_DIR / "smoke.yaml")


@pytest.mark.parametrize("args, words", [
    (["--set", "model=gpt-nano"], ["Unknown model", "gpt-nano", "gemma-3-270m"]),
    (["--set", "languages=[en, xx]"], ["unknown language", "xx"]),
    (["--set", "n_expert=4"], ["Unknown config key", "n_expert"]),
    (["--set", "n_experts=24"], ["n_experts=24 does not divide d_ff=256", "choose a divisor"]),
    (["--set", "text_source=files", "--set", "text_files={en: EMPTY, fr: EMPTY, hi: EMPTY}"],
     ["en", "empty"]),
    (["--only", "09"], ["unknown notebook", "09"]),
    # what 05, 06 and 08 would have found only midway through the run
    (["--set", "similarity_metric=cosin"], ["Unknown similarity metric", "cosin", "pearson"]),
    (["--set", "task_methods=[sorting, magnitude]"], ["Unknown pruning method", "magnitude", "layerwise"]),
    (["--set", "tuning_lr=2"], ["tuning_lr", "a number in (0, 1)"]),
    (["--set", "tuning_params=ffn"], ["tuning_params", "ffn", "mlp"]),
])
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, capsys, args, words):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    args = [a.replace("EMPTY", str(empty)) for a in args]
    assert cli.main(["run", SMOKE, *args]) == 2
    message = capsys.readouterr().err
    for word in words:
        assert word.lower() in message.lower(), message
    assert not paths.runs_dir().exists() or not any(paths.runs_dir().iterdir())
    assert not paths.stage_cache_dir().exists()


def test_missing_config_file(capsys):
    assert cli.main(["run", "configs/nope.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("notebook, key, value", [
    ("05", "similarity_metric", "euclidean"), ("05", "linkage_method", "ward"), ("08", "task_ratio", 0.5),
    ("08", "task_methods", ["sorting"]), ("04", "sweep_thresholds", [0.1]), ("07", "overlap_ratio", 0.1),
    ("01", "kmeans_swap_rounds", 4),
])
def test_every_notebook_knob_is_a_config_field_that_set_reaches(notebook, key, value):
    from babel_utils.core import config
    from babel_utils.run import runner
    cfg = config.load_config(SMOKE, [f"{key}={value}"])
    (path,) = runner.notebooks([notebook])
    got = runner.notebook_parameters(cfg, path)[key]
    assert (list(got) if isinstance(got, tuple) else got) == value


def test_every_parameter_a_notebook_declares_is_a_config_field_but_the_run_selector():
    import papermill as pm

    from babel_utils.core import config
    from babel_utils.run import runner
    for path in runner.notebooks():
        loose = sorted(set(pm.inspect_notebook(str(path))) - set(config.FIELD_NAMES) - set(config.RUN_SELECTOR))
        assert not loose, f"{path.name} declares parameters that `babel run --set` cannot reach: {loose}"


def test_the_runner_passes_a_notebook_its_run_name_and_its_own_knobs_only():
    from babel_utils.core import config
    from babel_utils.run import runner
    cfg = config.load_config(SMOKE)
    for path in runner.notebooks():
        got = runner.notebook_parameters(cfg, path)
        assert list(got) == ["run_name", *config.NOTEBOOK_KNOBS[path.name[:2]]], path.name
        assert all(got[k] == cfg.to_dict()[k] for k in got)


def test_side_by_side_starts_a_notebook_only_after_what_it_reads_and_never_more_than_jobs(tmp_path):
    import threading
    import time
    from pathlib import Path

    from babel_utils.run import runner
    notebooks = [Path(f"{n}_x.ipynb") for n in ("01", "02", "03", "04", "05", "07", "08", "09")]
    events, lock, active = [], threading.Lock(), [0]

    def one(notebook):
        with lock:
            events.append(("start", notebook.name[:2]))
            active[0] += 1
            assert active[0] <= 2
        time.sleep(0.02)
        with lock:
            active[0] -= 1
            events.append(("end", notebook.name[:2]))

    class Bar:
        def update(self, n=1): pass
        def set_postfix_str(self, text): pass

    runner._side_by_side(notebooks, one, 2, Bar())
    order = {event: i for i, event in enumerate(events)}
    for key, reads in [("02", ["01"]), ("03", ["02"]), ("08", ["07"]), ("09", ["01", "02", "03", "04", "05", "07", "08"])]:
        assert all(order[("end", r)] < order[("start", key)] for r in reads), (key, events)
    assert {k for what, k in events if what == "end"} == {nb.name[:2] for nb in notebooks}


@pytest.mark.parametrize("args, words", [
    (["dequantize", "gemma-9"], ["No built-in model ['gemma-9']", "gemma-3-270m"]),
    (["machine", "--env", "avx3"], ["Unknown kernel set 'avx3'", "avx2"]),
])
def test_the_helper_commands_name_bad_input(capsys, args, words):
    assert cli.main(args) == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message, message


def test_a_run_leaves_the_repository_figures_alone_and_publishing_replaces_a_notebooks_figures(tmp_path, monkeypatch):
    """`babel run` writes figures only under runs/; --publish replaces the published notebooks' figures in
    figures/<run name>/ (a figure a notebook no longer draws goes) and leaves the other notebooks' figures."""
    import matplotlib.pyplot as plt

    from babel_utils import figures
    from babel_utils.run import runner

    draws = {"01": ["01_a"], "02": ["02_new"]}
    nbs = [tmp_path / "nb" / f"{n}_x.ipynb" for n in draws]
    import nbformat

    empty = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('run_name = "default"',
                                                                       metadata={"tags": ["parameters"]})],
                                     metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
    for nb in nbs:
        nb.parent.mkdir(exist_ok=True)
        nbformat.write(empty, nb)
    original = nbs[0].read_text()
    monkeypatch.setattr(runner, "notebooks", lambda only=(): [nb for nb in nbs if not only or nb.name[:2] in only])

    def execute(notebook, out, parameters):
        for stem in draws[notebook.name[:2]]:
            figures.save_figure(plt.figure(), stem, out)
        (out / notebook.name).write_text('{"executed": true}')
        return out / notebook.name

    monkeypatch.setattr(runner, "execute", execute)
    published = paths.figures_dir("smoke")
    (published / "02_old.png").parent.mkdir(parents=True)
    (published / "02_old.png").write_bytes(b"stale")
    result = runner.run(SMOKE)
    assert sorted(p.name for p in paths.run_figures_dir(result.run_dir).iterdir()) == [
        "01_a.pdf", "01_a.png", "02_new.pdf", "02_new.png"]
    assert sorted(p.name for p in published.iterdir()) == ["02_old.png"]  # a user's run: nothing published
    assert nbs[0].read_text() == original
    draws["01"] = ["01_b"]
    runner.run(SMOKE, only=["01"], publish=True)
    assert sorted(p.name for p in paths.run_figures_dir(result.run_dir).iterdir()) == [
        "01_b.pdf", "01_b.png", "02_new.pdf", "02_new.png"]  # 01_a is no longer drawn: gone from the run too
    assert sorted(p.name for p in published.iterdir()) == ["01_b.pdf", "01_b.png", "02_old.png"]
    assert nbs[0].read_text() == '{"executed": true}' and nbs[1].read_text() == original


def test_durations_read_as_a_person_says_them():
    from babel_utils.run.runner import minutes
    assert [minutes(s) for s in (0.4, 48.2, 59.6, 519.0, 3600)] == ["0 s", "48 s", "1 min 0 s", "8 min 39 s",
                                                                     "60 min 0 s"]


def test_babel_run_ends_by_saying_where_everything_is_and_what_to_open_first(monkeypatch, capsys, tmp_path):
    from pathlib import Path

    from babel_utils.run import runner

    run_dir = tmp_path / "runs" / "smoke"
    result = runner.RunResult(run_dir=run_dir, notebooks=[run_dir / "01_split.ipynb", run_dir / "02_record.ipynb"],
                              seconds={"01_split.ipynb": 30.0, "02_record.ipynb": 50.0})
    monkeypatch.setattr(runner, "run", lambda *args, **kwargs: result)
    assert cli.main(["run", SMOKE]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Done: 2 notebook(s) in 0 s, everything under ") and out[0].endswith("smoke/")
    assert out[1] == "  executed notebooks: 01_split.ipynb, 02_record.ipynb"
    assert out[-1] == f"Open {Path(run_dir / '01_split.ipynb')} first (`make lab` starts JupyterLab)."
