"""Text and benchmark data: UDHR / dataset / file text per language, token packing, MGSM, X-CSQA.

Text sources (`BabelConfig.text_source`), each split into calibration and held-out text:
- "udhr": the bundled UDHR, one document per article, in every language of babel_utils.core.languages
  (511 declarations: the paper's nine as `<lang>.jsonl`, all of them in udhr.jsonl.gz); articles
  `calib_articles` for calibration and `heldout_articles` for evaluation (docs/method.md section 3; defaults
  1-20 and 21-30).
- "hf": a Hugging Face dataset (hub id) or a local file / folder (.parquet, .json, .jsonl, .csv,
  .txt); one document per row of `text_column`; the last `heldout_fraction` of the rows is held out.
- "files": one local UTF-8 text file per language (`text_files`), documents separated by blank
  lines; the same held-out split.

Local X-CSQA layout (`load_xcsqa`): `<folder>/X-CSQA-<lang>/validation.jsonl`, the Hugging Face
config and split names of `INK-USC/xcsr`, one row a line in its schema; or a path template with
`{lang}` naming one such file per language.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import pandas as pd
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from ..core.config import BabelConfig
from ..core.languages import LANGUAGES, canonical_code, get_language
from ..core.paths import UDHR_ARCHIVE_NAME, UDHR_DIR, mgsm_dir

log = logging.getLogger(__name__)

UDHR_ARTICLES = 30  # articles of the declaration, numbered 1..30
# Which `datasets` builder reads a local file, by suffix.
LOCAL_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}
LANGUAGE_COLUMNS = ("language", "lang")  # a column of this name filters rows of a multilingual dataset
TOKENIZE_CHUNK = 64  # documents tokenized per call while filling a token budget

MGSM_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
MGSM_HUB_SPLIT = "test"
XCSQA_LANGUAGES = ("en", "zh", "de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "ar", "vi", "hi",
                   "sw", "ur")
XCSQA_SPLIT = "validation"  # the test split has no labels


# --------------------------------------------------------------------------- UDHR


@lru_cache(maxsize=4)
def _udhr_archive(folder: Path) -> dict[str, tuple[str, ...]]:
    """UDHR file name (e.g. "deu_1996") -> the texts of articles 1..30, from `folder`/udhr.jsonl.gz."""
    path = folder / UDHR_ARCHIVE_NAME
    if not path.exists():
        return {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    return {str(r["udhr"]): tuple(map(str, r["articles"])) for r in records}


@lru_cache(maxsize=None)
def _read_udhr(lang: str) -> tuple[tuple[int, str], ...]:
    """Articles of one language: its own `<lang>.jsonl` (the paper's nine, kept byte for byte as first
    shipped), else its declaration in the archive of every usable declaration (udhr.jsonl.gz)."""
    path = UDHR_DIR / f"{lang}.jsonl"
    if path.exists():
        with path.open(encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        return tuple((int(r["article"]), str(r["text"])) for r in records)
    code = canonical_code(lang)
    archive = _udhr_archive(UDHR_DIR)
    if code is not None and code != lang:
        return _read_udhr(code)
    if code is not None and LANGUAGES[code].udhr in archive:
        return tuple(enumerate(archive[LANGUAGES[code].udhr], start=1))
    raise FileNotFoundError(
        f"No UDHR text for language {lang!r}: neither {path} nor {UDHR_DIR / UDHR_ARCHIVE_NAME} holds it "
        f"({len(archive)} declarations there; `babel languages` lists the languages). Rebuild them with "
        "scripts/extract_udhr.py, or set text_source to 'hf' or 'files'.")


def udhr_articles(lang: str) -> dict[int, str]:
    """The UDHR in one language (a code or alias of babel_utils.core.languages): article number (1..30) ->
    article text."""
    return dict(_read_udhr(lang))


def _udhr_range(lang: str, first_last: tuple[int, int]) -> list[str]:
    articles = udhr_articles(lang)
    numbers = range(first_last[0], first_last[1] + 1)
    missing = [n for n in numbers if n not in articles]
    if missing:
        raise ValueError(f"The UDHR text of {lang!r} lacks articles {missing}; "
                         f"rebuild {UDHR_DIR / f'{lang}.jsonl'} with scripts/extract_udhr.py.")
    return [articles[n] for n in numbers]


# --------------------------------------------------------------------------- documents and splits


def _clean_documents(texts: Sequence[Any]) -> list[str]:
    """Strip every document and drop empty or missing ones."""
    return [str(t).strip() for t in texts if t is not None and str(t).strip()]


def _require_text(docs: list[str], lang: str, source: str, fix: str) -> list[str]:
    if not docs:
        raise ValueError(f"No text for language {lang!r} from {source}: it holds no document with "
                         f"anything but whitespace. Fix: {fix}")
    return docs


def split_heldout(docs: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split: the last `fraction` of the documents is held out, the rest calibrates."""
    if len(docs) < 2:
        raise ValueError(f"Cannot hold out a share of {len(docs)} document(s): give at least two "
                         "(separate the documents of a text file with blank lines).")
    n_heldout = min(max(1, round(len(docs) * fraction)), len(docs) - 1)
    return docs[: len(docs) - n_heldout], docs[len(docs) - n_heldout:]


