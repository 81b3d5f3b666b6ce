"""Config: defaults from docs/method.md, YAML and overrides, and errors that name the key and the fix."""

from __future__ import annotations

import pytest

from babel_utils.core import config
from babel_utils.core.config import BabelConfig, for_notebook, load_config, parse_override, save_config
from babel_utils.core.paths import CONFIGS_DIR


def test_spec_defaults():
    cfg = BabelConfig()
    assert (cfg.n_experts, cfg.kmeans_iters, cfg.top_fraction, cfg.high_freq_threshold) == (256, 20, 0.10, 0.05)
    assert (cfg.score, cfg.normalize, cfg.selection, cfg.split_method, cfg.cluster_matrix) == \
        ("abs", "zscore", "cross_layer", "kmeans", "up")
    assert cfg.languages == ("en", "fr", "es", "pt", "hi", "ur", "bn", "ar", "zh")
    assert cfg.prune_ratios == (0.10, 0.25, 0.50) and cfg.expert_grid == (64, 128, 256, 512)


@pytest.mark.parametrize("path", sorted(CONFIGS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), BabelConfig)


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(CONFIGS_DIR / "smoke.yaml", ["n_experts=8", "languages=[en, zh]", "top_fraction=0.2"])
    assert cfg.n_experts == 8 and cfg.languages == ("en", "zh") and cfg.top_fraction == 0.2
    assert parse_override("model=org/name") == ("model", "org/name")


@pytest.mark.parametrize("overrides, words", [
    ({"n_expert": 8}, ["Unknown config key", "n_expert", "n_experts"]),
    ({"languages": ["en", "xx"]}, ["unknown language", "xx", "Known languages"]),
    ({"score": "max"}, ["'score'", "abs, relu, signed"]),
    ({"top_fraction": 1.5}, ["'top_fraction'", "(0, 1]"]),
    ({"prune_ratios": [0.1, 1.0]}, ["prune_ratios", "[0, 1)"]),
    ({"heldout_articles": [15, 25]}, ["heldout_articles", "overlap"]),
    ({"text_source": "hf"}, ["text_dataset"]),
    ({"languages": []}, ["languages"]),
])
def test_bad_values_name_the_key_and_the_allowed_values(overrides, words):
    with pytest.raises(ValueError) as err:
        load_config(None, overrides)
    for word in words:
        assert word in str(err.value)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["n_experts"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping"):
        load_config(bad)


def test_a_notebook_reads_its_runs_config_then_its_knobs_then_the_overrides(tmp_path):
    from torch import nn

    from babel_utils.core.paths import run_dir

    # before any run: the shipped configs/<run_name>.yaml (JupyterLab on the default run, nothing edited)
    assert for_notebook({"run_name": "default"}, "08") == load_config(CONFIGS_DIR / "default.yaml")
    # the run folder's config.yaml, as `babel run` wrote it, wins over the shipped file
    ran = load_config(CONFIGS_DIR / "smoke.yaml", {"run_name": "default", "top_fraction": 0.3, "task_ratio": 0.5})
    save_config(ran, run_dir("default") / "config.yaml")
    assert for_notebook({"run_name": "default"}, "08") == ran
    # its own knobs as the parameters cell sets them, then overrides (papermill's -p passes them as text)
    namespace = {"run_name": "default", "task_ratio": 0.1, "mgsm_n": 3, "plot_width": 3,
                 "model": nn.Linear(1, 1)}  # the loaded model of a JupyterLab session is not a config value
    cfg = for_notebook({**namespace, "overrides": "{mgsm_n: 7, top_fraction: 0.2}"}, "08")
    assert (cfg.task_ratio, cfg.mgsm_n, cfg.top_fraction, cfg.model) == (0.1, 7, 0.2, ran.model)
    other = tmp_path / "other.yaml"
    save_config(BabelConfig(run_name="elsewhere", n_experts=64), other)
    cfg = for_notebook({"run_name": "default", "config_file": str(other)}, "08")
    assert (cfg.n_experts, cfg.run_name) == (64, "default")  # results still go to the selected run


def test_a_notebook_refuses_another_notebooks_key_and_a_missing_run():
    with pytest.raises(ValueError, match=r"'top_fraction' is not a parameter of notebook 07.*overrides: \{top_fraction"):
        for_notebook({"run_name": "default", "top_fraction": 0.2}, "07")  # papermill -p top_fraction 0.2
    with pytest.raises(ValueError, match="must map config keys"):
        for_notebook({"run_name": "default", "overrides": [1, 2]}, "07")
    with pytest.raises(FileNotFoundError, match=r"No config for run 'nobody'.*config\.yaml.*nobody\.yaml"):
        for_notebook({"run_name": "nobody"}, "01")


def test_describe_shows_every_value():
    text = config.describe(BabelConfig())
    assert all(f"{name}:" in text for name in config.FIELD_NAMES)


def test_config_is_frozen():
    with pytest.raises(Exception):
        BabelConfig().n_experts = 3


def test_the_expert_grid_splits_its_other_granularities_with_its_own_swap_budget():
    from babel_utils.run.stages import grid_config

    cfg = BabelConfig(n_experts=256, kmeans_swap_rounds=1000, expert_grid_swap_rounds=4)
    assert grid_config(cfg, 256) is cfg  # the run's own split (01) and counts (02) are reused
    assert (grid_config(cfg, 64).n_experts, grid_config(cfg, 64).kmeans_swap_rounds) == (64, 4)
    with pytest.raises(ValueError, match="expert_grid_swap_rounds"):
        BabelConfig(expert_grid_swap_rounds=-1)


@pytest.mark.parametrize("key, text, want", [
    ("languages", "en", ("en",)),  # papermill -p languages en
    ("languages", '["en", "fr"]', ("en", "fr")),
    ("languages", "paper, de", ("en", "fr", "es", "pt", "hi", "ur", "bn", "ar", "zh", "de")),
    ("prune_ratios", "0.1, 0.2", (0.1, 0.2)),
    ("prune_ratios", 0.1, (0.1,)),  # -p prune_ratios 0.1 (papermill passes a float)
    ("expert_grid", "[64, 128]", (64, 128)),
    ("calib_articles", "1,20", (1, 20)),
])
def test_papermill_text_for_a_list_parameter_is_read_as_a_list(key, text, want):
    assert getattr(BabelConfig(**{key: text}), key) == want
    assert getattr(for_notebook({"run_name": "default", "overrides": {key: text}}, "07"), key) == want


def test_a_list_parameter_that_is_not_a_list_of_numbers_says_to_use_yaml():
    with pytest.raises(ValueError, match=r"prune_ratios.*pass lists with -y"):
        BabelConfig(prune_ratios="ten percent")


def test_the_summary_names_the_run_in_two_lines_and_folds_every_value():
    cfg = BabelConfig(languages=("en", "fr", "hi"))
    shown = config.summary(cfg)
    text = repr(shown)
    assert len(text.splitlines()) == 2 and "3 languages (en, fr, hi)" in text and "runs/default/config.yaml" in text
    html = shown._repr_html_()
    assert "<details>" in html and all(f"{name}:" in html for name in config.FIELD_NAMES)
    many = repr(config.summary(BabelConfig(languages=("all",))))
    assert "in all)" in many and len(many) < 600  # 500 languages: a count, not a list
