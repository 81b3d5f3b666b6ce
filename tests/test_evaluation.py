"""Evaluation: perplexity and bits per byte against a by-hand reference, MGSM answer extraction and
generation, X-CSQA log-likelihood scoring (tiny model, brute force and fake models), per-language metrics."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import balanced_labels
from torch import nn

from babel_utils.core.config import BabelConfig
from babel_utils.data import text as data
from babel_utils.evaluate import metrics, tasks
from babel_utils.evaluate.scoring import generate_greedy, perplexity
from babel_utils.evaluate.tasks import choice_loglik_scores, extract_answer, mgsm_eval, mgsm_prompt, xcsqa_prompt
from babel_utils.models.adapters import d_ff, n_layers
from babel_utils.models.loading import load_model
from babel_utils.prune.masks import MaskSpec, dense_spec, sorting_mask

FIXTURES = Path(__file__).parent / "fixtures" / "xcsqa"
TEXTS = ["Everyone has the right to take part in the government of his country.",
         "Toute personne a droit à l'éducation. L'éducation doit être gratuite.",
         "人人有权享有生活水准。 कोई भी व्यक्ति ابتدائی تعلیم মুফত"]


@pytest.fixture(scope="module")
def llama():
    return load_model("tiny-llama", device="cpu")


# --------------------------------------------------------------------------- perplexity


def _reference_nll(model, packed, bos_id) -> tuple[float, list[int]]:
    """Sequence by sequence, no padding, log_softmax by hand."""
    nll, targets = 0.0, []
    mask = data.count_mask(packed, bos_id)
    for ids, am, keep in zip(packed.input_ids, packed.attention_mask, mask):
        n = int(am.sum())
        with torch.no_grad():
            logits = model(input_ids=ids[None, :n]).logits[0].double()
        logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        for t in range(1, n):
            if keep[t]:
                nll -= float(logp[t - 1, ids[t]])
                targets.append(int(ids[t]))
    return nll, targets


@pytest.mark.parametrize("max_tokens", [0, 37])
def test_perplexity_matches_reference(tiny, max_tokens):
    model, tokenizer = tiny
    result = perplexity(model, tokenizer, TEXTS, max_tokens=max_tokens, seq_len=24, batch_size=3)
    packed = data.pack_tokens(tokenizer, TEXTS, 24, budget=max_tokens)
    ref_nll, targets = _reference_nll(model, packed, tokenizer.bos_token_id)
    assert result["n_tokens"] == len(targets) == packed.n_tokens
    assert result["nll_sum"] == pytest.approx(ref_nll, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(ref_nll / len(targets)), rel=1e-5)
    eos = tokenizer.eos_token_id
    if max_tokens == 0:  # whole text scored: the texts' own bytes (EOS separators add none)
        assert result["n_bytes"] == data.text_bytes(TEXTS)
    else:  # byte tokenizer: one byte per scored non-special token
        assert result["n_bytes"] == sum(t != eos for t in targets)
    assert result["bits_per_byte"] == pytest.approx(ref_nll / math.log(2) / result["n_bytes"], rel=1e-5)


def test_perplexity_needs_text(llama):
    model, tokenizer = llama
    with pytest.raises(ValueError, match="No held-out token"):
        perplexity(model, tokenizer, [""], max_tokens=10, seq_len=8, batch_size=2)


# --------------------------------------------------------------------------- MGSM extraction

CASES = [
    ("The answer is 42.", 42),
    ("Janet sells 16 - 3 - 4 = 9 eggs. 9 * 2 = 18. The answer is 18.", 18),
    ("She makes $18 every day.", 18),
    ("Answer: 42\n\nQuestion: How many apples are 3 + 4?", 42),
    (" 5 dollars.\nQuestion: Tom has 7 cats", 5),
    ("Answer: 70,000 because 80,000 + 50,000", 70000),
    ("Il a gagné 70\u202f000 dollars.", 70000),
    ("Le total est 12\u00a0500 €", 12500),
    ("La respuesta es 1.234.", 1234),
    ("Er bezahlt 1.234,5 Euro", 1234.5),
    ("It costs 1,234.5 dollars", 1234.5),
    ("He ends with 3,5 liters", 3.5),
    ("He ends with $3.50", 3.5),
    ("The temperature is -7 degrees", -7),
    ("The change is \u22123", -3),
    ("10-4 = 6", 6),
    ("So 0.125 of the cake", 0.125),
    ("答案是１８。", 18),
    ("所以她每天赚 18 美元。", 18),
    ("الجواب هو ٤٢ دولارًا", 42),
    ("المجموع ١٬٢٣٤", 1234),
    ("उत्तर है १८ रुपये", 18),
    ("উত্তর হল ১৮", 18),
    ("Respuesta: 7 manzanas, porque 3 + 4 = 7. Luego 2 más.", 7),
    ("Réponse : 25 élèves au total, pas 30.", 25),
    ("1 2 3 4 5", 5),
    ("The answer is eighteen.", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_extract_answer(text, expected):
    got = extract_answer(text)
    assert got == (None if expected is None else pytest.approx(expected))


def test_mgsm_prompt_is_language_neutral():
    assert mgsm_prompt(" How many? ", "fr") == "Question: How many?\nAnswer:"
    assert mgsm_prompt("x", "zh") == mgsm_prompt("x", "en")


# --------------------------------------------------------------------------- MGSM on a model


def _continuation_reference(model, tokenizer, context: str, continuation: str) -> float:
    ctx = tokenizer(context)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0].double().log_softmax(-1)
    return sum(float(logp[len(ctx) + j - 1, t]) for j, t in enumerate(cont))


def test_mgsm_eval_mechanics(llama):
    model, tokenizer = llama
    df = pd.DataFrame({"question": ["Tom has 3 apples and buys 4 more. How many?", "What is 2 + 2?",
                                    "A farmer has 120 cows and sells half of them. How many are left?"],
                       "answer": ["7", "4", "60"], "answer_number": [7.0, 4.0, 60.0], "lang": "en"})
    side = tokenizer.padding_side
    out = mgsm_eval(model, tokenizer, df, max_new_tokens=6, batch_size=2)
    assert tokenizer.padding_side == side
    assert len(out) == 3
    assert {"generation", "predicted", "correct", "gold_loglik", "gold_loglik_mean",
            "gold_tokens"} <= set(out.columns)
    assert out["correct"].dtype == "boolean" and not out["correct"].isna().any()
    for row in out.itertuples():
        ref = _continuation_reference(model, tokenizer, mgsm_prompt(row.question), " " + row.answer)
        assert row.gold_loglik == pytest.approx(ref, rel=1e-4)
        assert row.gold_tokens == len((" " + row.answer).encode())
        assert row.gold_loglik_mean == pytest.approx(row.gold_loglik / row.gold_tokens)
    # batched (left-padded) greedy generation equals one prompt at a time
    prompts = [mgsm_prompt(q) for q in df["question"]]
    assert generate_greedy(model, tokenizer, prompts, 6, batch_size=3) == \
        [generate_greedy(model, tokenizer, [p], 6, batch_size=1)[0] for p in prompts]
    # only the first n_generate problems are generated; every problem's gold answer is scored alike
    some = mgsm_eval(model, tokenizer, df, max_new_tokens=6, batch_size=2, n_generate=1)
    assert some["generation"].iloc[0] == out["generation"].iloc[0]
    assert some["generation"].iloc[1:].isna().all() and some["correct"].iloc[1:].isna().all()
    assert some["correct"].iloc[0] == out["correct"].iloc[0]
    np.testing.assert_allclose(some["gold_loglik"], out["gold_loglik"], rtol=1e-6)


# --------------------------------------------------------------------------- X-CSQA


def test_choice_scores_match_brute_force(tiny):
    model, tokenizer = tiny
    # two English items and the French one in the original release's choice format
    items = data.load_xcsqa("en", str(FIXTURES))[:2] + data.load_xcsqa("fr", str(FIXTURES))[2:]
    out = choice_loglik_scores(model, tokenizer, items, batch_size=4)
    assert len(out) == len(items)
    for item, row in zip(items, out.itertuples()):
        context = xcsqa_prompt(item["stem"])
        ref = [_continuation_reference(model, tokenizer, context, " " + c) for c in item["choices"]]
        assert row.n_choices == len(item["choices"]) == len(row.loglik)
        np.testing.assert_allclose(row.loglik, ref, rtol=1e-4)
        norm = np.array(ref) / np.array([len(" " + c) for c in item["choices"]])
        assert row.predicted == int(np.argmax(norm))
        assert row.predicted_sum == int(np.argmax(ref))
        assert row.correct == (row.predicted == item["answer_index"])
    assert 0.0 <= out["correct"].mean() <= 1.0


class FakeLM(nn.Module):
    """A 'model' whose next-token log-probabilities the test sets: `logits_fn(row_ids) -> [T, V]`."""

    def __init__(self, vocab: int, logits_fn) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 1)
        self.vocab, self.logits_fn = vocab, logits_fn

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=torch.stack([self.logits_fn(row.tolist()) for row in input_ids]))


def _oracle(tokenizer, items, offset: int) -> FakeLM:
    """Puts high probability on choice (answer_index + offset) of every item, uniform elsewhere."""
    targets = {}
    for item in items:
        ctx = tuple(tokenizer(xcsqa_prompt(item["stem"]))["input_ids"])
        choice = item["choices"][(item["answer_index"] + offset) % len(item["choices"])]
        targets[ctx] = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
    vocab = len(tokenizer)

    def logits_fn(row):
        logits = torch.zeros(len(row), vocab)
        ctx = next(c for c in targets if tuple(row[:len(c)]) == c)
        want = targets[ctx]
        for p in range(len(ctx) - 1, min(len(row) - 1, len(ctx) - 1 + len(want))):
            done = row[len(ctx):p + 1]
            if done == want[:len(done)]:
                logits[p, want[len(done)]] = 10.0
        return logits
    return FakeLM(vocab, logits_fn)


@pytest.mark.parametrize("offset,accuracy", [(0, 1.0), (1, 0.0), (3, 0.0)])
def test_choice_scores_with_fake_oracle(llama, offset, accuracy):
    _, tokenizer = llama
    items = data.load_xcsqa("en", str(FIXTURES)) + data.load_xcsqa("fr", str(FIXTURES))
    out = choice_loglik_scores(_oracle(tokenizer, items, offset), tokenizer, items, batch_size=3)
    assert out["correct"].mean() == accuracy
    expected = [(it["answer_index"] + offset) % len(it["choices"]) for it in items]
    assert out["predicted"].tolist() == expected


def test_choice_scores_normalise_by_characters(llama):
    _, tokenizer = llama
    ids = {ch: tokenizer(ch, add_special_tokens=False)["input_ids"][0] for ch in " ab"}
    vocab = len(tokenizer)
    logp = torch.full((vocab,), math.log((1 - 2 * math.exp(-1) - math.exp(-3)) / (vocab - 3)))
    logp[ids[" "]], logp[ids["a"]], logp[ids["b"]] = -1.0, -1.0, -3.0
    fake = FakeLM(vocab, lambda row: logp.expand(len(row), vocab).clone())
    items = [{"id": "x", "stem": "?", "choices": ["aaaa", "b"], "answer_index": 0}]
    out = choice_loglik_scores(fake, tokenizer, items)
    np.testing.assert_allclose(out.loc[0, "loglik"], [-5.0, -4.0], rtol=1e-5)
    np.testing.assert_allclose(out.loc[0, "loglik_norm"], [-1.0, -2.0], rtol=1e-5)
    assert out.loc[0, "predicted"] == 0 and out.loc[0, "predicted_sum"] == 1
    assert bool(out.loc[0, "correct"]) and not bool(out.loc[0, "correct_sum"])


# --------------------------------------------------------------------------- per language and mask


def _small_cfg(tmp_path: Path) -> BabelConfig:
    mgsm = tmp_path / "mgsm"
    mgsm.mkdir()
    (mgsm / "mgsm_en.tsv").write_text("What is 2 + 2?\t4\nTom has 3 apples and buys 4. How many?\t7\n",
                                      encoding="utf-8")
    return BabelConfig(languages=("en", "fr", "hi"), mgsm_dir=str(mgsm), mgsm_n=2, xcsqa_dataset=str(FIXTURES),
                       xcsqa_n=2, eval_max_tokens=64, seq_len=32, batch_size=4, gen_max_new_tokens=4)


def test_every_task_of_the_table_runs_through_the_stage_and_skips_languages_without_data(llama, tmp_path):
    from babel_utils.run import stages
    model, tokenizer = llama
    cfg = _small_cfg(tmp_path)
    assert tasks.languages_with("mgsm", cfg, cfg.languages) == ["en"]  # no mgsm_fr.tsv or mgsm_hi.tsv here
    assert tasks.languages_with("xcsqa", cfg, cfg.languages) == ["en", "fr"]  # nor X-CSQA-hi in the fixtures
    assert tasks.languages_with("xcsqa", cfg.replace(xcsqa_dataset=""), cfg.languages) == []
    labels = balanced_labels(n_layers(model), d_ff(model), 16)
    dense = dense_spec("en", 4, 16)
    sort = MaskSpec("en", "sorting", 0.5, None, sorting_mask(np.random.default_rng(0).random((4, 16)), 0.5))
    for name, task in tasks.TASKS.items():
        rows = stages.evaluate_jobs(cfg, model, tokenizer, labels, [(dense, "en"), (sort, "en")], name)
        values = rows.pivot(index="metric", columns="mask", values="value")
        assert set(values.index) == set(task.summarise(stages.cache.cached(
            cfg, "eval", lambda: None, **stages._eval_key(dense, labels, "en", name))[name]))
        assert set(values.index) <= set(metrics.METRICS)  # every metric a task yields is in the metric table
        assert (values["dense"] != values["sorting@0.5"]).any() or name == "xcsqa", name  # the mask acts
    heldout = stages.evaluate_jobs(cfg, model, tokenizer, labels, [(dense, "en")], "heldout")
    ref = perplexity(model, tokenizer, data.heldout_texts(cfg, "en"), cfg.eval_max_tokens, cfg.seq_len, 4,
                     head_dtype=cfg.head_dtype)
    assert heldout.set_index("metric")["value"]["bits_per_byte"] == pytest.approx(ref["bits_per_byte"], rel=1e-6)
    with pytest.raises(ValueError, match="Unknown evaluation task 'bleu'; known: heldout, mgsm, xcsqa"):
        tasks.check_task("bleu")


# --------------------------------------------------------------------------- logits only where needed


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_next_token_logprobs_equal_the_full_model(tiny, softcap):
    from babel_utils.evaluate.scoring import _next_token_logprobs

    model, tokenizer = tiny
    model.config.final_logit_softcapping = softcap if model.config.model_type == "gemma3_text" else None
    try:
        enc = tokenizer(["Everyone has the right to rest and leisure.", "Toute personne"], return_tensors="pt",
                        padding=True)
        ids, am = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=am).logits.double().log_softmax(-1)
        ref = ref[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        got = _next_token_logprobs(model, ids, am)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        scored = am[:, 1:].bool()
        part = _next_token_logprobs(model, ids, am, scored)
        torch.testing.assert_close(part[scored], ref[scored], rtol=1e-5, atol=1e-5)
        assert (part[~scored] == 0).all()
    finally:
        model.config.final_logit_softcapping = None


def test_perplexity_does_not_depend_on_batching(tiny):
    model, tokenizer = tiny
    one = perplexity(model, tokenizer, TEXTS, max_tokens=50, seq_len=24, batch_size=1)
    many = perplexity(model, tokenizer, TEXTS, max_tokens=50, seq_len=24, batch_size=8)
    assert one["n_tokens"] == many["n_tokens"] == 50
    assert one["nll_sum"] == pytest.approx(many["nll_sum"], rel=1e-5)


def test_generation_stopped_early_is_a_prefix_of_the_full_one(llama):
    import re

    from babel_utils.evaluate.scoring import _StopAt
    from babel_utils.evaluate.tasks import _NEXT_QUESTION

    model, tokenizer = llama
    prompts = [mgsm_prompt("What is 2 + 2?"), mgsm_prompt("Tom has 3 apples and buys 4 more. How many?")]
    full = generate_greedy(model, tokenizer, prompts, 12, batch_size=2)
    stopped = generate_greedy(model, tokenizer, prompts, 12, batch_size=2, stop_at=re.compile("."))
    for f, s in zip(full, stopped):
        assert f.startswith(s) and len(s) <= len(f)
    done = _StopAt(tokenizer, 0, _NEXT_QUESTION)._done
    assert done(" 18\nQuestion: x") and done(" 18 Question : 5") and not done(" 18 Question :")
    assert not done(" 18\nQuestion") and not done(" 18 Questions are hard")
    assert extract_answer(" 18\nQuestion: 5 apples") == extract_answer(" 18\nQuestion:") == 18


# --------------------------------------------------------------------------- tables and verdicts


def _tidy_fixture() -> pd.DataFrame:
    """Two languages; sorting beats every random seed in en, loses in fr; layerwise matches dense in en."""
    from babel_utils.evaluate.comparisons import tidy

    rows = []

    def add(lang, method, ratio, seed, value, target=None, mask=None):
        rows.append({"language": lang, "target": target or lang, "method": method, "ratio": ratio, "seed": seed,
                     "top_k": None, "mask": mask or (method if method == "dense" else
                                                     f"{method}@{ratio:g}" + (f"#{seed}" if seed is not None else "")),
                     "metric": "bits_per_byte", "value": value})
    for lang, dense, sort, layer, rand in [("en", 1.0, 1.05, 1.005, (1.2, 1.3, 1.25)),
                                           ("fr", 2.0, 2.5, 2.2, (2.3, 2.4, 2.35))]:
        add(lang, "dense", 0.0, None, dense)
        add(lang, "sorting", 0.25, None, sort)
        add(lang, "layerwise", 0.25, None, layer)
        for seed, value in enumerate(rand):
            add(lang, "random", 0.25, seed, value)
    add("fr", "sorting", 0.25, None, 2.1, target="en", mask="sorting@0.25")
    add("en", "sorting", 0.25, None, 1.4, target="fr", mask="sorting@0.25")
    return tidy(rows)


def test_guided_vs_random_and_verdict():
    from babel_utils.evaluate.comparisons import guided_vs_random, verdict

    cmp = guided_vs_random(_tidy_fixture())
    row = cmp[(cmp.language == "en") & (cmp.method == "sorting")].iloc[0]
    assert row["random_mean"] == pytest.approx(1.25) and row["gain"] == pytest.approx(0.2)
    assert row["beats_random_mean"] and row["beats_every_seed"] and row["n_seeds"] == 3
    fr = cmp[(cmp.language == "fr") & (cmp.method == "sorting")].iloc[0]
    assert not fr["beats_random_mean"] and fr["gain"] == pytest.approx(-0.15)
    text = verdict(cmp)
    assert "sorting at 25% pruned: better than the random mean in 1 of 2 languages" in text
    assert "It does NOT beat random in: French." in text
    assert "in 75% of the (language, method, ratio) cases, not in all" in text


def test_relative_to_dense():  # the match table and its sentence, with intervals: tests/test_intervals.py
    from babel_utils.evaluate.comparisons import relative_to_dense

    df = _tidy_fixture()
    rel = relative_to_dense(df[df.language == df.target])
    assert rel.loc[(rel.language == "en") & (rel.method == "layerwise"), "matches"].item()  # +0.5 % <= 1 %
    assert not rel.loc[(rel.language == "en") & (rel.method == "sorting"), "matches"].item()


def test_cross_language_matrix_and_sentence():
    from babel_utils.evaluate.comparisons import cross_language_matrix, describe_cross_language

    df = _tidy_fixture()
    df = df[(df.method == "dense") | ((df.method == "sorting"))]
    m = cross_language_matrix(df)
    assert m.loc["en", "fr"] == pytest.approx(0.05) and m.loc["fr", "en"] == pytest.approx(0.4)
    assert m.loc["en", "en"] == pytest.approx(0.05)
    text = describe_cross_language(m)
    assert "least for 1 of 2 languages" in text and "same family, other genus +22.5% (2 pairs)" in text


def test_split_comparison_sentence():
    from babel_utils.evaluate.comparisons import describe_split_comparison

    df = _tidy_fixture()
    df = pd.concat([df.assign(split="kmeans"),
                    df.assign(split="random", value=np.where(df.method == "dense", df.value, df.value * 1.1))])
    df = df[df.language == df.target]
    text = describe_split_comparison(df)
    assert "Under frequency sorting, by point estimate the kmeans split's experts lose least" in text


def test_task_summaries_and_metric_table():
    summarise = {name: task.summarise for name, task in tasks.TASKS.items()}
    assert summarise["heldout"]({"perplexity": 3.0, "bits_per_byte": 1.0, "n_tokens": 5}) == \
        {"perplexity": 3.0, "bits_per_byte": 1.0}
    mgsm = pd.DataFrame({"correct": [True, False], "gold_loglik": [-1.0, -3.0], "gold_loglik_mean": [-0.5, -1.5]})
    assert summarise["mgsm"](mgsm) == {"mgsm_accuracy": 0.5, "mgsm_gold_loglik": -2.0,
                                       "mgsm_gold_loglik_per_token": -1.0}
    assert metrics.lower_is_better("bits_per_byte") and not metrics.lower_is_better("mgsm_accuracy")
    assert metrics.label("bits_per_byte") == "bits per byte"
    with pytest.raises(ValueError, match="Unknown metric 'bleu'"):
        metrics.label("bleu")


# --------------------------------------------------------------------------- cached evaluation stages


def test_cached_evaluation_stages(llama, tmp_path):
    from babel_utils.evaluate.comparisons import mask_label
    from babel_utils.run import stages

    model, tokenizer = llama
    cfg = _small_cfg(tmp_path)
    labels = balanced_labels(n_layers(model), d_ff(model), 16)
    mask = sorting_mask(np.random.default_rng(0).random((4, 16)), 0.5)
    spec = MaskSpec("en", "sorting", 0.5, None, mask)
    jobs = [(dense_spec("en", 4, 16), "en"), (spec, "en"), (spec, "fr")]
    first = stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, "heldout")
    assert list(first["mask"].unique()) == ["dense", "sorting@0.5"]
    assert set(first["metric"]) == {"perplexity", "bits_per_byte"} and len(first) == 6
    with apply_ref(model, labels, mask):
        ref = perplexity(model, tokenizer, data.heldout_texts(cfg, "fr"), cfg.eval_max_tokens, cfg.seq_len, 4,
                         head_dtype=cfg.head_dtype)
    got = first[(first.language == "fr") & (first.metric == "bits_per_byte")]["value"].item()
    assert got == pytest.approx(ref["bits_per_byte"], rel=1e-6)
    assert (first["target"] == "en").all()
    # cached: a second call computes nothing (the model would fail if it ran)
    again = stages.evaluate_jobs(cfg, None, tokenizer, labels, jobs, "heldout")
    pd.testing.assert_frame_equal(first, again)
    # keyed on what an evaluation depends on: other recording or pruning parameters (which would make other
    # masks and labels, themselves keyed by hash) leave the unpruned model's evaluation cached
    from babel_utils.core import cache
    dense_key = stages._eval_key(dense_spec("en", 4, 16), labels, "en", "heldout")
    assert cache.is_cached(cfg.replace(top_fraction=0.2, prune_ratios=(0.3,), n_experts=8), "eval", **dense_key)
    assert not cache.is_cached(cfg.replace(eval_max_tokens=32), "eval", **dense_key)
    assert not cache.is_cached(cfg.replace(model="tiny-gemma3"), "eval", **dense_key)
    # another mask of the same name is another cache entry
    other = MaskSpec("en", "sorting", 0.5, None, ~mask | mask.all(axis=1, keepdims=True))
    assert stages._eval_key(other, labels, "en", "heldout") != stages._eval_key(spec, labels, "en", "heldout")
    mgsm = stages.evaluate_jobs(cfg, model, tokenizer, labels, [(spec, "en")], "mgsm")
    assert set(mgsm["metric"]) == {"mgsm_accuracy", "mgsm_gold_loglik", "mgsm_gold_loglik_per_token"}
    assert mask_label(MaskSpec("fr", "threshold", 0.3, None, mask)) == "threshold"
    with pytest.raises(ValueError, match="Unknown evaluation task"):
        stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, "bleu")


def apply_ref(model, labels, mask):
    from babel_utils.prune.apply import apply_mask

    return apply_mask(model, labels, mask)


def test_perplexity_and_mgsm_of_several_masks_at_once(llama, tmp_path):
    from babel_utils.evaluate.scoring import perplexity_many
    from babel_utils.evaluate.tasks import mgsm_eval_many
    from babel_utils.prune.apply import apply_mask, apply_row_masks

    model, tokenizer = llama
    labels = balanced_labels(n_layers(model), d_ff(model), 16)
    rng = np.random.default_rng(1)
    masks = np.stack([np.ones((4, 16), dtype=bool)] + [sorting_mask(rng.random((4, 16)), r) for r in (0.25, 0.5)])
    with apply_row_masks(model, labels, masks) as select:
        many = perplexity_many(model, tokenizer, TEXTS, 60, 24, 4, len(masks), select)
    for mask, got in zip(masks, many):
        with apply_mask(model, labels, mask):
            ref = perplexity(model, tokenizer, TEXTS, max_tokens=60, seq_len=24, batch_size=2)
        assert got["n_tokens"] == ref["n_tokens"] and got["n_bytes"] == ref["n_bytes"]
        assert got["nll_sum"] == pytest.approx(ref["nll_sum"], rel=1e-5)
    df = pd.DataFrame({"question": ["What is 2 + 2?", "Tom has 3 apples and buys 4. How many?"],
                       "answer": ["4", "7"], "answer_number": [4.0, 7.0], "lang": "en"})
    with apply_row_masks(model, labels, masks) as select:
        tables = mgsm_eval_many(model, tokenizer, df, 5, 4, len(masks), select)
    for mask, table in zip(masks, tables):
        with apply_mask(model, labels, mask):
            ref = mgsm_eval(model, tokenizer, df, max_new_tokens=5, batch_size=1)
        assert table["generation"].tolist() == ref["generation"].tolist()
        np.testing.assert_allclose(table["gold_loglik"], ref["gold_loglik"], rtol=1e-5)


def test_mgsm_jobs_of_several_languages_share_batches(llama, tmp_path):
    from babel_utils.prune.apply import apply_mask
    from babel_utils.run import stages

    model, tokenizer = llama
    cfg = _small_cfg(tmp_path)
    (tmp_path / "mgsm" / "mgsm_fr.tsv").write_text("Combien font 3 + 5 ?\t8\n", encoding="utf-8")
    labels = balanced_labels(n_layers(model), d_ff(model), 16)
    spec = MaskSpec("en", "sorting", 0.5, None, sorting_mask(np.random.default_rng(0).random((4, 16)), 0.5))
    jobs = [(dense_spec("en", 4, 16), "en"), (spec, "en"), (dense_spec("fr", 4, 16), "fr"), (spec, "fr")]
    together = stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, "mgsm")
    assert together.groupby(["language", "mask"]).size().tolist() == [3, 3, 3, 3]
    for s, lang in jobs:
        problems = data.load_mgsm(lang, cfg.mgsm_dir, cfg.mgsm_n)
        with apply_mask(model, labels, s.mask):
            ref = mgsm_eval(model, tokenizer, problems, cfg.gen_max_new_tokens, batch_size=1,
                            n_generate=cfg.mgsm_generate_n, head_dtype=cfg.head_dtype)
        got = stages.stored_result(cfg, labels, s, lang, "mgsm")
        assert got["generation"].tolist() == ref["generation"].tolist()
        np.testing.assert_allclose(got["gold_loglik"], ref["gold_loglik"], rtol=1e-5)



def test_heldout_results_carry_the_blocks_the_intervals_resample(llama, tmp_path):
    from babel_utils.run import stages
    model, tokenizer = llama
    cfg = _small_cfg(tmp_path).replace(eval_block_tokens=8)
    labels = balanced_labels(n_layers(model), d_ff(model), 16)
    dense = dense_spec("en", 4, 16)
    sort = MaskSpec("en", "sorting", 0.5, None, sorting_mask(np.random.default_rng(0).random((4, 16)), 0.5))
    jobs = [(dense, "en"), (sort, "en")]
    stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, "heldout")
    blocks = stages.heldout_blocks(cfg, labels, jobs)
    rows = stages.evaluate_jobs(cfg, model, tokenizer, labels, jobs, "heldout")
    bpb = rows[rows.metric == "bits_per_byte"].set_index("mask")["value"]
    for spec, mask in ((dense, "dense"), (sort, "sorting@0.5")):
        b = blocks[("en", "en", mask)]
        assert len(b.nll) == math.ceil(cfg.eval_max_tokens / 8)
        assert b.bits_per_byte() == pytest.approx(bpb[mask], rel=1e-9)  # byte-level tokenizer: bytes add up exactly


def test_rows_are_batched_by_length_and_each_is_scored_once():
    from babel_utils.evaluate.scoring import _length_batches

    length = [255, 255, 2]  # 512 held-out tokens in rows of BOS + 255
    items = [(v, r) for v in range(5) for r in range(3)]
    batches = _length_batches(items, length, 4)
    assert sorted(i for b in batches for i in b) == sorted(items)
    assert all(len(b) <= 4 for b in batches)
    # no batch of full rows is padded by a short one: the full rows fill 3 batches, the short ones 2
    assert [sorted({length[r] for _, r in b}) for b in batches] == [[255]] * 3 + [[2]] * 2