def _file_documents(cfg: BabelConfig, lang: str) -> list[str]:
    if lang not in cfg.text_files:
        raise ValueError(f"text_files has no path for language {lang!r}; add `{lang}: path/to/text.txt`.")
    path = Path(cfg.text_files[lang]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Text file {path} for language {lang!r} does not exist; "
                                "fix the path in text_files (one UTF-8 text file per language).")
    docs = _clean_documents(re.split(r"\n\s*\n", path.read_text(encoding="utf-8")))
    return _require_text(docs, lang, f"text file {path}",
                         "put UTF-8 text in that file, documents separated by blank lines.")


def _local_path(dataset: str, lang: str) -> Path | None:
    """The local file or folder a dataset setting names (with {lang} filled in), or None for a hub id."""
    path = Path(dataset.replace("{lang}", lang)).expanduser()
    if path.exists():
        return path
    if path.is_absolute() or dataset.startswith((".", "~")) or path.suffix in LOCAL_BUILDERS:
        raise FileNotFoundError(f"Local dataset {path} does not exist; fix text_dataset "
                                "(a local file or folder, or a Hugging Face dataset id).")
    return None


def _local_data_files(path: Path) -> tuple[str, list[str]]:
    """The builder and data files of a local dataset file or folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in LOCAL_BUILDERS)
    builders = {LOCAL_BUILDERS.get(p.suffix) for p in files}
    if not files or None in builders or len(builders) != 1:
        raise ValueError(f"Local dataset {path} must be one file or a folder of files of one kind "
                         f"({', '.join(LOCAL_BUILDERS)}); found {[p.name for p in files][:10]}.")
    return builders.pop(), [str(p) for p in files]


def _load_text_dataset(cfg: BabelConfig, lang: str) -> Any:
    from datasets import load_dataset

    local = _local_path(cfg.text_dataset, lang)
    if local is not None:
        builder, files = _local_data_files(local)
        log.info("Loading %s text of %r from local %s (%d file(s))", builder, lang, local, len(files))
        return load_dataset(builder, data_files=files, split="train")
    name = cfg.text_dataset_config.format(lang=lang) or None
    log.info("Loading text of %r from the hub: %s, config %s, split %s", lang, cfg.text_dataset, name,
             cfg.text_split)
    return load_dataset(cfg.text_dataset, name, split=cfg.text_split)


def _filter_language(ds: Any, lang: str, source: str) -> Any:
    """Keep the rows of `lang` when the dataset has a language column."""
    column = next((c for c in LANGUAGE_COLUMNS if c in ds.column_names), None)
    if column is None:
        return ds
    kept = ds.filter(lambda value: value == lang, input_columns=column)
    if len(kept) == 0:
        found = sorted(set(map(str, ds.unique(column))))[:20]
        raise ValueError(f"No row of {source} has {column} == {lang!r} (values found: {found}); "
                         "use the language codes of babel_utils/core/languages.py in that column.")
    return kept


def _hf_documents(cfg: BabelConfig, lang: str) -> list[str]:
    source = f"dataset {cfg.text_dataset!r}"
    ds = _filter_language(_load_text_dataset(cfg, lang), lang, source)
    if cfg.text_column not in ds.column_names:
        raise ValueError(f"{source} has no column {cfg.text_column!r} (columns: {ds.column_names}); "
                         "set text_column.")
    return _require_text(_clean_documents(ds[cfg.text_column]), lang, f"{source}, column {cfg.text_column!r}",
                         "check text_dataset, text_dataset_config, text_split and text_column.")


def documents(cfg: BabelConfig, lang: str) -> list[str]:
    """Every document of a non-UDHR text source for one language, in order."""
    if cfg.text_source == "files":
        return _file_documents(cfg, lang)
    if cfg.text_source == "hf":
        return _hf_documents(cfg, lang)
    raise ValueError(f"documents() reads text_source 'hf' or 'files', not {cfg.text_source!r}.")


def calibration_texts(cfg: BabelConfig, lang: str) -> list[str]:
    """Calibration documents of one language (activation statistics), by `cfg.text_source`."""
    if cfg.text_source == "udhr":
        return _udhr_range(lang, cfg.calib_articles)
    return split_heldout(documents(cfg, lang), cfg.heldout_fraction)[0]


def heldout_texts(cfg: BabelConfig, lang: str) -> list[str]:
    """Held-out documents of one language (evaluation), never overlapping the calibration ones."""
    if cfg.text_source == "udhr":
        return _udhr_range(lang, cfg.heldout_articles)
    return split_heldout(documents(cfg, lang), cfg.heldout_fraction)[1]


def text_bytes(texts: Sequence[str]) -> int:
    """Total UTF-8 bytes of some texts (the denominator of bits per byte)."""
    return sum(len(t.encode("utf-8")) for t in texts)


# --------------------------------------------------------------------------- token packing


@dataclass
class Packed:
    """Packed token rows: position 0 of every row is BOS (when the tokenizer has one); padding is masked."""

    input_ids: torch.Tensor  # LongTensor [n_seq, seq_len]
    attention_mask: torch.Tensor  # LongTensor [n_seq, seq_len], 1 = real token (BOS included)
    n_tokens: int  # real tokens that count: not BOS, not padding

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(input_ids, attention_mask) slices of at most `batch_size` rows."""
        for start in range(0, self.input_ids.shape[0], batch_size):
            yield self.input_ids[start:start + batch_size], self.attention_mask[start:start + batch_size]


