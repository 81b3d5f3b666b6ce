"""A short, reproducible instruction tuning of the base model, for notebook 06 (SPEC 4).

The paper compares base models with their released instruction-tuned variants. Offline there is
no such pair of one model, so `cfg.tuned_model = ""` makes one here, and says so plainly: a short
supervised instruction tuning of the base model on translation instructions built from the
bundled UDHR (calibration articles only, every direction between the pivot language, English
when studied, and each other language of `cfg.languages`). It is *not* a released instruct model:
a few dozen AdamW steps on a few hundred examples, enough to move the weights measurably and
to lower the loss on its instructions, no more. With `cfg.tuned_model` set to a hub id or a local
folder, that model is loaded instead (the paper's real pairs, e.g. a Llama 2 chat model).

Compute on the CPU is dominated by the LM head of a large vocabulary (Gemma 3: 262k words), so
the loss computes logits only at the positions that predict a target token: the body's hidden
states at those positions go through `lm_head` (with the final logit soft-capping of the model's
config when it has one). Embeddings (tied to the LM head in Gemma) stay frozen; `tuning_params`
picks which decoder weights move: every weight of the decoder layers ("layers", default), only
the FFNs ("mlp") or only the attention blocks ("attention").

The tuned model is cached by the parameters of the "tuning" stage (cache.STAGE_FIELDS) in
`cache.stage_dir(cfg, "tuning")`: `model/` (save_pretrained, with the tokenizer),
`history.parquet` (loss per step) and `meta.json` (written last: only a complete folder counts).
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from . import cache, data, models, results
from .adapters import body, d_ff, get_adapter, layers, n_layers
from .config import BabelConfig
from .languages import get_language

log = logging.getLogger(__name__)

TUNING_PARAMS: tuple[str, ...] = ("layers", "mlp", "attention")
PIVOT = "en"  # instructions translate from and into this language when it is studied
SOURCE_SHARE = 0.5  # at most this share of an example's tokens goes to the source article
PROMPT = ("Translate article {article} of the Universal Declaration of Human Rights from {src} to {tgt}.\n"
          "{src}: {text}\n{tgt}:")
OFFLINE_LABEL = "a short instruction tuning we ran here, not a released instruct model"
EVAL_EXAMPLES = 16  # losses before / after are measured on this many instructions of each set (fixed draw)


@dataclass(frozen=True)
class Example:
    """One instruction: a prompt and the target text the model learns to continue it with."""

    prompt: str
    target: str
    source: str  # language codes
    language: str
    article: int


@dataclass
class Encoded:
    """Tokenised examples, right-padded: ids, attention mask and which positions are target tokens."""

    input_ids: torch.Tensor  # [n, T]
    attention_mask: torch.Tensor  # [n, T]
    target_mask: torch.Tensor  # [n, T] bool: the token is a target token (its loss counts)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: Sequence[int] | torch.Tensor) -> "Encoded":
        """Some rows, trimmed to their longest real length."""
        index = torch.as_tensor(index, dtype=torch.long)
        mask = self.attention_mask[index]
        width = int(mask.sum(1).max())
        return Encoded(self.input_ids[index, :width], mask[:, :width], self.target_mask[index, :width])


@dataclass
class Tuned:
    """A tuned model (or the configured instruct model) and how it was made."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # what to call it in tables and figures
    label: str  # in words: released model or our short tuning
    folder: Path | None  # where the offline tuned model is stored (None for cfg.tuned_model)
    history: pd.DataFrame  # step, loss (empty for cfg.tuned_model)
    meta: dict[str, Any]  # steps, losses before / after, seconds, parameters


def check_tuning_config(cfg: BabelConfig) -> None:
    """A clear error for a bad tuning parameter (the config validates the rest)."""
    if cfg.tuning_params not in TUNING_PARAMS:
        raise ValueError(f"Config key 'tuning_params' has the bad value {cfg.tuning_params!r}; "
                         f"allowed: {', '.join(TUNING_PARAMS)}.")
    for key in ("tuning_steps", "tuning_batch", "tuning_max_tokens"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"Config key {key!r} has the bad value {value!r}; allowed: an integer >= 1.")
    if cfg.tuning_max_tokens < 16:
        raise ValueError(f"Config key 'tuning_max_tokens' is {cfg.tuning_max_tokens}; an instruction needs "
                         "at least 16 tokens.")
    if not 0.0 < float(cfg.tuning_lr) < 1.0:
        raise ValueError(f"Config key 'tuning_lr' has the bad value {cfg.tuning_lr!r}; allowed: a number in (0, 1).")


