"""UDHR text of every language (the paper's nine byte for byte as first shipped), MGSM beyond the
nine, and the `babel languages` listing."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from babel_utils.core import languages as L
from babel_utils.core.config import BabelConfig
from babel_utils.core.paths import REPO_ROOT, UDHR_ARCHIVE_NAME, UDHR_DIR
from babel_utils.data import text as data
from babel_utils.evaluate import tasks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import language_rules as R  # noqa: E402  (the build's rules, beside its script)

# sha256 of the nine files as first committed (git show <first commit>:babel_utils/resources/udhr/<lang>.jsonl)
PAPER_SHA256 = {
    "en": "306da3ff85b48d48417d24783312864fd2c9d31d2f4219cf6ed7b4a88ca2d003",
    "fr": "380a5291768add817b4798e1ef93c936fa6e09e60f1e32a9dea03b75c1eaf630",
    "es": "95d4d83cd5de0eaaa44fcd080f0933689dfb6962dc82e08b7bc560cf5a241647",
    "pt": "11713cdea51ea332dc44aea2196c66dea511013654f85e6fc0939491646c5db9",
    "hi": "6654b942ffa6e3dbc6564ce93088e55ed7e27b32474b8a4cee8831b304b53499",
    "ur": "3aa335286935fa7c03a4c714cf1e0d07d1382c5a9d56defef257089751951bd3",
    "bn": "feed3fd04b94c9cc7b54635ae8c56371524aa529a5b0bb45a558e5de2c108186",
    "ar": "5979b4c797dfa3bef894fd07fb688986bd4a65695749b70ba3d2e50b3e506151",
    "zh": "54488d39efe8abf1573c42062899b3a99eb29c708051ba1a4a788480e917690a",
}


def _extract_module():
    spec = importlib.util.spec_from_file_location("extract_udhr", REPO_ROOT / "scripts" / "extract_udhr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def archive() -> dict[str, dict]:
    with gzip.open(UDHR_DIR / UDHR_ARCHIVE_NAME, "rt", encoding="utf-8") as fh:
        return {r["udhr"]: r for r in map(json.loads, fh)}


def test_paper_text_is_byte_identical(archive):
    extract = _extract_module()
    for lang, digest in PAPER_SHA256.items():
        raw = (UDHR_DIR / f"{lang}.jsonl").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == digest, lang
        committed = {r["article"]: r["text"] for r in map(json.loads, raw.decode("utf-8").splitlines())}
        assert data.udhr_articles(lang) == committed, lang
        # the archive holds the same text, and the extraction script writes the same bytes from it
        record = archive[L.LANGUAGES[lang].udhr]
        assert dict(enumerate(record["articles"], start=1)) == committed, lang
        assert extract.paper_file(committed).encode("utf-8") == raw, lang
        assert extract.SOURCES[lang] == L.LANGUAGES[lang].udhr


def test_archive_holds_every_language_of_the_table(archive):
    assert len(archive) == len(L.LANGUAGES)
    assert {lang.udhr for lang in L.LANGUAGES.values()} == set(archive)
    for lang in L.LANGUAGES.values():
        record = archive[lang.udhr]
        assert record["stage"] >= 4 and len(record["articles"]) == 30 and all(t.strip() for t in record["articles"])
        assert [len(t) for t in record["articles"]] == list(lang.article_chars), lang.code
        assert record["iso639_3"] == lang.iso639_3 != "und"
    assert (UDHR_DIR / UDHR_ARCHIVE_NAME).stat().st_size < 3_000_000


def test_any_language_reads_from_the_archive():
    german = data.udhr_articles("de")
    assert sorted(german) == list(range(1, 31)) and german[1].startswith("Alle Menschen sind frei")
    assert data.udhr_articles("pt-BR") != data.udhr_articles("pt")
    assert data.udhr_articles("pt-PT") == data.udhr_articles("pt")  # an alias reads its row's text
    russian = data.calibration_texts(BabelConfig(languages=("ru",)), "ru")
    assert len(russian) == 20 and R.detect_script(" ".join(russian)) == "Cyrillic"


def test_mgsm_language_beyond_the_nine_loads_with_udhr_text():
    cfg = BabelConfig(languages=("en", "de", "sw", "hi"), text_source="udhr")
    assert tasks.languages_with("mgsm", cfg, cfg.languages) == ["en", "de", "sw"]
    german = data.load_mgsm("de", cfg.mgsm_dir, n=3)
    assert len(german) == 3 and (german["lang"] == "de").all() and german.loc[0, "answer"] == "18"
    assert len(data.heldout_texts(cfg, "de")) == 10
    assert tasks.languages_with("mgsm", cfg, ["de-1901", "zh-Hant", "ja", "th", "te", "ru"]) == ["ja", "th", "te", "ru"]


def test_listing_shows_at_least_300_languages_with_family_and_script():
    text = L.listing(L.select(), fmt="tsv")
    header, *rows = [line.split("\t") for line in text.splitlines()]
    assert header == ["code", "name", "family", "genus", "script", "chars 1-20", "chars 21-30"]
    full = [r for r in rows if r[2] and r[4]]
    assert len(full) >= 300
    english = next(r for r in rows if r[0] == "en")
    assert english[1:5] == ["English", "Indo-European", "Germanic", "Latin"] and int(english[5]) > 1000
    table = L.listing(L.select(script="Cyrillic"), calib=(1, 5), heldout=(6, 6))
    assert "chars 1-5" in table.splitlines()[0] and "ru " in table and "1 script (of" in table.splitlines()[-1]
    assert [r.code for r in L.select(search="portug")] == ["pt", "pt-BR"]
    assert {r.genus for r in L.select(family="indo-european", genus="Indic")} == {"Indic"}
    assert all(r.family == "Atlantic-Congo" for r in L.select(family="Atlantic"))  # a substring where none is exact


def test_babel_languages_command(capsys):
    from babel_utils.run import cli
    assert cli.main(["languages", "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines[1:] if all(line.split("\t")[i] for i in (2, 4))]) >= 300
    assert cli.main(["languages", "--family", "Dravidian", "--codes"]) == 0
    assert set(capsys.readouterr().out.strip().split(",")) >= {"te", "ta", "kn", "ml"}
    assert cli.main(["languages", "paper", "--script", "Arabic"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-1]] == ["ur", "ar"]
    assert cli.main(["languages", "xx"]) == 2
    assert "closest" in capsys.readouterr().err