def token_stream(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], limit: int = 0) -> list[int]:
    """Token ids of the documents without special tokens, EOS between documents; at most `limit` (0 = all)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = list(texts[start:start + TOKENIZE_CHUNK])
        for ids in tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]:
            if stream and eos is not None:
                stream.append(eos)
            stream.extend(ids)
        if limit and len(stream) >= limit:
            break
    return stream[:limit] if limit else stream


def pack_tokens(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int,
                budget: int = 0) -> Packed:
    """Pack documents into rows of `seq_len` tokens (BOS + seq_len-1 text tokens), last row padded."""
    bos = tokenizer.bos_token_id
    per_row = seq_len - 1 if bos is not None else seq_len
    if per_row < 1:
        raise ValueError(f"seq_len={seq_len} leaves no room for text after BOS; use seq_len >= 2.")
    stream = token_stream(tokenizer, texts, budget)
    if budget and len(stream) < budget:
        log.warning("Only %d tokens of text for a budget of %d", len(stream), budget)
    n_rows = max(1, math.ceil(len(stream) / per_row))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n_rows * per_row,), pad, dtype=torch.long)
    input_ids[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    attention_mask = (torch.arange(n_rows * per_row) < len(stream)).long()
    input_ids, attention_mask = input_ids.view(n_rows, per_row), attention_mask.view(n_rows, per_row)
    if bos is not None:
        input_ids = torch.cat([torch.full((n_rows, 1), bos, dtype=torch.long), input_ids], dim=1)
        attention_mask = torch.cat([torch.ones((n_rows, 1), dtype=torch.long), attention_mask], dim=1)
    return Packed(input_ids, attention_mask, len(stream))


def count_mask(packed: Packed, bos_token_id: int | None) -> torch.Tensor:
    """BoolTensor of the tokens that count: real, not padding, not the BOS at position 0 of a row."""
    mask = packed.attention_mask.bool().clone()
    if bos_token_id is not None:
        mask[:, 0] &= packed.input_ids[:, 0] != bos_token_id
    return mask


def calibration_token_count(cfg: BabelConfig, tokenizer: PreTrainedTokenizerBase, lang: str) -> int:
    """How many tokens the calibration text of one language packs into (EOS separators included)."""
    return len(token_stream(tokenizer, calibration_texts(cfg, lang)))


def token_budget(cfg: BabelConfig, tokenizer: PreTrainedTokenizerBase) -> int:
    """Calibration tokens per language: `cfg.token_budget`, or if 0 the smallest language's count."""
    if cfg.token_budget > 0:
        return cfg.token_budget
    counts = {lang: calibration_token_count(cfg, tokenizer, lang) for lang in cfg.languages}
    log.info("Calibration tokens per language: %s; equal budget = %d", counts, min(counts.values()))
    return min(counts.values())


