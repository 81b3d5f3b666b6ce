"""The evaluation tasks, one table entry each: held-out text, MGSM and X-CSQA (docs/method.md section 5).

- held-out: perplexity and bits per byte (`scoring.perplexity_many`).
- MGSM (`mgsm_eval_many`): zero-shot prompt "Question: {question}\\nAnswer:", the same English markers for
  every language (only the question's language changes); the log-likelihood of the gold answer " {answer}"
  given the prompt for each of `mgsm_n` problems, and greedy generation with `extract_answer` (rules in its
  docstring) for the first `mgsm_generate_n` of them (a generation costs `gen_max_new_tokens` forwards).
- X-CSQA (`choice_loglik_scores`): log-likelihood of each choice " {text}" after
  "Question: {stem}\\nAnswer:"; predicted = argmax of the log-likelihood divided by the number of
  characters of the continuation (" " + choice), as lm-eval's acc_norm (the unnormalised argmax
  is reported beside it).
A new task is one `Task` in `TASKS` (and its metrics in `metrics.METRICS`); 08's benchmark cells follow from it.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import nn

from ..data import text as data
from .scoring import continuation_logliks, generate_greedy, perplexity_many

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..core.config import BabelConfig

log = logging.getLogger(__name__)

MGSM_PROMPT = "Question: {question}\nAnswer:"
XCSQA_PROMPT = "Question: {stem}\nAnswer:"
ANSWER_TOLERANCE = 1e-6  # |predicted - gold| below this counts as correct (MGSM answers are integers)


# --------------------------------------------------------------------------- MGSM answers

# Separators that only ever group thousands, removed before parsing: (narrow) no-break, thin and figure
# spaces, the apostrophe (Swiss style). A plain space is NOT one ("3 100" reads as 3 and 100).
_GROUP_SPACES = "\u00a0\u202f\u2009\u2007'"
_PUNCT = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-", "\u066b": ".", "\u066c": ",",
                        "\uff0e": "."})
_NUMBER = re.compile(r"(?P<sign>(?<![0-9A-Za-z)\]])-)?(?P<num>\d+(?:[.," + _GROUP_SPACES + r"]\d+)*)")
_NEXT_QUESTION = re.compile(r"\n\s*Question\b|Question\s*:", re.IGNORECASE)
# Answer markers after which the first number is the answer (lower-cased text; several languages).
ANSWER_MARKERS: tuple[str, ...] = (
    "answer is", "answer:", "answer :", "réponse est", "réponse :", "réponse:", "respuesta es",
    "respuesta:", "resposta é", "resposta:", "antwort ist", "antwort:", "答案是", "答案：", "答案:",
    "उत्तर है", "उत्तर:", "উত্তর হল", "উত্তর:", "الإجابة هي", "الإجابة:", "الجواب", "جواب", "答えは", "ответ:",
)


def normalise_digits(text: str) -> str:
    """Every Unicode decimal digit (Arabic-Indic, Devanagari, Bengali, full-width, ...) as ASCII; minus
    signs as '-', the Arabic decimal and thousands separators as '.' and ','."""
    chars = [str(unicodedata.decimal(ch)) if not ch.isascii() and unicodedata.decimal(ch, None) is not None
             else ch for ch in text]
    return "".join(chars).translate(_PUNCT)


def _grouped(groups: list[str]) -> bool:
    """Thousands grouping: a first group of 1-3 digits (no leading 0), then groups of exactly 3."""
    first = groups[0]
    return (1 <= len(first) <= 3 and not (first.startswith("0") and len(first) > 1 or first == "0")
            and all(len(g) == 3 for g in groups[1:]))


def _parse_numeral(s: str) -> list[float]:
    """The number(s) written in a run of digits and separators (see `extract_answer`)."""
    s = re.sub(f"[{_GROUP_SPACES}]", "", s)
    if "," in s and "." in s:
        dec, thou = (",", ".") if s.rfind(",") > s.rfind(".") else (".", ",")
        whole, _, frac = s.rpartition(dec)
        if dec not in whole and _grouped(whole.split(thou)):
            return [float(whole.replace(thou, "") + "." + frac)]
    else:
        sep = "," if "," in s else "."
        groups = s.split(sep)
        if len(groups) == 1:
            return [float(s)]
        if _grouped(groups):
            return [float("".join(groups))]
        if len(groups) == 2:
            return [float(groups[0] + "." + groups[1])]
    return [float(g) for g in re.split(r"[.,]", s) if g]  # e.g. a date 12.03.2024 or a list 1,2,3


def numbers_in(text: str) -> list[float]:
    """Every number of a text, in order (digits normalised first)."""
    out = []
    for m in _NUMBER.finditer(normalise_digits(text)):
        values = _parse_numeral(m.group("num"))
        if m.group("sign"):
            values[0] = -values[0]
        out += values
    return out


def _answer_tail(text: str) -> str | None:
    """The text after the last answer marker, or None without one."""
    lower = text.lower()
    positions = [(lower.rfind(m), m) for m in ANSWER_MARKERS]
    pos, marker = max(positions, key=lambda p: (p[0], len(p[1])))
    return None if pos < 0 else text[pos + len(marker):]


def extract_answer(text: str) -> float | None:
    """The numeric answer of a generation, or None.

    Rules, in order: (1) digits of any script become ASCII (Eastern Arabic, Persian, Devanagari,
    Bengali, full-width, ...); U+2212 and full-width minus become '-'; '٫' and '٬' become '.' and ','.
    (2) The generation is cut where a new "Question" begins (the model continuing the prompt format).
    (3) After the last answer marker ("answer is", "Answer:", "réponse :", "答案是", ...), the first
    number is the answer; without a marker (or no number after it), the last number of the text.
    Numbers: '-' directly before the digits makes them negative unless a letter, digit or ')' precedes
    it ("10-5" is 10 and 5). No-break/thin spaces and apostrophes between digits group thousands; a
    plain space does not. With both ',' and '.', the later one is the decimal point ("1.234,5",
    "1,234.5"). With one kind: groups of exactly three digits after a 1-3 digit head are thousands
    ("1,234", "1.234", "1.000.000": MGSM answers are integers, so "1.234" reads 1234, but "0.125" and
    "3.50" are decimals); a single other separator is a decimal point or comma ("3,5" = 3.5); anything
    else is several numbers ("12.03.2024"). Numbers written in words ("eighteen", "十八") are not read.
    """
    text = normalise_digits(text)
    cut = _NEXT_QUESTION.search(text)
    text = text[:cut.start()] if cut else text
    tail = _answer_tail(text)
    if tail is not None and (after := numbers_in(tail)):
        return after[0]
    found = numbers_in(text)
    return found[-1] if found else None


def is_correct(predicted: float | None, gold: float) -> bool:
    """A predicted number equals the gold answer (within ANSWER_TOLERANCE)."""
    return predicted is not None and abs(predicted - gold) < ANSWER_TOLERANCE


def mgsm_prompt(question: str, lang: str = "") -> str:
    """The zero-shot MGSM prompt; language-neutral ("Question: ...\\nAnswer:" for every `lang`)."""
    return MGSM_PROMPT.format(question=question.strip())


def mgsm_eval(model: nn.Module, tokenizer: PreTrainedTokenizerBase, df: pd.DataFrame, max_new_tokens: int,
              batch_size: int = 8, n_generate: int | None = None, head_dtype: str = "float32") -> pd.DataFrame:
    """Per problem: the gold answer's log-likelihood (sum, mean) and, for the first `n_generate` problems
    (None = all), generation, extracted answer and correct (the others: no generation, correct NA)."""
    return mgsm_eval_many(model, tokenizer, df, max_new_tokens, batch_size, 1, n_generate=n_generate,
                          head_dtype=head_dtype)[0]


def mgsm_eval_many(model: nn.Module, tokenizer: PreTrainedTokenizerBase, df: pd.DataFrame | Sequence[pd.DataFrame],
                   max_new_tokens: int, batch_size: int, n_variants: int,
                   on_batch: Callable[[list[int]], None] | None = None, n_generate: int | None = None,
                   head_dtype: str = "float32") -> list[pd.DataFrame]:
    """`mgsm_eval` of `n_variants` variants of the model at once, batched together; `on_batch(variant of
    each row)` is called before every forward, as in `perplexity_many`. `df`: the problems, or one table of
    problems per variant (e.g. each variant a mask evaluated on another language's problems).

    Greedy decoding is memory-bound (each step reads every weight for one token per row), so all rows of
    up to `batch_size` problems per variant share one generation batch: one pass of decoding steps
    serves every variant and language. Generation costs `max_new_tokens` forwards per problem, the gold
    answer one: hence `n_generate`, the problems that are also generated.
    """
    dfs = [df] * n_variants if isinstance(df, pd.DataFrame) else list(df)
    if len(dfs) != n_variants:
        raise ValueError(f"{len(dfs)} problem tables for {n_variants} variants.")
    prompts = [[mgsm_prompt(q, lang) for q, lang in zip(d["question"], d.get("lang", [""] * len(d)))] for d in dfs]
    items = [(v, i) for v in range(n_variants) for i in range(len(prompts[v]))]
    generated = [j for j, (_, i) in enumerate(items) if n_generate is None or i < n_generate]

    def select(positions: Sequence[int]) -> Callable[[list[int]], None] | None:
        """on_batch for a forward over items[positions[j]], j in the batch: the variant of each row."""
        return None if on_batch is None else (lambda idx: on_batch([items[positions[j]][0] for j in idx]))

    generations = generate_greedy(model, tokenizer, [prompts[v][i] for v, i in (items[j] for j in generated)],
                                  max_new_tokens, batch_size * n_variants, desc="mgsm", stop_at=_NEXT_QUESTION,
                                  on_batch=select(generated))
    gold = continuation_logliks(model, tokenizer,
                                [(prompts[v][i], " " + str(dfs[v]["answer"].iloc[i])) for v, i in items],
                                batch_size, desc="mgsm gold", on_batch=select(range(len(items))),
                                head_dtype=head_dtype)
    text = dict(zip(generated, generations))
    tables = []
    for v in range(n_variants):
        rows = [j for j, (variant, _) in enumerate(items) if variant == v]
        out = dfs[v].copy().reset_index(drop=True)
        out["generation"] = [text.get(j) for j in rows]
        out["predicted"] = [extract_answer(text[j]) if j in text else None for j in rows]
        out["correct"] = pd.array([is_correct(p, float(g)) if j in text else None
                                   for j, p, g in zip(rows, out["predicted"], out["answer_number"])], dtype="boolean")
        out["gold_loglik"] = gold["loglik"].to_numpy()[rows]
        out["gold_tokens"] = gold["n_tokens"].to_numpy()[rows]
        out["gold_loglik_mean"] = out["gold_loglik"] / out["gold_tokens"]
        tables.append(out)
    return tables


# --------------------------------------------------------------------------- X-CSQA


def xcsqa_prompt(stem: str) -> str:
    """The X-CSQA context: 'Question: {stem}\\nAnswer:' (each choice follows after a space)."""
    return XCSQA_PROMPT.format(stem=stem.strip())


def choice_loglik_scores(model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: Sequence[Mapping[str, Any]],
                         batch_size: int = 8, on_batch: Callable[[list[int]], None] | None = None,
                         head_dtype: str = "float32") -> pd.DataFrame:
    """Per item: each choice's log-likelihood (sum, per character), predicted = argmax per character, correct."""
    pairs = [(xcsqa_prompt(item["stem"]), " " + choice) for item in items for choice in item["choices"]]
    scores = continuation_logliks(model, tokenizer, pairs, batch_size, desc="x-csqa", on_batch=on_batch,
                                  head_dtype=head_dtype)["loglik"].to_numpy()
    rows, pos = [], 0
    for item in items:
        n = len(item["choices"])
        loglik = scores[pos:pos + n]
        n_chars = np.array([len(" " + c) for c in item["choices"]])
        norm = loglik / n_chars
        pos += n
        rows.append({"id": item.get("id", ""), "stem": item["stem"], "n_choices": n,
                     "answer_index": int(item["answer_index"]), "loglik": loglik.tolist(),
                     "loglik_norm": norm.tolist(), "predicted": int(np.argmax(norm)),
                     "predicted_sum": int(np.argmax(loglik))})
    out = pd.DataFrame(rows)
    out["correct"] = out["predicted"] == out["answer_index"]
    out["correct_sum"] = out["predicted_sum"] == out["answer_index"]
    return out


# --------------------------------------------------------------------------- per language and mask


def _mgsm_languages(source: str) -> list[str]:
    """MGSM's languages of a source ("" = the default folder); none (with a warning) when the default folder is
    absent, an error for a named one. Ask `languages_with("mgsm", ...)` which of a run's languages it has."""
    try:
        return data.mgsm_languages(source)
    except FileNotFoundError:
        if source:
            raise
        log.warning("No MGSM folder at the default place (%s): MGSM metrics are left out. Set mgsm_dir.",
                    data.mgsm_dir())
        return []


def xcsqa_has(source: str, lang: str) -> bool:
    """Whether an X-CSQA source holds a language (a local folder may hold fewer than the hub's 16)."""
    if lang not in data.XCSQA_LANGUAGES:
        return False
    if "{lang}" not in source and not data._is_local(source):
        return True
    try:
        data._xcsqa_file(source, lang)
    except FileNotFoundError:
        log.warning("X-CSQA source %s has no %r; its X-CSQA accuracy is left out.", source, lang)
        return False
    return True


# --------------------------------------------------------------------------- the table of tasks

Select = Callable[[list[int]], None] | None  # on_batch: the variant of each row of the coming batch


def _heldout(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, langs: Sequence[str],
             select: Select) -> list[dict[str, float]]:
    if len(set(langs)) != 1:
        raise ValueError(f"Held-out variants share one language's packed text; got {sorted(set(langs))}.")
    return perplexity_many(model, tokenizer, data.heldout_texts(cfg, langs[0]), cfg.eval_max_tokens, cfg.seq_len,
                           cfg.batch_size, len(langs), select, block_tokens=cfg.eval_block_tokens,
                           head_dtype=cfg.head_dtype)


def _mgsm(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, langs: Sequence[str],
          select: Select) -> list[pd.DataFrame]:
    problems = {lang: data.load_mgsm(lang, cfg.mgsm_dir, cfg.mgsm_n) for lang in dict.fromkeys(langs)}
    tables = mgsm_eval_many(model, tokenizer, [problems[lang] for lang in langs], cfg.gen_max_new_tokens,
                            cfg.batch_size, len(langs), select, n_generate=cfg.mgsm_generate_n or None,
                            head_dtype=cfg.head_dtype)
    return [t.astype({"predicted": "float64"}) for t in tables]


def _xcsqa(cfg: BabelConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, langs: Sequence[str],
           select: Select) -> list[pd.DataFrame]:
    out = []
    for v, lang in enumerate(langs):  # choice scoring sorts pairs by length; one variant at a time keeps it simple
        on_batch = None if select is None else (lambda idx, v=v: select([v] * len(idx)))
        out.append(choice_loglik_scores(model, tokenizer, data.load_xcsqa(lang, cfg.xcsqa_dataset, cfg.xcsqa_n),
                                        cfg.batch_size, on_batch=on_batch, head_dtype=cfg.head_dtype))
    return out


def _summarise_heldout(result: Mapping[str, float]) -> dict[str, float]:
    return {"perplexity": float(result["perplexity"]), "bits_per_byte": float(result["bits_per_byte"])}


def _summarise_mgsm(result: pd.DataFrame) -> dict[str, float]:
    return {"mgsm_accuracy": float(result["correct"].dropna().astype(bool).mean()),  # over the generated problems
            "mgsm_gold_loglik": float(result["gold_loglik"].mean()),
            "mgsm_gold_loglik_per_token": float(result["gold_loglik_mean"].mean())}


def _summarise_xcsqa(result: pd.DataFrame) -> dict[str, float]:
    return {"xcsqa_accuracy": float(result["correct"].mean())}


# One row per benchmark item, the same columns for every task: what 08's tables, intervals and examples read.
ITEM_COLUMNS = ("item", "answer", "output", "predicted", "correct", "score")


def _mgsm_items(result: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "item": result["question"].astype(str), "answer": result["answer"].astype(str),
        "output": result["generation"].fillna("").astype(str),
        "predicted": [("" if p is None or pd.isna(p) else f"{p:g}") for p in result["predicted"]],
        "correct": result["correct"].astype("boolean"), "score": result["gold_loglik_mean"].astype(float)})


