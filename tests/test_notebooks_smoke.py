"""Every notebook of notebooks/ runs through papermill on configs/smoke.yaml (a tiny random Gemma 3) and writes
what it promises. A pipeline test (make test-pipelines, which CI runs after make test): make test executes the
same notebooks on the real default model under nbval."""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

from babel_utils import figures
from babel_utils.core import config, paths
from babel_utils.run import runner

pytestmark = pytest.mark.pipelines

SMOKE = paths.CONFIGS_DIR / "smoke.yaml"

# Per notebook: result files under results/ and figure stems under figures/ (PNG and PDF each).
# "{lang}" expands to every language of the smoke config.
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "01": (["labels.npy", "expert_kind.parquet", "split_layers.parquet"], ["01_split_objective"]),
    "02": (["frequencies.parquet", "tokens.parquet", "activation_levels.parquet", "block_counts_{lang}.npy",
            "block_tokens_{lang}.npy"], ["02_activation_level"]),  # the heatmaps are 03's
    "03": (["heatmap_stats.parquet", "layer_profile.parquet"],
           ["03_heatmaps_grid", "03_heatmaps_grid_ordered", "03_heatmap_{single}", "03_heatmap_{single}_ordered",
            "03_layer_distribution", "03_layer_boxplot"]),
    "04": (["expert_counts_per_layer.parquet", "expert_category_totals.parquet", "shared_experts.parquet",
            "family_summary.parquet", "depth_summary.parquet", "threshold_sweep.parquet", "depth_sweep.parquet"],
           # no family figure: the smoke languages (en, fr, hi) make no two families to compare (04 says why)
           ["04_category_totals", "04_counts_per_layer", "04_category_map", "04_threshold_sweep", "04_depth_sweep"]),
    "05": (["similarity_matrices.parquet", "similarity_per_layer.parquet", "similarity_per_layer_curve.parquet",
            "similarity_pairs.parquet", "permutation_test.parquet", "expert_grid.parquet", "mantel_tests.parquet",
            "cluster_recovery.parquet", "cluster_recovery_per_layer.parquet", "mds_map.parquet"],
           # no permutation-test figure: the smoke languages (en, fr, hi) share no genus
           ["05_similarity_matrices", "05_dendrogram", "05_similarity_per_layer", "05_similarity_per_layer_curve",
            "05_pair_intervals", "05_expert_grid", "05_cluster_recovery", "05_mds_map"]),
    "06": (["tuned_frequencies.parquet", "tuning_per_layer.parquet", "tuning_top_layer.parquet",
            "tuning_overlap.parquet", "tuning_history.parquet"],
           ["06_tuning_loss", "06_difference_heatmaps", "06_change_per_layer", "06_high_frequency_overlap"]),
    "07": (["masks.npy", "mask_specs.parquet", "mask_table.parquet", "mask_overlap.parquet"],
           ["07_pruned_share_per_layer", "07_mask_overlap", "07_kept_by_a_pruned_by_b", "07_keep_drop_map"]),
    "08": (["pruning_eval.parquet", "guided_vs_random.parquet", "against_dense.parquet", "layerwise_vs_sorting.parquet",
            "cross_language.parquet", "own_mask_intervals.parquet", "split_comparison.parquet",
            "split_intervals.parquet", "task_items.parquet", "task_intervals.parquet", "pruned_speed.parquet"],
           ["08_bits_per_byte_vs_ratio", "08_against_dense", "08_benchmarks", "08_cross_language",
            "08_split_comparison"]),
}


def _expand(names: list[str], cfg: config.BabelConfig, notebook: str) -> list[str]:
    """The file names of a notebook's outputs: {lang} for each language it runs on (06-08: eval_languages),
    {single} for each language 03 draws one by one."""
    langs = config.evaluation_view(cfg).languages if notebook in config.EVALUATION_NOTEBOOKS else cfg.languages
    singles = figures.one_by_one(cfg.heatmap_languages, cfg.languages)
    out = []
    for name in names:
        for lang in langs if "{lang}" in name else singles if "{single}" in name else ("",):
            out.append(name.format(lang=lang, single=lang))
    return out


def test_all_notebooks_run_on_the_smoke_config(capfd, caplog, monkeypatch):
    cfg = config.load_config(SMOKE)
    present = runner.notebooks()
    assert present, "no notebook in notebooks/"
    monkeypatch.setenv("TQDM_DISABLE", "")  # the terminal's bar over the notebooks (the kernels' stay off)
    start = time.perf_counter()
    with caplog.at_level(logging.INFO):
        result = runner.run(SMOKE, jobs=2)  # 03-07 side by side once 02 is done (tiny: the kernels' start-up)
    seconds = time.perf_counter() - start
    # what the person at the terminal sees: one bar over the notebooks, one line per finished notebook, none of
    # papermill's four lines per notebook, and no kernel transport warning
    terminal = capfd.readouterr().err
    assert f"{cfg.run_name}: 100%" in terminal and f"{len(present)}/{len(present)}" in terminal, terminal[-2000:]
    assert "without encryption" not in terminal
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sorted(m.split()[0] for m in said if " done in " in m) == [nb.name for nb in present], said
    assert not [r for r in caplog.records if r.name.startswith("papermill") and r.levelno < logging.WARNING]
    assert [nb.name for nb in result.notebooks] == [nb.name for nb in present]
    assert all(nb.exists() for nb in result.notebooks)
    res, figs = paths.results_dir(result.run_dir), paths.run_figures_dir(result.run_dir)
    missing = []
    for nb in present:
        files, stems = EXPECTED.get(nb.name[:2], ([], []))
        missing += [f"results/{f}" for f in _expand(files, cfg, nb.name[:2]) if not (res / f).exists()]
        missing += [f"figures/{s}.{ext}" for s in _expand(stems, cfg, nb.name[:2]) for ext in ("png", "pdf")
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
    # papermill on one notebook with a changed upstream value: 07 on frequencies recorded at another
    # top_fraction stops, naming the key, both values and the fix (it never builds masks from them)
    import papermill as pm

    pruning_nb = next(nb for nb in present if nb.name.startswith("07"))
    with runner.quiet_environment(), pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(pruning_nb), str(result.run_dir / "mixed.ipynb"), cwd=str(pruning_nb.parent),
                            parameters={"run_name": cfg.run_name, "overrides": {"top_fraction": 0.2}},
                            progress_bar=False,
                            kernel_manager_class=runner.local_kernel_manager(result.run_dir))
    message = err.value.evalue
    assert "top_fraction=0.1" in message and "top_fraction=0.2" in message and "Rerun 02_record" in message
    assert len(pd.read_parquet(res / "mask_specs.parquet")) > 0  # the masks of the run stay as they were
    print(f"smoke run of {len(present)} notebooks: {seconds:.0f} s; per notebook: "
          + ", ".join(f"{k[:2]} {v:.0f} s" for k, v in result.seconds.items()))