# --------------------------------------------------------------------------- instruction data


def directions(languages: Sequence[str]) -> list[tuple[str, str]]:
    """(source, target) pairs: from the pivot into every other language and back."""
    languages = list(languages)
    if len(languages) < 2:
        raise ValueError(f"The offline instruction data translates between languages and needs at least two; "
                         f"got {languages}. Add a language, or set tuned_model to an instruction-tuned model.")
    pivot = PIVOT if PIVOT in languages else languages[0]
    others = [lang for lang in languages if lang != pivot]
    return [(pivot, lang) for lang in others] + [(lang, pivot) for lang in others]


def instruction_examples(cfg: BabelConfig, articles: tuple[int, int] | None = None) -> list[Example]:
    """Translation instructions from the bundled UDHR: every direction x article, in a fixed order.

    `articles` defaults to `cfg.calib_articles` (training data); the held-out articles make the
    held-out instructions. The UDHR is the instruction source whatever `text_source` is.
    """
    first, last = articles or cfg.calib_articles
    out = []
    for src, tgt in directions(cfg.languages):
        src_text, tgt_text = data.udhr_articles(src), data.udhr_articles(tgt)
        src_name, tgt_name = get_language(src).name, get_language(tgt).name
        for n in range(first, last + 1):
            if n not in src_text or n not in tgt_text:
                raise ValueError(f"The UDHR text lacks article {n} in {src!r} or {tgt!r}.")
            out.append(Example(PROMPT.format(article=n, src=src_name, tgt=tgt_name, text=src_text[n]),
                               " " + tgt_text[n], src, tgt, n))
    return out