def _xcsqa_items(result: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "item": result["stem"].astype(str), "answer": [f"choice {i}" for i in result["answer_index"]], "output": "",
        "predicted": [f"choice {i}" for i in result["predicted"]], "correct": result["correct"].astype("boolean"),
        "score": [float(norm[i]) for norm, i in zip(result["loglik_norm"], result["answer_index"])]})


def _mgsm_missing(cfg: BabelConfig) -> str:
    try:
        offered = data.mgsm_languages(cfg.mgsm_dir)
    except FileNotFoundError:
        return (f"no MGSM data at {cfg.mgsm_dir or data.mgsm_dir()}: set mgsm_dir to a folder of mgsm_<lang>.tsv "
                "files or to the hub id juletxara/mgsm (or BABEL_MGSM_DIR).")
    return f"MGSM has none of this run's languages (it has {', '.join(offered)})."


def _xcsqa_missing(cfg: BabelConfig) -> str:
    if not cfg.xcsqa_dataset:
        return "xcsqa_dataset is empty: set it to INK-USC/xcsr or a local copy in its layout."
    return f"X-CSQA has none of this run's languages (it has {', '.join(data.XCSQA_LANGUAGES)})."


@dataclass(frozen=True)
class Task:
    """One evaluation task: how variants of the model are run on it, what its cached result yields, and how 08
    presents it. A benchmark (a task with `items`) gets 08's benchmark cells: table, figure, intervals, example."""

    name: str
    run: Callable[..., list[Any]]  # (cfg, model, tokenizer, evaluated language of each variant, select) -> results
    summarise: Callable[[Any], dict[str, float]]  # one cached result -> its metrics (names in metrics.METRICS)
    has_language: Callable[[BabelConfig, str], bool]
    reads: tuple[str, ...]  # config sections a result depends on besides the mask, labels and language: its key
    languages_share_batches: bool = False  # variants of different languages in one batch (generation)
    title: str = ""  # how tables and figures name the task
    about: str = ""  # what it measures and how, in one sentence for 08's reader
    items: Callable[[Any], pd.DataFrame] | None = None  # a cached result -> one row per item (ITEM_COLUMNS)
    score: str = ""  # what an item's `score` is (its interval is a bootstrap over items)
    plotted: tuple[str, ...] = ()  # metrics drawn in 08's benchmark figure
    missing: Callable[[BabelConfig], str] = lambda cfg: ""  # why a run has none of its languages


