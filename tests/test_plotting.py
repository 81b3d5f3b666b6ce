"""Every figure function returns a labelled figure; save_figure writes PNG and PDF atomically."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from babel_utils import figures
from babel_utils.analyse import categories as analysis  # noqa: E402
from babel_utils.analyse import similarity
from babel_utils.core import paths
from babel_utils.core.languages import PAPER_LANGUAGES  # noqa: E402

LANGS = list(PAPER_LANGUAGES)


@pytest.fixture(autouse=True)
def _close_figures():
    figures.set_style()
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def F() -> np.ndarray:
    return np.random.default_rng(0).random((len(LANGS), 18, 256)) ** 4 * 0.2


def _labels(fig):
    """(xlabel, ylabel) of every visible axes and the colour-bar labels of a figure."""
    axes = [ax for ax in fig.axes if ax.get_visible()]
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in axes]


def _assert_labelled(fig, cbar_label=None):
    labels = _labels(fig)
    assert any(x and y for x, y in labels), labels
    if cbar_label is not None:
        assert any(cbar_label in (x, y) for x, y in labels), labels


def test_heatmap_grid_shared_scale_and_order(F):
    fig = figures.heatmap_grid(F, LANGS, "Activation frequency")
    _assert_labelled(fig, figures.LOG_FREQ_LABEL)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == len(LANGS)
    assert {im.get_clim() for im in images} == {(figures.FREQ_FLOOR, float(F.max()))}  # one log scale for all
    assert all(type(im.norm).__name__ == "LogNorm" for im in images)
    titles = [ax.get_title() for ax in fig.axes]
    assert "English" in titles and "Chinese" in titles
    order = figures.order_by_mean_frequency(F)
    assert order.shape == (18, 256) and (order[:, 0] == F.mean(0).argmax(-1)).all()
    sorted_fig = figures.heatmap_grid(F, LANGS, "sorted", order=order)
    first = sorted_fig.axes[0].get_images()[0].get_array()
    assert np.allclose(first, np.clip(np.take_along_axis(F[0], order, axis=1), figures.FREQ_FLOOR, None))
    _assert_labelled(figures.heatmap_single(F[0], "en", order=order), figures.LOG_FREQ_LABEL)


def test_diff_heatmap_diverging_centred(F):
    fig = figures.diff_heatmap(F[:3] - F[3:6], LANGS[:3])
    _assert_labelled(fig, figures.DIFF_LABEL)
    vmin, vmax = fig.axes[0].get_images()[0].get_clim()
    assert vmin == -vmax and vmax > 0


def test_analysis_and_similarity_plots(F):
    counts = analysis.expert_counts_per_layer(F, LANGS, 0.05)
    sweep = analysis.threshold_sweep(F, LANGS, [0.01, 0.05, 0.1])
    dist = similarity.euclidean_matrix(F, LANGS)
    Z, _ = similarity.dendrogram_linkage(dist)
    per_layer = similarity.per_layer_similarity(F, LANGS, "pearson")
    perm = similarity.group_permutation_test(dist, n_permutations=200)
    diff = analysis.instruction_tuning_diff(F, F[::-1], LANGS)
    drawn = {
        "layer_distribution": figures.layer_distribution(F, LANGS),
        "counts": figures.counts_per_layer_plot(counts),
        "sweep": figures.threshold_sweep_plot(sweep),
        "permutation": figures.permutation_plot(perm),
        "change": figures.mean_abs_change_plot(diff.per_layer),
    }
    for fig in drawn.values():
        _assert_labelled(fig)
    _assert_labelled(figures.matrix_heatmap(dist, "Euclidean", "Euclidean distance"), "Euclidean distance")
    _assert_labelled(figures.per_layer_similarity_plot(per_layer), "Pearson r")
    dendro = figures.dendrogram_plot(Z, LANGS, distance_label="Euclidean distance")
    _assert_labelled(dendro)
    leaves = " ".join(t.get_text() for t in dendro.axes[0].get_yticklabels())
    assert "Urdu — Indo-European / Indic / Arabic script" in leaves and "Chinese" in leaves
    assert f"p = {perm.p_value:.3g}" in drawn["permutation"].axes[0].get_title()


def test_save_figure_writes_png_and_pdf_into_the_run_only(tmp_path, monkeypatch, F):
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "repo_figures")
    monkeypatch.delenv("BABEL_FIGURES_DIR", raising=False)
    fig = figures.heatmap_single(F[0], "en")
    figures.save_figure(fig, "heatmap_en", run_dir=tmp_path / "myrun")
    run = tmp_path / "myrun" / "figures"
    assert {p for p in tmp_path.rglob("*.p[dn][fg]")} == {run / "heatmap_en.png", run / "heatmap_en.pdf"}
    assert (run / "heatmap_en.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "heatmap_en.pdf").read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in run.iterdir()) == ["heatmap_en.pdf", "heatmap_en.png"]  # no temp files left
    assert plt.fignum_exists(fig.number)  # not closed: the notebook displays it
    figures.save_figure(fig, "only_repo.png")  # without a run: the repository's figures/
    assert {p.name for p in (tmp_path / "repo_figures").glob("only_repo.*")} == {"only_repo.png", "only_repo.pdf"}


def test_views_switch_to_scalable_ones_for_many_languages():
    """At 9 languages the per-language views stay; at 300 they become family-ordered matrices, grey lines with a
    median, the ends of the pair ranking, a tall tree: figures of bounded size with no legend entry per language."""
    import itertools

    from babel_utils.core.languages import LANGUAGES

    rng = np.random.default_rng(0)
    many = [c for c in LANGUAGES][:300]
    F = rng.random((len(many), 4, 8))
    fig = figures.layer_distribution(F, many)
    assert "profile" in fig.axes[1].get_title() and fig.get_size_inches()[1] < 20
    assert "share of the language's selections (%)" in [a.get_ylabel() for a in fig.axes]
    small = figures.layer_distribution(F[:9], many[:9])
    assert len(small.legends[0].get_texts()) == 9
    counts = analysis.expert_counts_per_layer(F, many, 0.5)
    fig = figures.counts_per_layer_plot(counts)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["median of 300 languages"]
    per_layer = similarity.per_layer_similarity(F[:40], many[:40], "pearson")
    fig = figures.per_layer_similarity_plot(per_layer)
    assert "each language's mean" in fig.axes[1].get_title() and fig.get_size_inches()[1] < 20
    pairs = pd.DataFrame([(a, b, float(rng.random()), "different family") for a, b in itertools.combinations(many[:40], 2)],
                         columns=["lang_a", "lang_b", "distance", "relation"]).sort_values("distance")
    fig = figures.pair_interval_plot(pairs, "pearson")
    assert len(fig.axes[0].get_yticks()) == 2 * figures.MANY_PAIRS and "of 780 pairs" in fig.axes[0].get_title()
    distance = similarity.as_distance(similarity.similarity_matrix(F, many, "pearson"), "pearson")
    linkage, _ = similarity.dendrogram_linkage(distance)
    fig = figures.dendrogram_plot(linkage, many)  # above 100 languages the tree is a circle
    assert fig.axes[0].name == "polar" and max(fig.get_size_inches()) <= 12
    # 03's grid: one language x (layer, expert) matrix instead of 300 panels; 9 languages keep their panels
    fig = figures.heatmap_grid(F, many, "grid")
    assert len(fig.axes) == 3 and fig.get_size_inches()[1] < 20  # family strip, matrix, colour bar
    assert fig.axes[1].images[0].get_array().shape == (300, 4 * 8)
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["0", "1", "2", "3"]
    assert len(figures.heatmap_grid(F[:9], many[:9], "grid").axes) == 9 + 1
    # 04's totals: points in family order, not 300 groups of bars
    totals = analysis.category_totals(F, many, 0.5)
    fig = figures.category_totals_plot(totals)
    assert fig.get_size_inches()[0] < 12 and len(fig.axes[0].collections[0].get_offsets()) == 300
    assert figures.one_by_one((), many) == [c for c in many if c in ("en", "fr", "es", "pt", "hi", "ur", "bn", "ar", "zh")]
    assert figures.one_by_one((), many[:9]) == many[:9] and figures.one_by_one(("fr",), many) == ["fr"]
    plt.close("all")


def test_the_family_summary_draws_each_family_against_its_random_groups():
    from babel_utils.analyse import families
    from babel_utils.core.languages import LANGUAGES

    many = list(LANGUAGES)[:300]
    F = np.random.default_rng(0).random((300, 4, 8))
    table = families.family_summary(F, many, 0.5, samples=20)
    fig = figures.family_summary_plot(table, 0.05)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{f} ({n})" for f, n in
                                                             zip(table["family"], table["n_languages"])]
    assert len(ax.patches) == len(table) and fig.get_size_inches()[1] < 0.3 * len(table) + 3
    stars = sum(t.get_text() == " *" for a in fig.axes for t in a.texts)
    assert stars == int((table["shared_p"] < 0.05).sum() + (table["own_p"] < 0.05).sum())
    plt.close("all")


def test_a_figure_that_would_compare_nothing_is_skipped_with_the_reason(tmp_path):
    from babel_utils.analyse import families

    F = np.random.default_rng(0).random((4, 4, 8))
    one_family = families.family_summary(F, ["en", "fr", "hi", "zh"], 0.5, samples=20)  # Chinese alone: no group
    skipped = figures.family_summary_plot(one_family, 0.05)
    assert isinstance(skipped, figures.Skipped) and "Indo-European (3 languages)" in skipped.reason
    assert figures.save_figure(skipped, "04_family_summary", tmp_path / "run") is skipped  # the cell shows why
    assert not (tmp_path / "run").exists()  # and nothing is written
    assert skipped._repr_markdown_().startswith("*No figure: a comparison of family groups needs two")


@pytest.mark.parametrize("n", [9, 300])
def test_the_mds_map_colours_families_marks_scripts_and_names_only_small_sets(n):
    from babel_utils.analyse import geometry
    from babel_utils.core.languages import LANGUAGES

    codes = list(LANGUAGES)[:n]
    points = np.random.default_rng(0).normal(size=(n, 3))
    d = pd.DataFrame(np.linalg.norm(points[:, None] - points[None], axis=-1), index=codes, columns=codes)
    coords, explained = geometry.classical_mds(d)
    fig = figures.mds_plot(coords, explained, "1 − Pearson r")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("MDS dimension 1 (") and "% of the variance" in ax.get_ylabel()
    assert len(ax.collections) == n and (len(ax.texts) == n) == (n <= 40)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.endswith(" script") for label in labels) and len(labels) <= 20
    plt.close(fig)


def test_the_threshold_sweep_names_its_lines_in_words_and_has_no_zero_on_a_log_axis(F):
    sweep = analysis.threshold_sweep(F, LANGS, [0.02, 0.05, 0.1, 0.2])
    fig = figures.threshold_sweep_plot(sweep)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "high_frequency_mean" not in legend and "high-frequency (mean per language)" in legend
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.02", "0.05", "0.1", "0.2"]
    assert ax.get_yscale() == ("log" if (sweep["count"] > 0).all() else "symlog")
    zero = sweep.assign(count=sweep["count"].where(sweep["category"] != "specific", 0))
    assert figures.threshold_sweep_plot(zero).axes[0].get_yscale() == "symlog"  # a 0 count stays drawable


def test_the_layer_boxplot_puts_the_share_above_the_threshold_in_its_own_panel(F):
    fig = figures.layer_boxplot(F, LANGS, threshold=0.05)
    top, bottom = fig.axes  # no twin axis sharing one frame
    assert top.get_ylabel() == figures.FREQ_LABEL and bottom.get_ylabel() == "share of experts\nwith f >= 0.05"
    assert [b.get_height() for b in bottom.patches] == pytest.approx(list((F >= 0.05).mean(axis=(0, 2))))
    assert len(figures.layer_boxplot(F, LANGS).axes) == 1


def test_readable_tables_never_switch_to_scientific_notation():
    table = pd.DataFrame({"en": [12.3456, 1283412290.0], "fr": [float("nan"), 9999.994]}, index=["dense", "random"])
    shown = figures.readable(table)
    assert shown.loc["dense", "en"] == "12.35" and shown.loc["random", "en"] == "1,283,412,290"
    assert shown.loc["dense", "fr"] == "" and shown.loc["random", "fr"] == "9999.99"


def _language_figures(n: int) -> dict:
    """Every view whose layout depends on the number of languages, drawn for `n` of them."""
    import itertools

    from babel_utils.analyse import families, geometry
    from babel_utils.core.languages import LANGUAGES

    rng = np.random.default_rng(1)
    langs = ([c for c in LANGUAGES if c in ("en", "fr", "es", "pt", "hi", "ur", "bn", "ar", "zh")] if n == 9
             else list(LANGUAGES)[:n])
    F = rng.random((n, 6, 16)) ** 3  # skewed, as real frequencies are
    distance = similarity.as_distance(similarity.similarity_matrix(F, langs, "pearson"), "pearson")
    linkage, _ = similarity.dendrogram_linkage(distance)
    coords, explained = geometry.classical_mds(distance)
    pairs = pd.DataFrame([(a, b, float(rng.random()), "different family") for a, b in itertools.combinations(langs, 2)],
                         columns=["lang_a", "lang_b", "distance", "relation"]).sort_values("distance")
    fam = families.family_summary(F, langs, 0.2, samples=10)
    drawn = {
        "03_heatmaps_grid": figures.heatmap_grid(F, langs, "grid"),
        "03_layer_distribution": figures.layer_distribution(F, langs),
        "03_layer_boxplot": figures.layer_boxplot(F, langs, 0.05),
        "04_category_totals": figures.category_totals_plot(analysis.category_totals(F, langs, 0.2)),
        "04_counts_per_layer": figures.counts_per_layer_plot(analysis.expert_counts_per_layer(F, langs, 0.2)),
        "04_family_summary": figures.family_summary_plot(fam, 0.05),
        "05_dendrogram": figures.dendrogram_plot(linkage, langs),
        "05_mds_map": figures.mds_plot(coords, explained, "1 - Pearson r"),
        "05_similarity_per_layer": figures.per_layer_similarity_plot(
            similarity.per_layer_similarity(F, langs, "pearson")),
        "05_pair_intervals": figures.pair_interval_plot(pairs.assign(low=pairs.distance * 0.9,
                                                                     high=pairs.distance * 1.1), "pearson"),
        "06_difference_heatmaps": figures.diff_heatmap(F - F[::-1], langs),
    }
    return {name: fig for name, fig in drawn.items() if not isinstance(fig, figures.Skipped)}


def _overlapping_ticks(fig) -> list[str]:
    """Tick labels of one axis that overlap a neighbour (by a quarter of the smaller one) once drawn."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            for (a, box_a), (b, box_b) in zip(zip(labels, boxes), zip(labels[1:], boxes[1:])):
                shared = Bbox.intersection(box_a, box_b)
                if shared is not None and shared.width * shared.height > 0.25 * min(
                        box_a.width * box_a.height, box_b.width * box_b.height):
                    found.append(f"{a.get_text()!r} / {b.get_text()!r}")
    return found


@pytest.mark.parametrize("n", [9, 300])
def test_every_language_view_stays_a_page_and_its_tick_labels_do_not_collide(n):
    """The views of 03-06 at 9 languages and at 300: at most 16 x 16 inches (2,400 pixels at the saved 150 dpi)
    and no tick label drawn over its neighbour."""
    for name, fig in _language_figures(n).items():
        width, height = fig.get_size_inches()
        assert width <= 16 and height <= 16, f"{name} at {n} languages: {width:.1f} x {height:.1f} in"
        assert not _overlapping_ticks(fig), f"{name} at {n} languages: {_overlapping_ticks(fig)[:3]}"
        plt.close(fig)


def test_the_collision_check_sees_crowded_labels():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks(range(40), [f"language {i}" for i in range(40)])
    assert _overlapping_ticks(fig)
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.set_xticks(range(4), ["en", "fr", "hi", "zh"])
    assert not _overlapping_ticks(fig)
    plt.close("all")
