"""The language table built from the UDHR and URIEL (babel_utils.core.languages): the paper's rows, codes
of several declarations of one language, genus rules, script detection, shipped URIEL features."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from babel_utils.core import languages as L
from babel_utils.core.languages import LANGUAGES, PAPER_LANGUAGES, Language
from babel_utils.core.paths import LANGUAGES_TABLE, URIEL_FEATURES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import language_rules as R  # noqa: E402  (the build's rules, beside its script)

# The nine rows as they were hand-written in babel_utils/core/languages.py before the table.
PAPER_ROWS = [
    Language("en", "English", "Indo-European", "Germanic", "Latin"),
    Language("fr", "French", "Indo-European", "Romance", "Latin"),
    Language("es", "Spanish", "Indo-European", "Romance", "Latin"),
    Language("pt", "Portuguese", "Indo-European", "Romance", "Latin"),
    Language("hi", "Hindi", "Indo-European", "Indic", "Devanagari"),
    Language("ur", "Urdu", "Indo-European", "Indic", "Arabic"),
    Language("bn", "Bengali", "Indo-European", "Indic", "Bengali"),
    Language("ar", "Arabic", "Afro-Asiatic", "Semitic", "Arabic"),
    Language("zh", "Chinese", "Sino-Tibetan", "Sinitic", "Han"),
]
FIELDS = ("code", "name", "family", "genus", "script")


def _fields(lang: Language) -> tuple[str, ...]:
    return tuple(getattr(lang, f) for f in FIELDS)


def test_paper_rows_unchanged_and_first():
    assert PAPER_LANGUAGES == ("en", "fr", "es", "pt", "hi", "ur", "bn", "ar", "zh")
    assert list(LANGUAGES)[:9] == list(PAPER_LANGUAGES)
    for old in PAPER_ROWS:
        new = L.get_language(old.code)
        assert _fields(new) == _fields(old)
        assert new == old and hash(new) == hash(old)  # equality is on the five study fields
    assert [LANGUAGES[c].udhr for c in PAPER_LANGUAGES] == ["eng", "fra", "spa", "por_PT", "hin", "urd", "ben",
                                                            "arb", "cmn_hans"]


def test_table_size_family_script_and_provenance():
    rows = list(LANGUAGES.values())
    assert len(rows) >= 300
    assert sum(1 for r in rows if r.family and r.genus and r.script) >= 300
    assert len({r.family for r in rows}) >= 50 and len({r.script for r in rows}) >= 20
    assert len({r.code.lower() for r in rows}) == len(rows)  # codes unique, case blind
    for r in rows:
        assert len(r.article_chars) == 30 and min(r.article_chars) > 0, r.code
        assert r.iso639_3 and r.udhr and r.bcp47 and r.direction in ("ltr", "rtl"), r.code
        assert (r.latitude is None) == (r.longitude is None), r.code
    hindi = LANGUAGES["hi"]
    assert hindi.path[:3] == ("Indo-European", "Indo-Iranian", "Indo-Aryan") and hindi.path[-1] == "Hindustani"
    assert hindi.latitude == 25 and hindi.longitude == 77 and LANGUAGES["ur"].direction == "rtl"
    assert json.loads(LANGUAGES_TABLE.read_text(encoding="utf-8"))["languages"][0]["code"] == "en"


def test_mgsm_and_xcsqa_languages_are_in_the_table():
    for code, family, script in [("de", "Indo-European", "Latin"), ("ja", "Japonic", "Japanese"),
                                 ("ru", "Indo-European", "Cyrillic"), ("sw", "Atlantic-Congo", "Latin"),
                                 ("te", "Dravidian", "Telugu"), ("th", "Tai-Kadai", "Thai")]:
        lang = L.get_language(code)
        assert (lang.family, lang.script) == (family, script), code
    assert LANGUAGES["de"].udhr == "deu_1996" and LANGUAGES["sw"].genus == "Bantoid"
    assert all(c in LANGUAGES for c in ("it", "nl", "pl", "vi"))


def test_declarations_of_one_language_are_kept_apart():
    pt, br = LANGUAGES["pt"], LANGUAGES["pt-BR"]
    assert (pt.udhr, br.udhr) == ("por_PT", "por_BR") and pt.iso639_3 == br.iso639_3 == "por"
    assert br.name == "Portuguese (Brazil)" and pt.article_chars != br.article_chars
    assert LANGUAGES["de-1901"].udhr == "deu_1901" and LANGUAGES["zh-Hant"].udhr == "cmn_hant"
    assert LANGUAGES["ur-2"].udhr == "urd_2" and LANGUAGES["sw-chimwiini"].udhr == "062"
    assert {LANGUAGES[c].udhr for c in ("sr", "sr-Latn")} == {"srp_cyrl", "srp_latn"}
    quechua = [r for r in LANGUAGES.values() if r.family == "Quechuan"]
    assert len(quechua) >= 10 and len({r.code for r in quechua}) == len({r.udhr for r in quechua})
    # aliases: the BCP 47 tag, the UDHR file name and (for the default) the ISO 639-3 code, case blind
    assert L.canonical_code("pt-PT") == L.canonical_code("por_PT") == L.canonical_code("POR") == "pt"
    assert L.canonical_code("PT-br") == "pt-BR" and L.canonical_code("cmn") == "zh"
    assert L.get_language("deu").code == "de"


@pytest.mark.parametrize("path, genus", [
    (("Indo-European", "Indo-Iranian", "Indo-Aryan", "Indo-Aryan Central zone"), "Indic"),
    (("Indo-European", "Italic", "Latino-Faliscan", "Latinic", "Imperial Latin", "Romance", "Italo-Western Romance"),
     "Romance"),
    (("Indo-European", "Italic", "Latino-Faliscan", "Latinic", "Imperial Latin"), "Italic"),
    (("Indo-European", "Germanic", "Northwest Germanic", "West Germanic"), "Germanic"),
    (("Turkic", "Common Turkic", "Oghuz-Kipchak-Uyghur", "Oghuz"), "Turkic"),
    (("Austronesian", "Nuclear Austronesian", "Malayo-Polynesian"), "Malayo-Polynesian"),
    (("Atlantic-Congo", "Volta-Congo", "Kwa Volta-Congo", "Gbe"), "Kwa"),
    (("Koreanic",), "Koreanic"),
])
def test_genus_rules(path, genus):
    assert R.genus_of(path) == genus
    assert R.family_and_genus(path, "x") == (path[0], genus)


def test_isolates_are_families_of_their_own():
    assert R.family_and_genus((), "Basque") == ("Basque", "Basque")
    basque = LANGUAGES["eu"]
    assert (basque.family, basque.genus, basque.path) == ("Basque", "Basque", ())


@pytest.mark.parametrize("text, script", [
    ("All human beings are born free", "Latin"),
    ("Все люди рождаются свободными", "Cyrillic"),
    ("يولد جميع الناس أحرارًا", "Arabic"),
    ("सभी मनुष्यों को गौरव", "Devanagari"),
    ("সমস্ত মানুষ স্বাধীনভাবে", "Bengali"),
    ("人人生而自由", "Han"),
    ("모든 인간은 태어날 때부터", "Hangul"),
    ("すべての人間は、生まれながらにして自由", "Japanese"),
    ("Όλοι οι άνθρωποι γεννιούνται ελεύθεροι", "Greek"),
    ("มนุษย์ทั้งหลายเกิดมามีอิสระ", "Thai"),
    ("ყველა ადამიანი იბადება", "Georgian"),
    ("כל בני אדם נולדו בני חורין", "Hebrew"),
    ("ሁሉም የሰው ልጆች", "Ethiopic"),
    ("ᏂᎦᏓ ᎠᏂᏴᏫ", "Cherokee"),
    ("ＡＢＣ full width", "Latin"),
    ("123 !?", ""),
])
def test_script_detection(text, script):
    assert R.detect_script(text) == script


def test_script_shares_ignore_digits_and_modifier_letters():
    shares = R.script_shares("Hawaiʻi 2024 и")
    assert set(shares) == {"Latin", "Cyrillic"} and shares["Latin"] == pytest.approx(6 / 7)


def test_uriel_features_are_shipped():
    assert URIEL_FEATURES.stat().st_size < 200_000
    assert set(L.uriel_feature_sets()) == {"syntax_knn", "phonology_knn", "inventory_knn"}
    english = L.uriel_features("en", "syntax_knn")
    assert len(english) == 103 and english["S_SVO"] == 1 and english["S_SOV"] == 0
    assert L.uriel_features("hi", "syntax_knn")["S_SOV"] == 1
    assert L.uriel_features("lv")  # Latvian's lvs is looked up as URIEL's lav
    with pytest.raises(ValueError, match="syntax_knn"):
        L.uriel_features("en", "nope")


def test_a_new_kind_of_language_group_is_one_table_entry(monkeypatch):
    """Grouping by writing direction added as one GroupKind: config groups, one-per samples, 04's family summary
    and 05's cluster recovery all take it."""
    import numpy as np

    from babel_utils.analyse import families, recovery
    from babel_utils.analyse.similarity import as_distance, similarity_matrix

    rtl = {"Arabic", "Hebrew", "Thaana", "Syriac", "Nko", "Adlam"}
    kind = L.GroupKind("direction", "directions", lambda lang: "rtl" if lang.script in rtl else "ltr")
    monkeypatch.setitem(L.GROUP_KINDS, "direction", kind)
    paper = list(PAPER_LANGUAGES)
    assert L.resolve_languages("direction:rtl", within=paper) == ("ur", "ar")
    assert len(L.resolve_languages("one-per:direction")) == 2 and "direction:<direction>" in L.group_help()
    with pytest.raises(L.UnknownLanguageError, match="direction:rtl"):
        L.resolve_languages("direction:rlt")
    F = np.random.default_rng(0).random((len(paper), 3, 8)) * 0.1
    summary = families.family_summary(F, paper, 0.05, kind="direction", samples=20)
    assert set(summary.iloc[:, 0]) == {"ltr", "rtl"} and "directions" in families.describe_families(summary, 0.05, "direction")
    table = recovery.recovery_table(as_distance(similarity_matrix(F, paper, "pearson"), "pearson"), "average", 20)
    assert "direction" in set(table["grouping"])
    with pytest.raises(ValueError, match="Unknown kind of language group 'dialect'; known: family, genus, script"):
        L.check_group_kind("dialect")
