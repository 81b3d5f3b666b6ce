"""Pipelines beyond the default run, through papermill (make test-pipelines; CI runs it after make test): the
whole notebook pipeline on a tiny model of another FFN kind (a plain FFN with biases, GPT-NeoX / Pythia's
layout: configs/smoke-plain.yaml), and the analyses on 30 languages (configs/smoke-many.yaml)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_notebooks_smoke import EXPECTED, _expand

from babel_utils import config, paths, plotting, runner
from babel_utils.adapters import PLAIN, get_adapter
from babel_utils.models import load_model

pytestmark = pytest.mark.pipelines


@pytest.mark.parametrize("name, kind", [("smoke-plain", PLAIN)])
def test_every_notebook_runs_on_a_tiny_model_of_another_ffn_kind(name, kind):
    cfg = config.load_config(paths.CONFIGS_DIR / f"{name}.yaml")
    model, _ = load_model(cfg.model, device="cpu")
    assert get_adapter(model).kind == kind
    result = runner.run(paths.CONFIGS_DIR / f"{name}.yaml", jobs=2)
    res, figs = paths.results_dir(result.run_dir), paths.run_figures_dir(result.run_dir)
    missing = []
    for nb in result.notebooks:
        files, stems = EXPECTED.get(nb.name[:2], ([], []))
        missing += [f"results/{f}" for f in _expand(files, cfg.languages) if not (res / f).exists()]
        missing += [f"figures/{s}.{ext}" for s in _expand(stems, cfg.languages) for ext in ("png", "pdf")
                    if not (figs / f"{s}.{ext}").exists()]
    assert len(result.notebooks) == 8 and not missing, f"missing outputs: {missing}"
    labels = np.load(res / "labels.npy")  # the rows of fc1 split into balanced experts
    assert labels.shape == (4, 256) and (np.bincount(labels[0]) == 256 // cfg.n_experts).all()
    speed = pd.read_parquet(res / "pruned_speed.parquet")  # 08 checked masked = physically pruned before timing
    assert (speed["FFN share kept"] < 1).sum() == 2


def test_the_analyses_run_on_thirty_languages_with_the_views_that_scale():
    cfg = config.load_config(paths.CONFIGS_DIR / "smoke-many.yaml")
    assert len(cfg.languages) == 30 > plotting.MANY_LANGUAGES
    result = runner.run(paths.CONFIGS_DIR / "smoke-many.yaml", only=["01", "02", "03", "04", "05"], jobs=2)
    res, figs = paths.results_dir(result.run_dir), paths.run_figures_dir(result.run_dir)
    missing = []
    for nb in result.notebooks:
        files, stems = EXPECTED.get(nb.name[:2], ([], []))
        missing += [f"results/{f}" for f in _expand(files, cfg.languages) if not (res / f).exists()]
        missing += [f"figures/{s}.png" for s in _expand(stems, cfg.languages) if not (figs / f"{s}.png").exists()]
    assert len(result.notebooks) == 5 and not missing, f"missing outputs: {missing}"
    stats = pd.read_parquet(res / "heatmap_stats.parquet")
    assert stats["language"].tolist() == list(cfg.languages)
    recovered = pd.read_parquet(res / "cluster_recovery.parquet").set_index("grouping")
    assert recovered.loc["family", "n_groups"] > 10 and recovered["n_languages"].eq(30).all()
    mantel = pd.read_parquet(res / "mantel_tests.parquet")
    assert mantel["n_languages"].max() >= 25  # URIEL and the coordinates cover most of them
