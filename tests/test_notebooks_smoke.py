"""Every notebook of notebooks/ runs through papermill on configs/smoke.yaml and writes what it promises."""

from __future__ import annotations

import time

import pandas as pd

from babel_utils import config, paths, runner

SMOKE = paths.CONFIGS_DIR / "smoke.yaml"

# Per notebook: result files under results/ and figure stems under figures/ (PNG and PDF each).
# "{lang}" expands to every language of the smoke config.
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "01": (["labels.npy", "split_layers.parquet"], ["01_split_objective"]),
    "02": (["frequencies.parquet", "tokens.parquet", "activation_levels.parquet", "block_counts_{lang}.npy",
            "block_tokens_{lang}.npy"], ["02_activation_level", "02_frequency_heatmaps"]),
    "03": (["heatmap_stats.parquet", "layer_profile.parquet"],
           ["03_heatmaps_grid", "03_heatmaps_grid_ordered", "03_heatmap_{lang}", "03_heatmap_{lang}_ordered",
            "03_layer_distribution", "03_layer_boxplot"]),
    "04": (["expert_counts_per_layer.parquet", "expert_category_totals.parquet", "shared_experts.parquet",
            "depth_summary.parquet", "threshold_sweep.parquet", "depth_sweep.parquet"],
           ["04_category_totals", "04_counts_per_layer", "04_category_map", "04_threshold_sweep",
            "04_depth_sweep"]),
    "05": (["similarity_matrices.parquet", "similarity_per_layer.parquet", "similarity_per_layer_curve.parquet",
            "similarity_pairs.parquet", "permutation_test.parquet", "expert_grid.parquet"],
           # no permutation-test figure: the smoke languages (en, fr, hi) share no genus
           ["05_similarity_matrices", "05_dendrogram", "05_similarity_per_layer", "05_similarity_per_layer_curve",
            "05_pair_intervals", "05_expert_grid"]),
    "06": (["tuned_frequencies.parquet", "tuning_per_layer.parquet", "tuning_top_layer.parquet",
            "tuning_overlap.parquet", "tuning_history.parquet"],
           ["06_tuning_loss", "06_difference_heatmaps", "06_change_per_layer", "06_high_frequency_overlap"]),
}


def _expand(names: list[str], languages: tuple[str, ...]) -> list[str]:
    return [n.format(lang=lang) for n in names for lang in (languages if "{lang}" in n else ("",))]


def test_all_notebooks_run_on_the_smoke_config():
    cfg = config.load_config(SMOKE)
    present = runner.notebooks()
    assert present, "no notebook in notebooks/"
    start = time.perf_counter()
    result = runner.run(SMOKE)
    seconds = time.perf_counter() - start
    assert [nb.name for nb in result.notebooks] == [nb.name for nb in present]
    assert all(nb.exists() for nb in result.notebooks)
    res, figs = paths.results_dir(result.run_dir), paths.run_figures_dir(result.run_dir)
    missing = []
    for nb in present:
        files, stems = EXPECTED.get(nb.name[:2], ([], []))
        missing += [f"results/{f}" for f in _expand(files, cfg.languages) if not (res / f).exists()]
        missing += [f"figures/{s}.{ext}" for s in _expand(stems, cfg.languages) for ext in ("png", "pdf")
                    if not (figs / f"{s}.{ext}").exists()]
    assert not missing, f"missing outputs: {missing}"
    # the analyses read the same languages and grid the smoke config names
    if "03" in {nb.name[:2] for nb in present}:
        stats = pd.read_parquet(res / "heatmap_stats.parquet")
        assert stats["language"].tolist() == list(cfg.languages)
    if "06" in {nb.name[:2] for nb in present}:
        tuned = pd.read_parquet(res / "tuned_frequencies.parquet")
        base = pd.read_parquet(res / "frequencies.parquet")
        assert tuned[["language", "layer", "expert"]].equals(base[["language", "layer", "expert"]])
    print(f"smoke run of {len(present)} notebooks: {seconds:.0f} s; per notebook: "
          + ", ".join(f"{k[:2]} {v:.0f} s" for k, v in result.seconds.items()))