# Every task's result depends on the model, the batch layout and the score of dynamic top-k; the mask, the
# labels and the evaluated language enter the key beside these (stages._eval_key). So changing, say,
# top_fraction recomputes only the masks that changed, never the unpruned model's evaluation.
_MODEL = ("model", "batching", "scoring", "head")

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("heldout", _heldout, _summarise_heldout, lambda cfg, lang: True, _MODEL + ("text", "heldout", "heldout_eval"),
         title="held-out text", about="perplexity and bits per byte of held-out UDHR text"),
    Task("mgsm", _mgsm, _summarise_mgsm, lambda cfg, lang: lang in _mgsm_languages(cfg.mgsm_dir),
         _MODEL + ("mgsm",), languages_share_batches=True, title="MGSM",
         about="grade-school arithmetic word problems: zero-shot 'Question: ...\\nAnswer:', the number read from a "
               "greedy generation (accuracy) and the log-likelihood of the gold answer",
         items=_mgsm_items, score="gold answer's log-likelihood per token (nats)",
         plotted=("mgsm_accuracy", "mgsm_gold_loglik_per_token"), missing=_mgsm_missing),
    Task("xcsqa", _xcsqa, _summarise_xcsqa,
         lambda cfg, lang: bool(cfg.xcsqa_dataset) and xcsqa_has(cfg.xcsqa_dataset, lang), _MODEL + ("xcsqa",),
         title="X-CSQA", about="commonsense multiple choice: each choice's log-likelihood per character after "
                               "'Question: ...\\nAnswer:', the best one taken",
         items=_xcsqa_items, score="gold choice's log-likelihood per character (nats)",
         plotted=("xcsqa_accuracy",), missing=_xcsqa_missing),
)}


def benchmark_tasks() -> list[str]:
    """The tasks 08 runs as benchmarks on the task masks (every task with items; held-out text has its own cells)."""
    return [name for name, task in TASKS.items() if task.items is not None]


def check_task(name: str) -> Task:
    """The table entry of a task name, or an error naming the known tasks."""
    if name not in TASKS:
        raise ValueError(f"Unknown evaluation task {name!r}; known: {', '.join(TASKS)}.")
    return TASKS[name]


def languages_with(task: str, cfg: BabelConfig, languages: Sequence[str]) -> list[str]:
    """The languages of `languages` that a task has data for under this config."""
    return [lang for lang in languages if check_task(task).has_language(cfg, lang)]
