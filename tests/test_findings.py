"""The summaries of notebooks 03-06 on small hand-made frequency tables whose answers are known."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from babel_utils import figures
from babel_utils.analyse import categories as analysis  # noqa: E402
from babel_utils.analyse import similarity as sim
from babel_utils.core import config, results
from babel_utils.core.languages import LANGUAGES, PAPER_LANGUAGES  # noqa: E402
from babel_utils.record import frequencies

LANGS = ["en", "fr", "zh"]
PAPER = list(PAPER_LANGUAGES)
N_TOKENS = 1000


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _base(n_lang: int = 3, n_layers: int = 6, n_experts: int = 8) -> np.ndarray:
    return np.full((n_lang, n_layers, n_experts), 0.01)


def _table(F: np.ndarray, langs) -> pd.DataFrame:
    counts = {lang: np.rint(f * N_TOKENS).astype(np.int64) for lang, f in zip(langs, F)}
    return frequencies.make_table(counts, {lang: N_TOKENS for lang in langs})


def _genus_F(seed: int = 0, layers: int = 3, experts: int = 16) -> np.ndarray:
    """Paper languages: same genus close together, genera far apart."""
    rng = np.random.default_rng(seed)
    centre = {g: rng.random((layers, experts)) * 0.1 for g in sorted({LANGUAGES[c].genus for c in PAPER})}
    F = np.stack([centre[LANGUAGES[c].genus] + rng.normal(0, 0.002, (layers, experts)) for c in PAPER])
    return np.clip(F, 0.0, None)


# --- 03: heatmaps ------------------------------------------------------------------------------

def test_heatmap_stats_and_sentence():
    F = _base(3, 6, 8)
    F[0, 5, :3] = 0.3  # English: 3 high-frequency experts in the last layer
    F[2, 1, 7] = 0.9  # the hottest cell: Chinese, layer 1, expert 7
    F[1, 0, 0] = 0.0  # French never selects one expert
    stats = analysis.heatmap_stats(F, LANGS).set_index("language")
    assert stats.loc["en", "n_high_frequency"] == 3 and stats.loc["en", "layer_most_high_frequency"] == 5
    assert stats.loc["en", "high_frequency_deep"] == 3 and stats.loc["en", "high_frequency_shallow"] == 0
    assert stats.loc["zh", "max_frequency"] == pytest.approx(0.9)
    assert stats.loc["fr", "n_never_selected"] == 1 and stats.loc["en", "n_never_selected"] == 0
    text = analysis.describe_heatmaps(F, LANGS)
    assert "0.90 (Chinese, layer 1, expert 7)" in text
    assert "3 (75%) sit in the deep third" in text  # 3 English + 1 Chinese high-frequency cells
    assert "0 of 48 cells are never selected in any of the 3 languages" in text
    profile = analysis.layer_profile(F, LANGS)
    row = profile[(profile.language == "en") & (profile.layer == 5)].iloc[0]
    assert row["n_high_frequency"] == 3 and row["max"] == pytest.approx(0.3)
    assert len(profile) == 3 * 6


# --- 04: shared and specific experts ------------------------------------------------------------

def test_category_totals_and_shared_table():
    F = _base()
    F[:, 5, 3] = [0.2, 0.06, 0.05]  # shared
    F[:, 4, 4] = 0.1  # shared
    F[1, 0, 2] = 0.3  # French only
    F[:2, 2, 1] = 0.3  # English and French: high but neither shared nor specific
    totals = analysis.category_totals(F, LANGS).set_index("language")
    assert totals["high_frequency"].to_dict() == {"en": 3, "fr": 4, "zh": 2}
    assert totals["specific"].to_dict() == {"en": 0, "fr": 1, "zh": 0}
    assert (totals["shared"] == 2).all() and totals.loc["zh", "shared_share_of_high"] == 1.0
    shared = analysis.shared_expert_table(F, LANGS)
    assert shared[["layer", "expert"]].values.tolist() == [[4, 4], [5, 3]]
    assert shared.loc[1, "min_frequency"] == pytest.approx(0.05)
    text = analysis.describe_categories(totals.reset_index(), 48, 0.05)
    assert "between 2 (Chinese) and 4 (French) high-frequency experts of 48" in text
    assert "2 are shared by all 3 languages" in text and "from 0 (English) to 1 (French)" in text


def test_depth_sweep_finding_holds_across_thresholds():
    F = _base(3, 9, 8)
    F[:, 6:, :4] = 0.3  # 12 shared experts, deep, at every threshold up to 0.3
    F[:, 3, 0] = 0.06  # 1 shared in the middle, only at low thresholds
    F[0, :3, 5] = 0.15  # 3 English-specific experts, shallow, up to 0.15
    sweep = analysis.depth_sweep(F, LANGS, [0.02, 0.05, 0.1, 0.2])
    per_t = sweep.drop_duplicates("threshold").set_index("threshold")
    assert (per_t["most_shared"] == "deep").all()
    assert per_t["most_specific"].tolist() == ["shallow", "shallow", "shallow", "none"]
    assert sweep[(sweep.threshold == 0.05) & (sweep.depth == "middle")]["shared"].item() == 1
    assert sweep[(sweep.threshold == 0.1) & (sweep.depth == "middle")]["shared"].item() == 0
    by_layer = analysis.counts_by_layer(analysis.expert_counts_per_layer(F, LANGS, 0.05))
    assert by_layer.columns.tolist() == ["layer", "high_frequency_mean", "shared", "specific_all_languages"]
    assert by_layer.set_index("layer").loc[0, "specific_all_languages"] == 1
    assert by_layer.set_index("layer").loc[7, "shared"] == 4 and by_layer.shared.sum() == 13
    text = analysis.describe_depth_sweep(sweep, 0.05)
    assert "shared experts sit mostly in the deep layers at 4 of 4 thresholds (0.02, 0.05, 0.1, 0.2)" in text
    assert "language-specific experts sit mostly in the shallow layers at 3 of 4 thresholds" in text
    assert "none at 0.2" in text


def test_describe_tuning_diff_last_layer():
    rng = np.random.default_rng(0)
    base = rng.random((3, 6, 8)) * 0.02
    tuned = base + rng.normal(0, 1e-4, base.shape)
    tuned[:, 5] += 0.03  # the last layer changes most
    tuned[:2, 2] += 0.06  # ... except for English and French, where layer 2 changes more
    diff = analysis.instruction_tuning_diff(base, tuned, LANGS)
    summary = analysis.tuning_layer_summary(diff.per_layer)
    assert summary.set_index("layer")["rank"][2] == 1 and summary.set_index("layer")["rank"][5] == 2
    text = analysis.describe_tuning_diff(diff, 6)
    assert text.startswith("Averaged over languages, layer 2 of 6 (middle) changes most")
    assert "the last one (layer 5) for 1 of 3 languages" in text
    assert "0 shallow, 2 middle, 1 deep" in text


# --- loading and bad input ---------------------------------------------------------------------

def test_load_run_frequencies_errors(tmp_path):
    F = _base(3, 6, 8)
    labels = np.tile(np.arange(8).repeat(4), (6, 1))  # 6 layers, 32 neurons, 8 experts
    results.save(tmp_path, "frequencies", _table(F, LANGS))
    results.save(tmp_path, "labels", labels)
    cfg = config.BabelConfig(languages=LANGS, n_experts=8)
    table, got, langs = frequencies.load_run_frequencies(tmp_path, cfg)
    assert langs == LANGS and np.allclose(got, F)
    with pytest.raises(ValueError, match="config says n_experts=16"):
        frequencies.load_run_frequencies(tmp_path, cfg.replace(n_experts=16))
    with pytest.raises(ValueError, match="language ar has no counts"):
        frequencies.load_run_frequencies(tmp_path, cfg.replace(languages=["en", "ar"]))
    with pytest.raises(ValueError, match="needs at least 2"):
        frequencies.load_run_frequencies(tmp_path, cfg.replace(languages=["en"]), min_languages=2)
    results.save(tmp_path, "labels", np.tile(np.arange(16).repeat(2), (6, 1)))  # another n_experts
    with pytest.raises(ValueError, match="another model or n_experts"):
        frequencies.load_run_frequencies(tmp_path, cfg.replace(n_experts=16))
    with pytest.raises(FileNotFoundError, match="No result 'frequencies'"):
        frequencies.load_run_frequencies(tmp_path / "empty", cfg)


def test_check_same_tokens():
    a = _table(_base(), LANGS)
    frequencies.check_same_tokens(a, a)
    b = a.assign(n_tokens=np.where(a.language == "fr", 500, a.n_tokens))
    with pytest.raises(ValueError, match=r"'fr': \(1000, 500\)"):
        frequencies.check_same_tokens(a, b)


# --- 05: similarity summaries ------------------------------------------------------------------

def test_relation_and_pair_table():
    assert sim.relation("fr", "es") == "same genus"
    assert sim.relation("en", "hi") == "same family, other genus"
    assert sim.relation("ur", "ar") == "different family"
    D = pd.DataFrame([[0, 1, 3], [1, 0, 2], [3, 2, 0]], index=LANGS, columns=LANGS, dtype=float)
    pairs = sim.pair_table(D)
    assert pairs[["lang_a", "lang_b"]].values.tolist() == [["en", "fr"], ["fr", "zh"], ["en", "zh"]]
    assert pairs.relation.tolist() == ["same family, other genus", "different family", "different family"]
    low, high = D * 0.9, D * 1.1
    with_ci = sim.bootstrap_pairs(D, low, high, "euclidean")
    assert with_ci.loc[0, "low"] == pytest.approx(0.9) and with_ci.loc[0, "high"] == pytest.approx(1.1)
    # Pearson: the interval of r [0.5, 0.8] is the distance interval [0.2, 0.5]
    r = 1 - D / 10
    rp = sim.bootstrap_pairs(sim.as_distance(r, "pearson"), r - 0.05, r + 0.05, "pearson")
    assert rp.loc[0, "low"] == pytest.approx(0.05) and rp.loc[0, "high"] == pytest.approx(0.15)


def test_describe_similarity_nearest_neighbours_and_script():
    D = sim.euclidean_matrix(_genus_F(), PAPER)
    text = sim.describe_similarity(D, "euclidean")
    assert "Of the 6 languages that have a relative of the same genus here, 6 have one as nearest neighbour." in text
    assert "(same genus," in text.split("the farthest")[0]
    assert "follow the genus, not script" in sim.describe_script_vs_family(D)
    # Urdu placed beside Arabic: the script wins
    F = _genus_F()
    F[PAPER.index("ur")] = F[PAPER.index("ar")] + 1e-3
    assert "follow the script, not genus" in sim.describe_script_vs_family(sim.euclidean_matrix(F, PAPER))
    assert "cannot be told apart" in sim.describe_script_vs_family(D.loc[LANGS, LANGS])


def test_per_layer_curve_and_sentence():
    F = _genus_F(layers=4)
    F[:, 2] = F[0, 2]  # every language identical at layer 2
    per_layer = sim.per_layer_similarity(F, PAPER, "euclidean")
    curve = sim.per_layer_curve(per_layer)
    assert set(curve.group) == {"all pairs", "same genus", "different family"}
    allp = curve[curve.group == "all pairs"].set_index("layer")["value"]
    assert allp[2] == pytest.approx(0.0)
    assert allp[0] == pytest.approx(per_layer[per_layer.layer == 0]["value"].mean())
    text = sim.describe_per_layer(curve)
    assert "most alike at layer 2 (0)" in text
    assert "more alike than different-family pairs in 3 of 4 layers" in text


def test_genus_statistic_matches_the_permutation_test():
    D = sim.euclidean_matrix(_genus_F(), PAPER)
    test = sim.group_permutation_test(D, n_permutations=500, seed=0)
    assert sim.genus_statistic(D.to_numpy(), PAPER, "euclidean") == pytest.approx(test.observed)
    stack = np.stack([D.to_numpy(), 2 * D.to_numpy()])
    assert np.allclose(sim.genus_statistic(stack, PAPER, "euclidean"), [test.observed, 2 * test.observed])
    r = sim.pearson_matrix(_genus_F(), PAPER)
    assert sim.genus_statistic(r.to_numpy(), PAPER, "pearson") == pytest.approx(
        sim.group_permutation_test(sim.as_distance(r, "pearson"), n_permutations=10).observed)
    assert "significant at the 0.05 level" not in sim.describe_permutation(test, "euclidean").split("which is not")[0] \
        or test.p_value <= 0.05
    assert "so same-genus languages are more similar" in sim.describe_permutation(test, "euclidean")
    assert sim.genus_test_unavailable(PAPER) == ""
    reason = sim.genus_test_unavailable(["en", "fr", "hi"])
    assert "not possible" in reason and sim.describe_permutation(None, "pearson", reason=reason) == reason
    row = sim.test_table(test, None, "euclidean").iloc[0]
    assert row.p_value == test.p_value and np.isnan(row.bootstrap_low) and row.n_bootstrap == 0
    row = sim.test_table(test, (0.1, 0.2), "euclidean", 50).iloc[0]
    assert (row.bootstrap_low, row.bootstrap_high, row.n_bootstrap) == (0.1, 0.2, 50)
    assert np.isnan(sim.test_table(None, None, "pearson").iloc[0].p_value)


def test_bootstrap_samples_agree_with_bootstrap_matrix():
    rng = np.random.default_rng(0)
    counts = {lang: rng.integers(0, 50, (12, 3, 8)) for lang in PAPER}
    tokens = {lang: np.full(12, 100) for lang in counts}
    samples = sim.bootstrap_samples(counts, tokens, "pearson", n_bootstrap=30, seed=4)
    mean, low, high = sim.bootstrap_matrix(counts, tokens, "pearson", n_bootstrap=30, seed=4)
    m2, l2, h2 = sim.bootstrap_intervals(samples, PAPER)
    assert samples.shape == (30, 9, 9)
    assert np.allclose(m2, mean) and np.allclose(l2, low) and np.allclose(h2, high)
    point = sim.pearson_matrix(np.stack([counts[lang].sum(0) / 1200 for lang in PAPER]), PAPER)
    interval = sim.genus_interval(samples, point, PAPER, "pearson")
    stat = sim.genus_statistic(samples, PAPER, "pearson")
    observed = sim.genus_statistic(point.to_numpy(), PAPER, "pearson")
    assert interval == pytest.approx((2 * observed - np.percentile(stat, 97.5), 2 * observed - np.percentile(stat, 2.5)))
    m3, l3, h3 = sim.bootstrap_intervals(samples, PAPER, point=point)  # basic intervals around the point
    assert np.allclose(l3.to_numpy(), 2 * point.to_numpy() - high.to_numpy())
    assert np.allclose(h3.to_numpy(), 2 * point.to_numpy() - low.to_numpy())
    pairs = sim.bootstrap_pairs(sim.as_distance(point, "pearson"), l3, h3, "pearson")
    assert (pairs["low"] <= pairs["high"]).all() and (pairs["low"] >= 0).all()
    text = sim.describe_bootstrap(pairs, interval, "pearson", 30)
    assert text.startswith("Resampling blocks of text 30 times, the different-family minus same-genus gap")
    assert "includes zero" in text  # counts without structure
    with pytest.raises(ValueError, match="no counted tokens"):
        sim.bootstrap_samples(counts, {**tokens, "en": np.zeros(12)}, "pearson", 2)


def test_expert_grid_table_and_sentence():
    coarse = _genus_F(experts=8)
    fine = np.repeat(coarse, 4, axis=-1)  # the same structure at 32 experts: every distance doubles
    noise = np.random.default_rng(5).random((9, 3, 16)) * 0.1  # no structure at 16
    grid = sim.expert_grid_table({32: fine, 8: coarse, 16: noise}, PAPER, "euclidean", reference=32,
                                 n_permutations=500, seed=0)
    g = grid.set_index("n_experts")
    assert grid.n_experts.tolist() == [8, 16, 32] and g.loc[32, "spearman_vs_reference"] == pytest.approx(1.0)
    assert g.loc[8, "p_value"] < 0.05 and g.loc[32, "p_value"] < 0.05 and g.loc[16, "p_value"] > 0.05
    assert g.loc[8, "spearman_vs_reference"] == pytest.approx(1.0) and g.loc[16, "spearman_vs_reference"] < 0.8
    assert g.loc[32, "experts_total"] == 96
    text = sim.describe_grid(grid, 32)
    assert "significant at the 0.05 level for 2 of 3 granularities (8, 32)" in text
    with pytest.raises(ValueError, match="lacks the reference"):
        sim.expert_grid_table({8: coarse}, PAPER, "euclidean", reference=32)
    unavailable = sim.expert_grid_table({8: coarse[:3], 32: fine[:3]}, ["en", "fr", "hi"], "pearson", 32,
                                        n_permutations=10)
    assert unavailable.p_value.isna().all()
    assert "not possible" in sim.describe_grid(unavailable, 32)


# --- figures -----------------------------------------------------------------------------------

def _labelled(fig) -> bool:
    return any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes if ax.get_visible())


def test_new_figures_are_labelled():
    F = _genus_F(layers=6, experts=32)
    assert _labelled(figures.layer_boxplot(F, PAPER, 0.05))
    assert _labelled(figures.category_map(F, PAPER, 0.05, order=figures.order_by_mean_frequency(F)))
    assert _labelled(figures.category_totals_plot(analysis.category_totals(F, PAPER)))
    assert _labelled(figures.depth_sweep_plot(analysis.depth_sweep(F, PAPER, [0.02, 0.05])))
    mats = {m: sim.similarity_matrix(F, PAPER, m) for m in sim.METRICS}
    fig = figures.matrix_panels(mats)
    assert [ax.get_title() for ax in fig.axes[:4]] == [sim.METRICS[m].label for m in sim.METRICS]
    curve = sim.per_layer_curve(sim.per_layer_similarity(F, PAPER, "pearson"))
    assert _labelled(figures.per_layer_curve_plot(curve))
    D = sim.euclidean_matrix(F, PAPER)
    assert _labelled(figures.pair_interval_plot(sim.bootstrap_pairs(D, D * 0.9, D * 1.1, "euclidean"), "euclidean"))
    grid = sim.expert_grid_table({32: F, 16: F.reshape(9, 6, 16, 2).mean(-1)}, PAPER, "euclidean", 32,
                                 n_permutations=50)
    assert all(ax.get_xlabel() == "experts per layer" for ax in figures.expert_grid_plot(grid).axes)
    p_axis = figures.expert_grid_plot(grid.assign(p_value=[0.003, 0.03])).axes[1]
    assert [t.get_text() for t in p_axis.get_yticklabels()] == ["0.002", "0.005", "0.01", "0.02", "0.05"]
    untested = figures.expert_grid_plot(grid.assign(p_value=np.nan)).axes[1]  # no same-genus pair: no test
    assert [t.get_text() for t in untested.texts] == ["no genus test with these languages"]
    history = pd.DataFrame({"step": [1, 2], "loss": [2.0, 1.5], "target_tokens": [10, 10]})
    meta = {f"loss_{w}_{s}": 1.0 for w in ("before", "after") for s in ("train", "heldout")}
    assert _labelled(figures.tuning_loss_plot(history, meta))
    diff = analysis.instruction_tuning_diff(F, F * 1.1, PAPER)
    assert _labelled(figures.overlap_plot(diff.overlap))


def test_per_layer_all_metrics():
    F = _genus_F(layers=2, experts=8)
    df = sim.per_layer_all(F, PAPER)
    assert set(df.metric) == set(sim.METRICS)
    assert len(df[df.metric == "kl"]) == 2 * 72 and len(df[df.metric == "pearson"]) == 2 * 36
    one = sim.per_layer_similarity(F, PAPER, "euclidean")
    assert np.allclose(df[df.metric == "euclidean"]["value"].to_numpy(), one["value"].to_numpy())


def test_a_new_similarity_metric_is_one_table_entry(monkeypatch):
    """Cosine similarity added as one Metric: read as a similarity everywhere (distance 1 - value, the genus test
    still finds same-genus pairs closer, labels and colours follow), and listed with every metric."""
    def cosine(X, smoothing):
        unit = X / np.linalg.norm(X, axis=1, keepdims=True)
        return unit @ unit.T

    monkeypatch.setitem(sim.METRICS, "cosine", sim.Metric("cosine", "cosine similarity", cosine, similarity=True))
    F = _genus_F()
    M = sim.similarity_matrix(F, PAPER, "cosine")
    D = sim.as_distance(M, "cosine")
    assert np.allclose(D.to_numpy(), 1.0 - M.to_numpy(), atol=1e-12) and np.allclose(np.diag(D), 0.0)
    assert sim.genus_statistic(M.to_numpy(), PAPER, "cosine") > 0  # same genus closer than different families
    assert sim.genus_statistic(M.to_numpy(), PAPER, "cosine") == pytest.approx(
        sim.group_permutation_test(D, n_permutations=10).observed)
    assert "1 - cosine similarity" in sim.describe_similarity(D, "cosine")
    assert set(sim.matrices_table(F, PAPER).metric) == set(sim.METRICS) >= {"cosine"}
    assert "cosine" in set(sim.per_layer_all(F, PAPER).metric)
    curve = sim.per_layer_curve(sim.per_layer_similarity(F, PAPER, "cosine"))
    assert "most alike at layer" in sim.describe_per_layer(curve)
    fig = figures.matrix_panels({m: sim.similarity_matrix(F, PAPER, m) for m in sim.METRICS})
    assert "cosine similarity" in [ax.get_title() for ax in fig.axes]
    with pytest.raises(ValueError, match=r"Unknown similarity metric 'cosin'.*cosine.*a new one is a Metric entry"):
        sim.similarity_matrix(F, PAPER, "cosin")