def token_table(cfg: BabelConfig, tokenizer: PreTrainedTokenizerBase, budget: int) -> pd.DataFrame:
    """Per language: calibration tokens and bytes available, and the tokens counted under `budget`."""
    rows = []
    for lang in cfg.languages:
        texts = calibration_texts(cfg, lang)
        available = len(token_stream(tokenizer, texts))
        rows.append({"language": lang, "name": get_language(lang).name, "script": get_language(lang).script,
                     "bytes": text_bytes(texts), "tokens_available": available,
                     "tokens_counted": min(available, budget)})
    table = pd.DataFrame(rows)
    table["bytes_per_token"] = (table["bytes"] / table["tokens_available"]).round(2)
    return table


def token_sets(cfg: BabelConfig, tokenizer: PreTrainedTokenizerBase, budget: int) -> dict[str, set[int]]:
    """The distinct token ids of each language's calibration text under `budget` (what 02 records on)."""
    return {lang: set(token_stream(tokenizer, calibration_texts(cfg, lang), budget)) for lang in cfg.languages}


def calibration_batches(cfg: BabelConfig, tokenizer: PreTrainedTokenizerBase, lang: str,
                        budget: int) -> Packed:
    """The calibration text of one language, packed into `cfg.seq_len` rows, `budget` tokens."""
    return pack_tokens(tokenizer, calibration_texts(cfg, lang), cfg.seq_len, budget)


# --------------------------------------------------------------------------- MGSM


def _is_local(source: str) -> bool:
    """A source that names the file system (exists, or looks like a path) rather than a hub id."""
    path = Path(source).expanduser()
    return path.exists() or path.is_absolute() or source.startswith((".", "~"))


def _mgsm_folder(source: str) -> Path | None:
    """The local MGSM folder of a source ("" = paths.mgsm_dir()), or None for a hub id."""
    if source and not _is_local(source):
        return None
    folder = Path(source).expanduser() if source else mgsm_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"MGSM folder {folder} does not exist. Fix: set mgsm_dir (or the "
                                "BABEL_MGSM_DIR variable) to a folder of mgsm_<lang>.tsv files, or to "
                                "the Hugging Face id juletxara/mgsm.")
    return folder


def mgsm_languages(source: str = "") -> list[str]:
    """Languages MGSM offers: the mgsm_<lang>.tsv files of a local folder, or those of the hub dataset."""
    folder = _mgsm_folder(source)
    if folder is None:
        return list(MGSM_LANGUAGES)
    return sorted(p.stem.removeprefix("mgsm_") for p in folder.glob("mgsm_*.tsv"))


def parse_number(text: str) -> float:
    """A numeric answer as written in MGSM ("18", "2,125", "-3.5") as a float."""
    return float(str(text).strip().replace(",", ""))


def _normalise_answer(text: str) -> str:
    """The answer without thousands separators; integers without a decimal point."""
    value = parse_number(text)
    return str(int(value)) if value.is_integer() else repr(value)