def encode(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> Encoded:
    """Tokenise as BOS + prompt + target + EOS, at most `max_tokens` tokens.

    The source article inside the prompt is cut first (to at most SOURCE_SHARE of `max_tokens`), then
    the target's end; every example keeps at least one target token.
    """
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows, targets = [], []
    for ex in examples:
        prompt = tokenizer(ex.prompt, add_special_tokens=False).input_ids
        if len(prompt) > int(max_tokens * SOURCE_SHARE):
            # keep the prompt's last line ("<target language>:") after the cut source text
            tail = tokenizer("\n" + ex.prompt.rsplit("\n", 1)[1], add_special_tokens=False).input_ids
            prompt = prompt[: max(1, int(max_tokens * SOURCE_SHARE) - len(tail))] + tail
        target = tokenizer(ex.target, add_special_tokens=False).input_ids + eos
        room = max_tokens - len(bos) - len(prompt)
        if room < 1:
            raise ValueError(f"tuning_max_tokens={max_tokens} leaves no room for the target; raise it.")
        ids = bos + prompt + target[:room]
        rows.append(ids)
        targets.append([False] * (len(bos) + len(prompt)) + [True] * len(target[:room]))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    target_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (ids, tgt) in enumerate(zip(rows, targets)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        target_mask[i, : len(ids)] = torch.tensor(tgt)
    return Encoded(input_ids, attention, target_mask)


# --------------------------------------------------------------------------- loss and training


def softcap(model: nn.Module) -> float | None:
    """The final logit soft-capping of the model's config (Gemma 2), or None."""
    config = getattr(model, "config", None)
    value = getattr(getattr(config, "text_config", config), "final_logit_softcapping", None)
    return float(value) if value else None


def target_loss(model: PreTrainedModel, batch: Encoded) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the target tokens, computing logits only where a target token is predicted."""
    device = model.get_input_embeddings().weight.device
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    hidden = body(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    predicts = batch.target_mask[:, 1:].to(device)  # position t predicts token t + 1
    h = hidden[:, :-1][predicts]
    logits = model.get_output_embeddings()(h).float()
    cap = softcap(model)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    labels = ids[:, 1:][predicts]
    return F.cross_entropy(logits, labels), int(labels.numel())


def mean_loss(model: PreTrainedModel, encoded: Encoded, batch_size: int) -> float:
    """Token-weighted mean target loss over every example (no gradients)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            loss, k = target_loss(model, encoded.rows(range(start, min(start + batch_size, len(encoded)))))
            total += float(loss) * k
            n += k
    return total / max(n, 1)


def evaluation_rows(encoded: Encoded, n: int = EVAL_EXAMPLES) -> Encoded:
    """At most `n` examples of a set, drawn once with a fixed generator, for the losses before and after."""
    index = np.sort(np.random.default_rng(0).choice(len(encoded), min(n, len(encoded)), replace=False))
    return encoded.rows(index)


def trainable_parameters(model: PreTrainedModel, which: str) -> list[tuple[str, nn.Parameter]]:
    """The decoder weights that move: every decoder-layer weight, only the FFNs, or only attention."""
    if which not in TUNING_PARAMS:
        raise ValueError(f"Unknown tuning_params {which!r}; allowed: {', '.join(TUNING_PARAMS)}.")
    mlp_name = get_adapter(model).mlp
    chosen = []
    for i, layer in enumerate(layers(model)):
        for name, param in layer.named_parameters():
            if which == "layers" or (which == "mlp" and name.startswith(mlp_name + ".")) or \
                    (which == "attention" and name.startswith("self_attn.")):
                chosen.append((f"layers.{i}.{name}", param))
    if not chosen:
        raise ValueError(f"tuning_params={which!r} selects no weight of this {model.config.model_type} model.")
    return chosen


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Example indices of every step: seeded epochs of a permutation, each batch within one epoch or across."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    order = np.concatenate([rng.permutation(n_examples) for _ in range(math.ceil(needed / n_examples))])
    return [order[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


def tune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: BabelConfig) -> tuple[pd.DataFrame, dict]:
    """Tune `model` in place on the instruction data; returns the loss per step and a summary.

    Seeded (`cfg.seed`): the batch order and torch's generator; on the CPU the result is bitwise
    reproducible for a given machine and torch build.
    """
    check_tuning_config(cfg)
    torch.manual_seed(cfg.seed)
    train = encode(instruction_examples(cfg), tokenizer, cfg.tuning_max_tokens)
    heldout = encode(instruction_examples(cfg, cfg.heldout_articles), tokenizer, cfg.tuning_max_tokens)
    train_eval, heldout_eval = evaluation_rows(train), evaluation_rows(heldout)
    params = trainable_parameters(model, cfg.tuning_params)
    model.requires_grad_(False)
    for _, p in params:
        p.requires_grad_(True)
    model.eval()  # no dropout: the loss is a deterministic function of the weights
    before = {"train": mean_loss(model, train_eval, cfg.tuning_batch),
              "heldout": mean_loss(model, heldout_eval, cfg.tuning_batch)}
    opt = torch.optim.AdamW([p for _, p in params], lr=cfg.tuning_lr, weight_decay=0.0)
    rows, start = [], time.perf_counter()
    for step, index in enumerate(batch_order(len(train), cfg.tuning_steps, cfg.tuning_batch, cfg.seed), start=1):
        loss, n_tok = target_loss(model, train.rows(index))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append({"step": step, "loss": float(loss.detach()), "target_tokens": n_tok})
        log.info("tuning step %d/%d: loss %.4f", step, cfg.tuning_steps, rows[-1]["loss"])
    seconds = time.perf_counter() - start
    model.requires_grad_(False)
    after = {"train": mean_loss(model, train_eval, cfg.tuning_batch),
             "heldout": mean_loss(model, heldout_eval, cfg.tuning_batch)}
    n_params = sum(p.numel() for _, p in params)
    summary = {
        "steps": cfg.tuning_steps, "batch": cfg.tuning_batch, "lr": cfg.tuning_lr, "params": cfg.tuning_params,
        "n_trainable": int(n_params), "n_train_examples": len(train), "n_eval_examples": len(train_eval),
        "train_target_tokens": int(train.target_mask.sum()),
        "directions": [f"{s}->{t}" for s, t in directions(cfg.languages)],
        "loss_before_train": before["train"], "loss_after_train": after["train"],
        "loss_before_heldout": before["heldout"], "loss_after_heldout": after["heldout"],
        "seconds": seconds,
    }
    return pd.DataFrame(rows, columns=["step", "loss", "target_tokens"]), summary


# --------------------------------------------------------------------------- the cached tuned model


def tuned_dir(cfg: BabelConfig) -> Path:
    """Cache folder of the offline tuned model of this config."""
    return cache.stage_dir(cfg, "tuning")


def _load_folder(folder: Path, cfg: BabelConfig) -> PreTrainedModel:
    dev = models.resolve_device(cfg.device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=models.resolve_dtype(cfg.dtype, dev)).to(dev)
    model.eval()
    model.requires_grad_(False)
    return model


def offline_tuned(cfg: BabelConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Tuned:
    """The offline tuned model: loaded from the cache, else tuned from a copy of `model` and stored.

    The stage folder is written in a temporary folder and renamed when complete, so a killed run
    leaves nothing that counts as cached.
    """
    check_tuning_config(cfg)
    folder = tuned_dir(cfg)
    if not (folder / "meta.json").exists():
        model = copy.deepcopy(model)  # the caller's base model stays the base model
        history, summary = tune(model, tokenizer, cfg)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            model.save_pretrained(tmp / "model")
            tokenizer.save_pretrained(tmp / "model")
            results.save(tmp, "history", history)
            results.write_json(tmp / "meta.json", results.sidecar(
                cfg.to_dict(), stage="tuning", names=["history"], params=cache.stage_params(cfg, "tuning"),
                summary=summary))
            if folder.exists():  # an incomplete folder of a killed run
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        del model
    else:
        log.info("tuning: cached in %s", folder)
    meta = results.read_json(folder / "meta.json")
    tuned = _load_folder(folder / "model", cfg)
    return Tuned(tuned, tokenizer, name=f"{cfg.model} + short instruction tuning", label=OFFLINE_LABEL,
                 folder=folder, history=results.load(folder, "history"), meta=meta["summary"])


def check_same_layout(base_labels: np.ndarray, tuned: PreTrainedModel, name: str) -> None:
    """The tuned model must have the base model's layers and FFN width, so that expert ids match."""
    expected = base_labels.shape
    got = (n_layers(tuned), d_ff(tuned))
    if got != tuple(expected):
        raise ValueError(f"The tuned model {name} has {got[0]} layers x d_ff {got[1]} but the base model's "
                         f"labels are {expected[0]} x {expected[1]}: it is not a variant of the base model.")


def load_tuned(cfg: BabelConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
               labels: np.ndarray) -> Tuned:
    """`cfg.tuned_model` when set (a released instruct model), else the offline short tuning of `model`."""
    if cfg.tuned_model:
        tuned, tok = models.load_model(cfg.tuned_model, cfg.dtype, cfg.device, cfg.device_map)
        out = Tuned(tuned, tok, name=cfg.tuned_model, label=f"the instruction-tuned model {cfg.tuned_model}",
                    folder=None, history=pd.DataFrame(columns=["step", "loss", "target_tokens"]), meta={})
    else:
        out = offline_tuned(cfg, model, tokenizer)
    check_same_layout(labels, out.model, out.name)
    return out


def record_config(cfg: BabelConfig, tuned: Tuned) -> BabelConfig:
    """The config under which the tuned model's counts are cached: its `model` names the tuned model."""
    return cfg.replace(model=cfg.tuned_model or str(tuned.folder / "model"))


def weight_change(base: PreTrainedModel, tuned: PreTrainedModel) -> pd.DataFrame:
    """Per layer: relative Frobenius change ||W_tuned - W_base|| / ||W_base|| of the decoder weights."""
    rows = []
    for i, (lb, lt) in enumerate(zip(layers(base), layers(tuned))):
        pb, pt = dict(lb.named_parameters()), dict(lt.named_parameters())
        num = sum(float((pt[k].float() - pb[k].float()).pow(2).sum()) for k in pb)
        den = sum(float(pb[k].float().pow(2).sum()) for k in pb)
        rows.append({"layer": i, "relative_change": math.sqrt(num / den) if den else 0.0})
    return pd.DataFrame(rows)


def describe_tuning(tuned: Tuned) -> str:
    """What the tuned model is, in words, with the numbers of its tuning."""
    if not tuned.meta:
        return f"The tuned model is {tuned.label}; its base model's expert labels index its FFN neurons."
    m = tuned.meta
    return (f"The tuned model is {tuned.label}: {m['steps']} AdamW steps (batch {m['batch']}, lr {m['lr']:g}) on "
            f"{m['n_train_examples']} translation instructions built from UDHR articles "
            f"({len(m['directions'])} directions), moving {m['n_trainable'] / 1e6:.1f} M weights "
            f"({m['params']}). The mean target-token loss on {m['n_eval_examples']} of its training instructions "
            f"went from {m['loss_before_train']:.3f} to {m['loss_after_train']:.3f} nats, and on "
            f"{m['n_eval_examples']} held-out instructions (other articles) from {m['loss_before_heldout']:.3f} "
            f"to {m['loss_after_heldout']:.3f}.")
