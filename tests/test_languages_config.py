"""A config's `languages:` takes codes, aliases and groups, and resolves them to concrete codes."""

from __future__ import annotations

import pytest

from babel_utils.core.config import BabelConfig, load_config
from babel_utils.core.languages import DUPLICATES, LANGUAGES, PAPER_LANGUAGES, UnknownLanguageError, resolve_languages

DISTINCT = tuple(c for c in LANGUAGES if c not in DUPLICATES)  # every declaration with a text of its own


def test_default_is_the_paper_nine_unchanged():
    cfg = BabelConfig()
    assert cfg.languages == PAPER_LANGUAGES
    assert cfg.to_dict()["languages"] == list(PAPER_LANGUAGES)
    assert BabelConfig(languages=["paper"]).languages == PAPER_LANGUAGES


def test_groups_resolve_to_codes_in_table_order():
    everything = resolve_languages(["all"])
    assert everything == DISTINCT and len(everything) >= 300
    bantu_family = resolve_languages(["family:Atlantic-Congo"])
    assert "sw" in bantu_family and "yo" in bantu_family
    assert all(LANGUAGES[c].family == "Atlantic-Congo" for c in bantu_family)
    cyrillic = resolve_languages(["script:cyrillic"])  # case blind
    assert "ru" in cyrillic and all(LANGUAGES[c].script == "Cyrillic" for c in cyrillic)
    romance = resolve_languages(["genus:Romance"])
    assert {"fr", "es", "pt", "pt-BR", "it", "ro"} <= set(romance)
    assert all(LANGUAGES[c].genus == "Romance" for c in romance)


def test_codes_groups_and_aliases_mix_each_once_in_order():
    codes = resolve_languages(["de", "paper", "genus:Indic", "pt-PT", "POR_br"])
    assert codes[:10] == ("de",) + PAPER_LANGUAGES
    assert codes[-1] == "pt-BR" and len(codes) == len(set(codes))
    assert all(LANGUAGES[c].genus == "Indic" for c in codes[10:-1])
    assert resolve_languages("paper, de") == PAPER_LANGUAGES + ("de",)


def test_config_keeps_concrete_codes():
    cfg = load_config(None, ["languages=[paper, family:Dravidian]"])
    assert cfg.languages[:9] == PAPER_LANGUAGES and "te" in cfg.languages and "ta" in cfg.languages
    assert all(c in LANGUAGES for c in cfg.languages)
    assert load_config(None, ["languages=all"]).languages == DISTINCT
    assert BabelConfig(languages=("en", "de")).replace(seed=1).languages == ("en", "de")


def test_unknown_code_names_the_closest_matches():
    with pytest.raises(ValueError) as err:
        BabelConfig(languages=["en", "dee", "xx"])
    text = str(err.value)
    assert "unknown language" in text and "'dee'" in text and "Known languages" in text
    assert "de (" in text.split("'dee': closest")[1].split(";")[0]
    with pytest.raises(UnknownLanguageError) as err:
        resolve_languages(["Portugese"])  # a name, misspelt: the closest names help
    assert "pt (Portuguese)" in str(err.value)


def test_unknown_group_names_the_closest_groups():
    with pytest.raises(ValueError, match=r"family:Atlantic-Congo"):
        BabelConfig(languages=["family:Atlantic-Kongo"])
    with pytest.raises(ValueError, match=r"script:"):
        BabelConfig(languages=["scrip:Latin"])


def test_yaml_booleans_and_empty_lists_are_refused():
    with pytest.raises(ValueError, match="quote"):
        BabelConfig(languages=[False])
    with pytest.raises(ValueError, match="languages"):
        BabelConfig(languages=[])


def test_one_per_genus_is_a_stratified_sample_by_a_rule_a_reader_can_check():
    sample = resolve_languages(["one-per:genus"])
    genera = [LANGUAGES[c].genus for c in sample]
    assert len(genera) == len(set(genera)) == len({lang.genus for lang in LANGUAGES.values()})
    paper_genera = {LANGUAGES[c].genus for c in PAPER_LANGUAGES}
    assert {c for c in sample if LANGUAGES[c].genus in paper_genera} == {"en", "es", "bn", "ar", "zh"}  # the paper's
    # language where its genus has one (the first code: es of es, fr, pt; bn of bn, hi, ur)
    assert list(sample) == [c for c in LANGUAGES if c in sample]  # in table order
    assert not any("-" in c for c in sample if any("-" not in o and LANGUAGES[o].genus == LANGUAGES[c].genus
                                                     for o in LANGUAGES))  # a default declaration, not a variant
    stratified = load_config("configs/udhr-genera.yaml").languages
    assert stratified[:9] == PAPER_LANGUAGES and set(sample) <= set(stratified) and 100 <= len(stratified) <= 150
    assert len(resolve_languages(["one-per:family"])) == len({lang.family for lang in LANGUAGES.values()})
    with pytest.raises(ValueError, match=r"one-per:genus"):
        BabelConfig(languages=["one-per:genra"])


def test_the_evaluation_notebooks_run_on_eval_languages_and_03_on_heatmap_languages():
    from babel_utils.core import config
    cfg = load_config(None, ["languages=[paper, de, sw]", "eval_languages=[en, genus:Romance]", "token_budget=500"])
    assert cfg.eval_languages == ("en", "fr", "es", "pt")
    view = config.evaluation_view(cfg)
    assert view.languages == cfg.eval_languages and config.evaluation_view(cfg.replace(eval_languages=())) == \
        cfg.replace(eval_languages=())
    assert set(config.EVALUATION_NOTEBOOKS) == {"06", "07", "08"}
    with pytest.raises(ValueError, match=r"'eval_languages'.*\['ru'\] are not"):
        load_config(None, ["eval_languages=[en, ru]", "token_budget=500"])
    with pytest.raises(ValueError, match="token_budget"):  # 0 = the smallest language's count: 02 and 06 would differ
        load_config(None, ["eval_languages=[en, fr]"])
    with pytest.raises(ValueError, match=r"'heatmap_languages'"):
        load_config(None, ["heatmap_languages=[ru]"])
    assert load_config(None, ["heatmap_languages=[genus:Indic]"]).heatmap_languages == ("hi", "ur", "bn")


def test_groups_leave_out_exactly_the_declarations_that_repeat_another_text():
    from babel_utils.data.text import udhr_articles

    first: dict[tuple, str] = {}
    repeats = {}
    for code in LANGUAGES:
        text = tuple(sorted(udhr_articles(code).items()))
        if text in first:
            repeats[code] = first[text]
        first.setdefault(text, code)
    assert {frozenset(p) for p in repeats.items()} == {frozenset(p) for p in DUPLICATES.items()}
    for group in (["all"], ["script:Latin"], ["one-per:genus"], ["family:Dravidian"]):
        assert not set(DUPLICATES) & set(resolve_languages(group))
    assert resolve_languages(["ta-LK", "ta"]) == ("ta-LK", "ta")  # named, they are there


def test_a_leading_minus_removes_codes_and_groups():
    assert resolve_languages("paper, -genus:Indic, de") == ("en", "fr", "es", "pt", "ar", "zh", "de")
    assert resolve_languages(["-zh", "paper"]) == PAPER_LANGUAGES[:-1]  # wherever it stands
    assert "fr" not in resolve_languages(["all", "-fr"]) and len(resolve_languages(["all", "-fr"])) == len(DISTINCT) - 1
    with pytest.raises(UnknownLanguageError, match="'-xyzq'"):
        resolve_languages(["all", "-xyzq"])