def _read_mgsm_tsv(path: Path) -> list[tuple[str, str]]:
    """question TAB answer lines, no header, no quoting (a quote is an ordinary character)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(row) != 2 or not row[0].strip():
                raise ValueError(f"{path}, line {line_no}: expected question<TAB>answer, "
                                 f"got {len(row)} field(s).")
            rows.append((row[0].strip(), row[1].strip()))
    return rows


def _mgsm_hub_rows(source: str, lang: str) -> list[tuple[str, str]]:
    from datasets import load_dataset

    log.info("Loading MGSM %r from the hub: %s, split %s", lang, source, MGSM_HUB_SPLIT)
    ds = load_dataset(source, lang, split=MGSM_HUB_SPLIT)
    return [(q.strip(), str(a)) for q, a in zip(ds["question"], ds["answer_number"])]


def load_mgsm(lang: str, source: str = "", n: int = 0) -> pd.DataFrame:
    """MGSM problems of one language: columns question, answer (str), answer_number (float), lang."""
    available = mgsm_languages(source)
    if lang not in available:
        raise ValueError(f"MGSM has no {lang!r} (from {source or mgsm_dir()}); its languages: "
                         f"{', '.join(available)}. Evaluate MGSM on those languages only.")
    folder = _mgsm_folder(source)
    rows = _mgsm_hub_rows(source, lang) if folder is None else _read_mgsm_tsv(folder / f"mgsm_{lang}.tsv")
    rows = rows[:n] if n > 0 else rows
    df = pd.DataFrame(rows, columns=["question", "answer"])
    df["answer"] = df["answer"].map(_normalise_answer)
    df["answer_number"] = df["answer"].map(parse_number)
    df["lang"] = lang
    return df


# --------------------------------------------------------------------------- X-CSQA


def _xcsqa_file(source: str, lang: str) -> Path:
    """The local file of a language: `<folder>/X-CSQA-<lang>/validation.jsonl`, or a `{lang}` template."""
    if "{lang}" in source:
        path = Path(source.replace("{lang}", lang)).expanduser()
    else:
        path = Path(source).expanduser() / f"X-CSQA-{lang}" / f"{XCSQA_SPLIT}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"X-CSQA file {path} does not exist. Fix: point xcsqa_dataset to a folder "
                                f"holding X-CSQA-<lang>/{XCSQA_SPLIT}.jsonl (rows in the INK-USC/xcsr "
                                "schema), or to the hub id INK-USC/xcsr.")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _xcsqa_hub_rows(source: str, lang: str) -> list[dict[str, Any]]:
    from datasets import load_dataset

    log.info("Loading X-CSQA %r from the hub: %s, config X-CSQA-%s, split %s",
             lang, source, lang, XCSQA_SPLIT)
    return list(load_dataset(source, f"X-CSQA-{lang}", split=XCSQA_SPLIT))


def _xcsqa_item(row: dict[str, Any]) -> dict[str, Any]:
    """One question: id, stem, choices, labels, answer_index. Choices may be a dict of lists (hub)
    or a list of {label, text} (the original X-CSR release)."""
    choices = row["question"]["choices"]
    if isinstance(choices, dict):
        labels, texts = list(choices["label"]), list(choices["text"])
    else:
        labels, texts = [c["label"] for c in choices], [c["text"] for c in choices]
    if row["answerKey"] not in labels or len(labels) != len(texts):
        raise ValueError(f"X-CSQA row {row.get('id')!r}: answerKey {row['answerKey']!r} is not one of "
                         f"the labels {labels} (or labels and texts differ in length).")
    return {"id": str(row["id"]), "stem": row["question"]["stem"], "choices": texts, "labels": labels,
            "answer_index": labels.index(row["answerKey"])}


def load_xcsqa(lang: str, source: str, n: int = 0) -> list[dict[str, Any]]:
    """X-CSQA validation questions of one language, from a hub id or a local folder (see module doc)."""
    if lang not in XCSQA_LANGUAGES:
        raise ValueError(f"X-CSQA has no {lang!r}; its languages: {', '.join(XCSQA_LANGUAGES)}.")
    local = "{lang}" in source or _is_local(source)
    rows = _read_jsonl(_xcsqa_file(source, lang)) if local else _xcsqa_hub_rows(source, lang)
    items = [_xcsqa_item(row) for row in rows]
    if not items:
        raise ValueError(f"X-CSQA {lang!r} from {source!r} holds no question; check the source.")
    return items[:n] if n > 0 else items
