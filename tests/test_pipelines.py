"""Pipelines beyond the default run, through papermill (make test-pipelines; CI runs it after make test): the
whole notebook pipeline on a tiny model of another FFN kind (a plain FFN with biases, GPT-NeoX / Pythia's
layout: configs/smoke-plain.yaml; a native mixture of experts, OLMoE's layout: configs/smoke-moe.yaml), and the
analyses on 30 languages (configs/smoke-many.yaml)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_notebooks_smoke import EXPECTED, _expand

from babel_utils import figures
from babel_utils.core import config, paths
from babel_utils.core.languages import get_language
from babel_utils.models.adapters import NATIVE, PLAIN, get_adapter
from babel_utils.models.loading import load_model
from babel_utils.run import runner

pytestmark = pytest.mark.pipelines


# what only a split has (a split to score and race, granularities, other splits): a native model writes none
SPLIT_ONLY = {"01_split_objective", "expert_grid.parquet", "05_expert_grid", "split_comparison.parquet",
              "split_intervals.parquet", "08_split_comparison"}


@pytest.mark.parametrize("name, kind", [("smoke-plain", PLAIN), ("smoke-moe", NATIVE)])
def test_every_notebook_runs_on_a_tiny_model_of_another_ffn_kind(name, kind):
    cfg = config.load_config(paths.CONFIGS_DIR / f"{name}.yaml")
    model, _ = load_model(cfg.model, device="cpu")
    assert get_adapter(model).kind == kind
    result = runner.run(paths.CONFIGS_DIR / f"{name}.yaml", jobs=2)
    res, figs = paths.results_dir(result.run_dir), paths.run_figures_dir(result.run_dir)
    missing, unexpected = [], []
    for nb in result.notebooks:
        files, stems = EXPECTED.get(nb.name[:2], ([], []))
        wanted = [res / f for f in _expand(files, cfg, nb.name[:2])]
        wanted += [figs / f"{s}.{ext}" for s in _expand(stems, cfg, nb.name[:2]) for ext in ("png", "pdf")]
        for path in wanted:
            split_only = kind == NATIVE and (path.name in SPLIT_ONLY or path.stem in SPLIT_ONLY)
            if path.exists() == split_only:
                (unexpected if split_only else missing).append(path.name)
    assert len(result.notebooks) == 8 and not missing and not unexpected, (missing, unexpected)
    labels = np.load(res / "labels.npy")
    speed = pd.read_parquet(res / "pruned_speed.parquet")  # 08 checked masked = physically pruned before timing
    kept = speed.set_index("contender")["FFN share kept"]
    if kind == PLAIN:  # the rows of fc1 split into balanced experts
        assert labels.shape == (4, 256) and (np.bincount(labels[0]) == 256 // cfg.n_experts).all()
        assert (kept < 1).sum() == 2
        return
    # native: the model's own experts, counted by its routers (top-2 of 8 in each of 4 layers), pruned on them
    np.testing.assert_array_equal(labels, np.tile(np.arange(8), (4, 1)))
    assert pd.read_parquet(res / "expert_kind.parquet")["kind"].tolist() == ["native"]
    freqs = pd.read_parquet(res / "frequencies.parquet")
    per_layer = freqs.groupby(["language", "layer"]).agg(count=("count", "sum"), n_tokens=("n_tokens", "first"))
    assert (per_layer["count"] == 2 * per_layer["n_tokens"]).all()
    specs = pd.read_parquet(res / "mask_specs.parquet")
    assert "dynamic" not in set(specs["method"]) and {"threshold", "sorting", "layerwise", "random"} <= set(specs["method"])
    assert kept["sorting@0.5"] == 0.5


def test_thirty_languages_run_with_the_views_that_scale_and_06_08_on_a_subset():
    cfg = config.load_config(paths.CONFIGS_DIR / "smoke-many.yaml")
    assert len(cfg.languages) == 30 > figures.MANY_LANGUAGES and len(cfg.eval_languages) == 3
    result = runner.run(paths.CONFIGS_DIR / "smoke-many.yaml", jobs=2)
    res, figs = paths.results_dir(result.run_dir), paths.run_figures_dir(result.run_dir)
    missing = []
    for nb in result.notebooks:
        files, stems = EXPECTED.get(nb.name[:2], ([], []))
        missing += [f"results/{f}" for f in _expand(files, cfg, nb.name[:2]) if not (res / f).exists()]
        missing += [f"figures/{s}.png" for s in _expand(stems, cfg, nb.name[:2]) if not (figs / f"{s}.png").exists()]
    assert len(result.notebooks) == 8 and not missing, f"missing outputs: {missing}"
    stats = pd.read_parquet(res / "heatmap_stats.parquet")
    assert stats["language"].tolist() == list(cfg.languages)
    # 03 draws the paper's languages among the thirty one by one, and the grid holds all thirty
    singles = {p.name for p in figs.glob("03_heatmap_*.png")} - {"03_heatmaps_grid.png", "03_heatmaps_grid_ordered.png"}
    assert singles == {f"03_heatmap_{c}{s}.png" for c in ("en", "fr", "hi", "ar", "zh") for s in ("", "_ordered")}
    # 04 summarises every family with two or more of the thirty
    sizes = pd.Series([get_language(c).family for c in cfg.languages]).value_counts()
    families = pd.read_parquet(res / "family_summary.parquet").set_index("family")["n_languages"]
    assert families.to_dict() == sizes[sizes >= 2].to_dict() and len(families) >= 4
    # 06-08 ran on the subset only, with the frequencies 02 counted on all thirty
    subset = set(cfg.eval_languages)
    assert set(pd.read_parquet(res / "tuned_frequencies.parquet")["language"]) == subset
    assert set(pd.read_parquet(res / "mask_specs.parquet")["language"]) == subset
    assert set(pd.read_parquet(res / "pruning_eval.parquet")["language"]) == subset
    recovered = pd.read_parquet(res / "cluster_recovery.parquet").set_index("grouping")
    assert recovered.loc["family", "n_groups"] > 10 and recovered["n_languages"].eq(30).all()
    mantel = pd.read_parquet(res / "mantel_tests.parquet")
    assert mantel["n_languages"].max() >= 25  # URIEL and the coordinates cover most of them
