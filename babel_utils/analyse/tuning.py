"""A short, reproducible instruction tuning of the base model, for notebook 06 (SPEC 4).

The paper compares base models with their released instruction-tuned variants. Offline there is
no such pair of one model, so `cfg.tuned_model = ""` makes one here, and says so plainly: a short
supervised instruction tuning of the base model on translation instructions built from the
bundled UDHR (calibration articles only, every direction between the pivot language, English
when studied, and each other language of `cfg.languages`). It is *not* a released instruct model:
a few dozen AdamW steps on a few hundred examples, enough to move the weights measurably and to
lower the loss on its instructions, no more. With `cfg.tuned_model` set to a hub id or a local
folder, that model is loaded instead (the paper's real pairs, e.g. a Llama 2 chat model).

What is trained: low-rank adapters (LoRA, `tuning_rank`, default 4) on the linear maps that
`tuning_params` names, in every decoder layer alike (attention and FFN: "layers"; "mlp";
"attention"), merged into the weights afterwards; `tuning_rank = 0` trains those weights
themselves (full fine-tune). Embeddings and the LM head stay frozen. No layer is favoured, so
where the frequencies change most is the model's answer, not the recipe's.

Compute on the CPU is dominated by the LM head of a large vocabulary (Gemma 3: 262k words), so
the loss computes logits only at the positions that predict a target token: the body's hidden
states at those positions go through the output embedding (with the final logit soft-capping of
the model's config when it has one, as in Gemma 2).

Storage, by the parameters of the "tuning" stage (cache.STAGE_READS): the stage cache
`cache.stage_dir(cfg, "tuning")` holds `adapter.safetensors` (LoRA; `model/` from save_pretrained
for a full fine-tune), `history.parquet` (loss per step) and `meta.json` (written last, in a
folder renamed when complete). Tuning Gemma 3 270M takes several minutes of a small CPU, so the
default config's adapter (a few MB) is committed under `resources/tuning/<stage key>/`, made by
`babel tune configs/default.yaml`; a config whose key has a committed adapter
loads it instead of tuning, any other config tunes once and caches.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from ..core import cache, results
from ..core.config import BabelConfig
from ..core.fingerprint import code_fingerprint
from ..core.languages import get_language
from ..core.paths import RESOURCES_DIR
from ..data import text as data
from ..models import loading as models
from ..models.adapters import body, ffn_linear_names, get_adapter, layers, output_logits

log = logging.getLogger(__name__)

TUNING_PARAMS: tuple[str, ...] = ("layers", "mlp", "attention")
PIVOT = "en"  # instructions translate from and into this language when it is studied
SOURCE_SHARE = 0.5  # at most this share of an example's tokens goes to the source article
PROMPT = ("Translate article {article} of the Universal Declaration of Human Rights from {src} to {tgt}.\n"
          "{src}: {text}\n{tgt}:")
OFFLINE_LABEL = "a short instruction tuning we ran here, not a released instruct model"
LORA_SCALE = 1.0  # the adapter adds scale * B A x
ADAPTER_FILE = "adapter.safetensors"
COMMITTED_DIR = RESOURCES_DIR / "tuning"  # committed adapters, one folder per tuning stage key
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
    if not isinstance(cfg.tuning_rank, int) or cfg.tuning_rank < 0:
        raise ValueError(f"Config key 'tuning_rank' has the bad value {cfg.tuning_rank!r}; allowed: an integer >= 0 "
                         "(0 = full fine-tune).")
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


def target_loss(model: PreTrainedModel, batch: Encoded) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the target tokens, computing logits only where a target token is predicted."""
    device = model.get_input_embeddings().weight.device
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    hidden = body(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    predicts = batch.target_mask[:, 1:].to(device)  # position t predicts token t + 1
    h = hidden[:, :-1][predicts]
    logits = output_logits(model, model.get_output_embeddings()(h)).float()
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


def target_linears(model: PreTrainedModel, which: str) -> dict[str, nn.Module]:
    """The linear maps that tuning touches, by name ("layers.3.mlp.up_proj"): every linear map (nn.Linear, or
    GPT-2's Conv1D) of every decoder layer ("layers"), only the FFNs ("mlp") or only the attention ("attention")."""
    if which not in TUNING_PARAMS:
        raise ValueError(f"Unknown tuning_params {which!r}; allowed: {', '.join(TUNING_PARAMS)}.")
    ffn, attention = ffn_linear_names(model), get_adapter(model).attention + "."
    chosen = {}
    for i, layer in enumerate(layers(model)):
        for name, module in layer.named_modules():
            if not isinstance(module, (nn.Linear, Conv1D)):
                continue
            if which == "layers" or (which == "mlp" and name in ffn) or \
                    (which == "attention" and name.startswith(attention)):
                chosen[f"layers.{i}.{name}"] = module
    if not chosen:
        raise ValueError(f"tuning_params={which!r} selects no linear map of this {model.config.model_type} model.")
    return chosen


def out_in(linear: nn.Module) -> tuple[int, int]:
    """(output, input) width of a linear map: nn.Linear's weight is [out, in], GPT-2's Conv1D's [in, out]."""
    w = linear.weight
    return (w.shape[1], w.shape[0]) if isinstance(linear, Conv1D) else (w.shape[0], w.shape[1])


class LoRA:
    """Low-rank adapters `W x + scale * B A x` on linear maps, as forward hooks; `merge` folds them into W.

    A starts random (seeded), B at zero, so the tuned model starts as the base model. Every selected
    map of every layer gets an adapter of the same rank: no layer is favoured.
    """

    def __init__(self, linears: dict[str, nn.Linear], rank: int, seed: int, scale: float = LORA_SCALE) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.linears, self.rank, self.scale = linears, rank, scale
        self.A, self.B = {}, {}
        for name, lin in linears.items():
            w, (n_out, n_in) = lin.weight, out_in(lin)
            a = torch.randn(rank, n_in, generator=gen) / math.sqrt(n_in)
            self.A[name] = nn.Parameter(a.to(w.device, w.dtype))
            self.B[name] = nn.Parameter(torch.zeros(n_out, rank, device=w.device, dtype=w.dtype))
        self._handles: list = []

    def parameters(self) -> list[nn.Parameter]:
        return [p for name in self.linears for p in (self.A[name], self.B[name])]

    def attach(self) -> None:
        for name, lin in self.linears.items():
            A, B, scale = self.A[name], self.B[name], self.scale
            self._handles.append(lin.register_forward_hook(
                lambda module, args, out, A=A, B=B, scale=scale: out + scale * ((args[0] @ A.T) @ B.T)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.linears:
            out[f"{name}.lora_A"] = self.A[name].detach().cpu().contiguous()
            out[f"{name}.lora_B"] = self.B[name].detach().cpu().contiguous()
        return out


def merge_adapter(model: PreTrainedModel, adapter: dict[str, torch.Tensor], scale: float) -> None:
    """Fold LoRA weights into the model in place: W += scale * B @ A (a clear error for a foreign adapter)."""
    linears = target_linears(model, "layers")
    names = sorted({key.rsplit(".", 1)[0] for key in adapter})
    unknown = [n for n in names if n not in linears]
    if unknown:
        raise ValueError(f"The adapter names linear maps this model does not have, e.g. {unknown[:3]}.")
    with torch.no_grad():
        for name in names:
            w, (n_out, n_in) = linears[name].weight, out_in(linears[name])
            A, B = adapter[f"{name}.lora_A"], adapter[f"{name}.lora_B"]
            if B.shape[0] != n_out or A.shape[1] != n_in:
                raise ValueError(f"Adapter {name} has shape {tuple(B.shape)} x {tuple(A.shape)}; the model's "
                                 f"map is {n_out} x {n_in}: the adapter belongs to another model.")
            delta = scale * (B.double() @ A.double())  # [out, in]
            w += (delta.T if isinstance(linears[name], Conv1D) else delta).to(w.dtype).to(w.device)


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Example indices of every step: seeded epochs of a permutation, each batch within one epoch or across."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    order = np.concatenate([rng.permutation(n_examples) for _ in range(math.ceil(needed / n_examples))])
    return [order[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


def tune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: BabelConfig
         ) -> tuple[pd.DataFrame, dict, dict[str, torch.Tensor] | None]:
    """Tune `model` in place on the instruction data: history (loss per step), summary, LoRA adapter.

    With `tuning_rank > 0` the model's weights end up merged with the trained adapter (returned too, so
    it can be stored small); with `tuning_rank = 0` the selected weights themselves are trained (no
    adapter). Seeded by `cfg.seed` (adapter initialisation, batch order); on the CPU a rerun on the same
    machine and torch build gives the same bits.
    """
    check_tuning_config(cfg)
    torch.manual_seed(cfg.seed)
    train = encode(instruction_examples(cfg), tokenizer, cfg.tuning_max_tokens)
    heldout = encode(instruction_examples(cfg, cfg.heldout_articles), tokenizer, cfg.tuning_max_tokens)
    train_eval, heldout_eval = evaluation_rows(train), evaluation_rows(heldout)
    linears = target_linears(model, cfg.tuning_params)
    model.requires_grad_(False)
    model.eval()  # no dropout: the loss is a deterministic function of the weights
    before = {"train": mean_loss(model, train_eval, cfg.tuning_batch),
              "heldout": mean_loss(model, heldout_eval, cfg.tuning_batch)}
    lora = LoRA(linears, cfg.tuning_rank, cfg.seed) if cfg.tuning_rank > 0 else None
    if lora is not None:
        lora.attach()
        params = lora.parameters()
    else:
        params = [lin.weight for lin in linears.values()] + [lin.bias for lin in linears.values()
                                                              if lin.bias is not None]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.tuning_lr, weight_decay=0.0)
    rows, start = [], time.perf_counter()
    try:
        for step, index in enumerate(batch_order(len(train), cfg.tuning_steps, cfg.tuning_batch, cfg.seed), 1):
            loss, n_tok = target_loss(model, train.rows(index))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append({"step": step, "loss": float(loss.detach()), "target_tokens": n_tok})
            log.info("tuning step %d/%d: loss %.4f", step, cfg.tuning_steps, rows[-1]["loss"])
    finally:
        if lora is not None:
            lora.detach()
        for p in params:
            p.requires_grad_(False)
    seconds = time.perf_counter() - start
    adapter = None
    if lora is not None:
        adapter = lora.state_dict()
        merge_adapter(model, adapter, lora.scale)
    after = {"train": mean_loss(model, train_eval, cfg.tuning_batch),
             "heldout": mean_loss(model, heldout_eval, cfg.tuning_batch)}
    summary = {
        "steps": cfg.tuning_steps, "batch": cfg.tuning_batch, "lr": cfg.tuning_lr, "params": cfg.tuning_params,
        "rank": cfg.tuning_rank, "lora_scale": LORA_SCALE if lora is not None else None,
        "n_linear_maps": len(linears), "n_trainable": int(sum(p.numel() for p in params)),
        "n_train_examples": len(train), "n_eval_examples": len(train_eval),
        "train_target_tokens": int(train.target_mask.sum()),
        "directions": [f"{s}->{t}" for s, t in directions(cfg.languages)],
        "loss_before_train": before["train"], "loss_after_train": after["train"],
        "loss_before_heldout": before["heldout"], "loss_after_heldout": after["heldout"],
        "seconds": seconds,
    }
    return pd.DataFrame(rows, columns=["step", "loss", "target_tokens"]), summary, adapter


# --------------------------------------------------------------------------- the cached tuned model


def tuned_dir(cfg: BabelConfig) -> Path:
    """Cache folder of the offline tuned model of this config."""
    return cache.stage_dir(cfg, "tuning")


def committed_dir(cfg: BabelConfig) -> Path:
    """Where a committed adapter of this config would be: resources/tuning/<key of the tuning parameters>/ (LoRA
    only). A committed adapter is an input like the model's weights, named by its parameters alone; its
    meta.json records the tuning code that made it, and `write_committed` remakes it."""
    return COMMITTED_DIR / cache.params_key(cfg, "tuning")


def _write_stage(folder: Path, cfg: BabelConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 history: pd.DataFrame, summary: dict, adapter: dict[str, torch.Tensor] | None) -> None:
    """Write a tuning result atomically: a temporary folder renamed when complete (meta.json last)."""
    def write(tmp: Path) -> None:
        if adapter is not None:
            save_file(adapter, str(tmp / ADAPTER_FILE))
        else:
            model.save_pretrained(tmp / "model")
            tokenizer.save_pretrained(tmp / "model")
        results.save(tmp, "history", history)
        results.write_json(tmp / "meta.json", results.sidecar(
            cfg.to_dict(), stage="tuning", names=["history"], params=cache.stage_params(cfg, "tuning"),
            code=code_fingerprint("tuning"), summary=summary))

    results.atomic_folder(folder, write)


def _load_stage(folder: Path, cfg: BabelConfig, base: PreTrainedModel) -> tuple[PreTrainedModel, dict, pd.DataFrame]:
    """The tuned model of a stored tuning: base + merged adapter, or the saved fully tuned model."""
    meta = results.read_json(folder / "meta.json")
    summary = meta["summary"]
    if (folder / ADAPTER_FILE).exists():
        tuned = copy.deepcopy(base)
        merge_adapter(tuned, load_file(str(folder / ADAPTER_FILE)), float(summary["lora_scale"]))
    else:
        dev = models.resolve_device(cfg.device)
        tuned = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=models.resolve_dtype(cfg.dtype, dev))
        tuned = tuned.to(dev)
    tuned.eval()
    tuned.requires_grad_(False)
    return tuned, summary, results.load(folder, "history")


def offline_tuned(cfg: BabelConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Tuned:
    """The offline tuned model: from the stage cache, else from a committed adapter of this exact config
    (resources/tuning/), else tuned now from a copy of `model` and cached. `model` is never changed."""
    check_tuning_config(cfg)
    folder = tuned_dir(cfg)
    source = "cache"
    if not (folder / "meta.json").exists():
        if (committed_dir(cfg) / "meta.json").exists():
            folder, source = committed_dir(cfg), "committed"
            made_by = results.read_json(folder / "meta.json").get("code", code_fingerprint("tuning"))
            if made_by != code_fingerprint("tuning"):
                log.warning("The committed adapter %s was made by other tuning code (%s, now %s): remake it with "
                            "tuning.write_committed(cfg) and commit it.", folder, made_by, code_fingerprint("tuning"))
        else:
            tuned = copy.deepcopy(model)
            history, summary, adapter = tune(tuned, tokenizer, cfg)
            _write_stage(folder, cfg, tuned, tokenizer, history, summary, adapter)
            del tuned
    log.info("tuning: the tuned model comes from %s (%s)", folder, source)
    tuned, summary, history = _load_stage(folder, cfg, model)
    kind = f"LoRA rank {summary['rank']}" if summary.get("rank") else "full fine-tune"
    return Tuned(tuned, tokenizer, name=f"{cfg.model} + short instruction tuning ({kind})", label=OFFLINE_LABEL,
                 folder=folder, history=history, meta=summary)


def write_committed(cfg: BabelConfig) -> Path:
    """Tune the config's model (LoRA) and store the adapter in resources/tuning/<stage key>/ for committing."""
    if cfg.tuned_model:
        raise ValueError("tuned_model is set: there is nothing to tune offline.")
    if cfg.tuning_rank < 1:
        raise ValueError("Only LoRA adapters (tuning_rank >= 1) are small enough to commit.")
    model, tokenizer = models.load_model(cfg.model, cfg.dtype, cfg.device, cfg.device_map)
    history, summary, adapter = tune(model, tokenizer, cfg)
    target = committed_dir(cfg)
    _write_stage(target, cfg, model, tokenizer, history, summary, adapter)
    return target


def check_same_layout(base_labels: np.ndarray, tuned: PreTrainedModel, name: str) -> None:
    """The tuned model must have the base model's layers and FFN width (or routed experts), so that expert ids
    match."""
    from ..kinds.expert_kinds import kind_of

    expected = base_labels.shape
    got = kind_of(tuned).label_shape(tuned)
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
    """The config under which the tuned model's counts are cached: its `model` names the tuned model
    (`tuned_model`, or the base model's name with the tuning stage's key), apart from the base model's."""
    return cfg.replace(model=cfg.tuned_model or f"{cfg.model}+tuned:{cache.stage_key(cfg, 'tuning')}")


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
    how = (f"LoRA adapters of rank {m['rank']} on {m['n_linear_maps']} linear maps ({m['params']}, every layer "
           f"alike), {m['n_trainable'] / 1e6:.2f} M trained weights merged into the model afterwards"
           if m.get("rank") else f"a full fine-tune of {m['n_trainable'] / 1e6:.1f} M weights ({m['params']})")
    return (f"The tuned model is {tuned.label}: {m['steps']} AdamW steps (batch {m['batch']}, lr {m['lr']:g}) on "
            f"{m['n_train_examples']} translation instructions built from UDHR articles "
            f"({len(m['directions'])} directions); {how}. The mean target-token loss on {m['n_eval_examples']} of "
            f"its training instructions went from {m['loss_before_train']:.3f} to {m['loss_after_train']:.3f} nats, "
            f"and on {m['n_eval_examples']} held-out instructions (other articles) from "
            f"{m['loss_before_heldout']:.3f} to {m['loss_after_heldout']:.3f}.")


def describe_committed(folder: Path, model_name: str) -> str:
    """The tuning summary of a committed adapter folder of a model, in words."""
    return describe_tuning(Tuned(None, None, model_name, OFFLINE_LABEL, folder, pd.DataFrame(),
                                 results.read_json(folder / "meta.json")["summary"]))
