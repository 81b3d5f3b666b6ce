"""A short, reproducible instruction tuning of the base model, for notebook 06 (docs/method.md section 4): the
training loop and its stored result (the instructions are built in instruction_data.py, the adapters in lora.py).

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
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..core import cache, results
from ..core.config import BabelConfig
from ..core.fingerprint import code_fingerprint
from ..core.paths import RESOURCES_DIR
from ..models import loading
from ..models.adapters import body, layers, output_logits
from .instruction_data import (
    Encoded,
    directions,
    encode,
    evaluation_rows,
    instruction_examples,
)
from .lora import LORA_SCALE, TUNING_PARAMS, LoRA, merge_adapter, target_linears

log = logging.getLogger(__name__)

OFFLINE_LABEL = "a short instruction tuning we ran here, not a released instruct model"
ADAPTER_FILE = "adapter.safetensors"
COMMITTED_DIR = RESOURCES_DIR / "tuning"  # committed adapters, one folder per tuning stage key


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
        dev = loading.resolve_device(cfg.device)
        tuned = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=loading.resolve_dtype(cfg.dtype, dev))
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
    model, tokenizer = loading.load_model(cfg.model, cfg.dtype, cfg.device, cfg.device_map)
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
        tuned, tok = loading.load_model(cfg.tuned_model, cfg.dtype, cfg.device, cfg.device_map)
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
