"""Architecture adapters: where each supported model keeps its FFN, in one table."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FFNAdapter:
    """Where a gated FFN `down(act(gate(x)) * up(x))` lives in one architecture, and what its forward does to
    the LM head's output (so that logits made from the body's hidden states equal the model's own)."""

    body: str  # attribute path from the CausalLM to the body (embeddings + layers, no LM head)
    layers: str  # attribute path from the body to the list of decoder layers
    mlp: str  # attribute of a decoder layer holding the FFN
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    act: str = "act_fn"
    logit_scale: str = ""  # config field the logits are multiplied by (Cohere)
    logit_divisor: str = ""  # config field the logits are divided by (Granite)
    softcap: str = ""  # config field of the final logit soft-capping tanh(z / c) * c (Gemma 2; unset = none)


_LLAMA_LIKE = FFNAdapter(body="model", layers="layers", mlp="mlp")
_GEMMA = FFNAdapter(body="model", layers="layers", mlp="mlp", softcap="final_logit_softcapping")

# model_type (config.model_type) -> adapter. One source of truth for architecture facts.
ADAPTERS: dict[str, FFNAdapter] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "smollm3": _LLAMA_LIKE,
    "granite": FFNAdapter(body="model", layers="layers", mlp="mlp", logit_divisor="logits_scaling"),
    "cohere": FFNAdapter(body="model", layers="layers", mlp="mlp", logit_scale="logit_scale"),
    "cohere2": FFNAdapter(body="model", layers="layers", mlp="mlp", logit_scale="logit_scale"),
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    # the multimodal class: its forward applies no final soft-capping (transformers 5; its text model's does)
    "gemma3": FFNAdapter(body="model.language_model", layers="layers", mlp="mlp"),
}


def _get(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def get_adapter(model: nn.Module) -> FFNAdapter:
    """The adapter of a model, or an error naming the supported architectures."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(unsupported(model_type))
    return ADAPTERS[model_type]


def unsupported(model_type: object, of: str = "") -> str:
    """The error for a model type without a row: the supported ones, and how to add a row."""
    return (f"Unsupported architecture {model_type!r}{f' of {of}' if of else ''}: babel knows gated FFNs of "
            f"{', '.join(sorted(ADAPTERS))}. Add a row to ADAPTERS in babel_utils/adapters.py (where the body, "
            "layers and FFN matrices are) and run tests/test_architectures.py.")


def text_config(model: nn.Module) -> object:
    """The config of the language model (a multimodal model's text_config)."""
    config = getattr(model, "config", None)
    return getattr(config, "text_config", None) or config


def output_logits(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """What the model's forward does to the LM head's output: scaling and soft-capping, as its row says."""
    adapter, config = get_adapter(model), text_config(model)
    if adapter.logit_scale:
        logits = logits * getattr(config, adapter.logit_scale)
    if adapter.logit_divisor:
        logits = logits / getattr(config, adapter.logit_divisor)
    cap = getattr(config, adapter.softcap, None) if adapter.softcap else None
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def body(model: nn.Module) -> nn.Module:
    """The model without its LM head: recording needs only the layers' activations."""
    return _get(model, get_adapter(model).body)


def layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers, in order."""
    adapter = get_adapter(model)
    return list(_get(body(model), adapter.layers))


def mlps(model: nn.Module) -> list[nn.Module]:
    """The FFN module of every layer."""
    adapter = get_adapter(model)
    return [getattr(layer, adapter.mlp) for layer in layers(model)]


def projections(model: nn.Module, layer: int) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """The (gate, up, down) linear layers of one layer's FFN."""
    adapter = get_adapter(model)
    mlp = mlps(model)[layer]
    return getattr(mlp, adapter.gate), getattr(mlp, adapter.up), getattr(mlp, adapter.down)


def down_projs(model: nn.Module) -> list[nn.Linear]:
    """The down projection of every layer (its input is h = act(gate(x)) * up(x))."""
    return [projections(model, i)[2] for i in range(n_layers(model))]


def activation(model: nn.Module, layer: int) -> nn.Module:
    """The FFN's activation function module of one layer."""
    return getattr(mlps(model)[layer], get_adapter(model).act)


def n_layers(model: nn.Module) -> int:
    """Number of decoder layers."""
    return len(layers(model))


def d_ff(model: nn.Module) -> int:
    """Intermediate width of the FFN (of layer 0; pruned models may differ per layer)."""
    return projections(model, 0)[1].out_features


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where token ids must go)."""
    return model.get_input_embeddings().weight.device
