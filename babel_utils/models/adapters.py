"""Architecture adapters: where each supported model keeps its FFN, and what its forward does, in one table.

An FFN is described by its parts: the first matrix (or matrices), the activation, the second matrix. Three
layouts (`kind`):
- "gated": y = down(act(gate x) * up x) (Llama, Gemma, Qwen, ...);
- "fused": the same with gate and up stacked in one matrix `up` (Phi-3's gate_up_proj: gate rows first);
- "plain": y = down(act(up x + b_up)) + b_down (BLOOM, GPT-2, OPT, XGLM, Pythia), `up` being fc1;
- "native": a mixture of experts with its own router (Mixtral, Qwen-MoE, OLMoE, GPT-OSS): the experts are the
  model's, chosen per token by the router's top-k (babel_utils/kinds/native.py records and prunes them).
In every layout the input of the second matrix, h, holds one value per neuron: the recording scores it,
the masks zero it, and a neuron is row i of the first matrix (and of the gate) with column i of the second.
The second matrix's bias belongs to the layer, not to an expert: the MoE view adds it once, pruning keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

GATED, FUSED, PLAIN, NATIVE = "gated", "fused", "plain", "native"


@dataclass(frozen=True)
class FFNAdapter:
    """Where the FFN lives in one architecture, its layout, and what its forward does to the LM head's output
    (so that logits made from the body's hidden states equal the model's own)."""

    body: str  # attribute path from the CausalLM to the body (embeddings + layers, no LM head)
    layers: str  # attribute path from the body to the list of decoder layers
    mlp: str  # attribute of a decoder layer holding the FFN ("" = the layer holds its parts itself: OPT, XGLM)
    kind: str = GATED
    gate: str = "gate_proj"  # gated only
    up: str = "up_proj"  # the first matrix: up (gated), gate_up (fused), fc1 (plain)
    down: str = "down_proj"
    act: str = "act_fn"
    transposed: bool = False  # weights stored [in, out] (GPT-2's Conv1D)
    flat_tokens: bool = False  # the FFN sees the tokens flattened to [batch * tokens, d] (OPT)
    attention: str = "self_attn"  # attribute of a decoder layer holding the attention (offline tuning)
    width: str = "intermediate_size"  # config key of the FFN width ("" or unset: width_factor x hidden size)
    width_factor: int = 4
    text_config: str = ""  # attribute of the config holding the language model's (a multimodal model's)
    router: str = ""  # native: attribute of the MoE block holding the router (returns logits, scores, indices)
    experts: str = "experts"  # native: attribute holding the experts' stacked weights [E, ...]
    shared: str = ""  # native: attribute of an always-on shared expert (Qwen2-MoE), not prunable
    routing: str = ""  # native: the router's rule (native.ROUTING), proved against the router in the tests
    n_experts_key: str = ""  # native: the config key of the routed experts per MoE layer
    logit_scale: str = ""  # config field the logits are multiplied by (Cohere)
    logit_divisor: str = ""  # config field the logits are divided by (Granite)
    softcap: str = ""  # config field of the final logit soft-capping tanh(z / c) * c (Gemma 2; unset = none)


@dataclass(frozen=True)
class FFNWeights:
    """One layer's FFN as matrices [out, in] whatever the storage: views of the model's parameters."""

    up: torch.Tensor  # [d_ff, d_model]: the first matrix (up of a gated FFN, fc1 of a plain one)
    down: torch.Tensor  # [d_model, d_ff]
    gate: torch.Tensor | None = None  # [d_ff, d_model], gated and fused only
    up_bias: torch.Tensor | None = None
    gate_bias: torch.Tensor | None = None
    down_bias: torch.Tensor | None = None  # the layer's, not an expert's


_LLAMA_LIKE = FFNAdapter(body="model", layers="layers", mlp="mlp")
_GEMMA = FFNAdapter(body="model", layers="layers", mlp="mlp", softcap="final_logit_softcapping")
_FC = dict(kind=PLAIN, up="fc1", down="fc2", act="activation_fn", width="ffn_dim")  # OPT and XGLM: parts on the layer

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
    "gemma3": FFNAdapter(body="model.language_model", layers="layers", mlp="mlp", text_config="text_config"),
    "phi3": FFNAdapter(body="model", layers="layers", mlp="mlp", kind=FUSED, up="gate_up_proj",
                       act="activation_fn"),
    "bloom": FFNAdapter(body="transformer", layers="h", mlp="mlp", kind=PLAIN, up="dense_h_to_4h",
                        down="dense_4h_to_h", act="gelu_impl", attention="self_attention", width=""),
    "gpt2": FFNAdapter(body="transformer", layers="h", mlp="mlp", kind=PLAIN, up="c_fc", down="c_proj", act="act",
                       transposed=True, attention="attn", width="n_inner"),
    "gpt_neox": FFNAdapter(body="gpt_neox", layers="layers", mlp="mlp", kind=PLAIN, up="dense_h_to_4h",
                           down="dense_4h_to_h", act="act", attention="attention"),
    "mixtral": FFNAdapter(body="model", layers="layers", mlp="mlp", kind=NATIVE, router="gate",
                          routing="softmax_topk_renorm", n_experts_key="num_local_experts"),
    "qwen2_moe": FFNAdapter(body="model", layers="layers", mlp="mlp", kind=NATIVE, router="gate",
                            shared="shared_expert", routing="softmax_topk", n_experts_key="num_experts"),
    "qwen3_moe": FFNAdapter(body="model", layers="layers", mlp="mlp", kind=NATIVE, router="gate", routing="softmax_topk",
                           n_experts_key="num_experts"),
    "olmoe": FFNAdapter(body="model", layers="layers", mlp="mlp", kind=NATIVE, router="gate", routing="softmax_topk",
                           n_experts_key="num_experts"),
    "gpt_oss": FFNAdapter(body="model", layers="layers", mlp="mlp", kind=NATIVE, router="router",
                          routing="topk_softmax", n_experts_key="num_local_experts"),
    "deepseek_v3": FFNAdapter(body="model", layers="layers", mlp="mlp", kind=NATIVE, router="gate",
                              shared="shared_experts", routing="sigmoid_group_topk", n_experts_key="n_routed_experts"),
    "opt": FFNAdapter(body="model", layers="decoder.layers", mlp="", flat_tokens=True, **_FC),
    "xglm": FFNAdapter(body="model", layers="layers", mlp="", **_FC),
}


def _get(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def get_adapter(model: nn.Module) -> FFNAdapter:
    """The adapter of a model, or an error naming the supported architectures."""
    return adapter_of(getattr(getattr(model, "config", None), "model_type", None))


def adapter_of(model_type: object, of: str = "") -> FFNAdapter:
    """The adapter of a model type (config.model_type), or an error naming the supported ones."""
    if model_type not in ADAPTERS:
        raise ValueError(unsupported(model_type, of))
    return ADAPTERS[model_type]


def unsupported(model_type: object, of: str = "") -> str:
    """The error for a model type without a row: the supported ones, and how to add a row."""
    return (f"Unsupported architecture {model_type!r}{f' of {of}' if of else ''}: babel knows the FFNs of "
            f"{', '.join(sorted(ADAPTERS))}. Add a row to ADAPTERS in babel_utils/models/adapters.py (where the body, "
            "layers and FFN parts are, and the FFN's layout) and run tests/test_architectures.py.")


def text_config(model: nn.Module) -> object:
    """The config of the language model (a multimodal model's text_config, as its row says)."""
    return config_of_text(model.config)


def config_of_text(config: object) -> object:
    """The language model's part of a model config (its row's text_config, else the config itself)."""
    path = adapter_of(getattr(config, "model_type", None)).text_config
    return _get(config, path) if path else config


def ffn_width_of(config: object) -> int:
    """The FFN width d_ff a model config declares (its row's width key, else width_factor x hidden size)."""
    adapter, text = adapter_of(getattr(config, "model_type", None)), config_of_text(config)
    width = getattr(text, adapter.width, None) if adapter.width else None
    return int(width) if width else adapter.width_factor * int(text.hidden_size)


def check_n_experts(config: object, n_experts: int, name: str) -> None:
    """n_experts must divide a dense model's FFN width, and equal a native mixture's routed experts per layer."""
    adapter, text = adapter_of(getattr(config, "model_type", None)), config_of_text(config)
    if adapter.kind == NATIVE:
        own = int(getattr(text, adapter.n_experts_key))
        if n_experts != own:
            raise ValueError(f"n_experts={n_experts}, but {name} ({config.model_type}) routes among {own} experts per "
                             f"MoE layer: set n_experts: {own} (a native model's experts are its own).")
        return
    width = ffn_width_of(config)
    if width % n_experts:
        divisors = [d for d in range(2, min(width, 1024) + 1) if width % d == 0]
        raise ValueError(f"n_experts={n_experts} does not divide d_ff={width} of {name}; "
                         f"choose a divisor, e.g. {', '.join(map(str, divisors[-8:]))}.")


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


def dense_adapter(model: nn.Module) -> FFNAdapter:
    """The adapter of a model whose experts are split from dense FFNs, or an error for a native MoE."""
    adapter = get_adapter(model)
    if adapter.kind == NATIVE:
        raise ValueError(f"{model.config.model_type} is a native mixture of experts: its experts are the model's "
                         "own, routed per token (babel_utils.kinds.native records and prunes them), not split from a "
                         "dense FFN. The notebook pipeline does not run on native MoE models yet.")
    return adapter


def mlps(model: nn.Module) -> list[nn.Module]:
    """The module holding each layer's FFN parts (the FFN module, or the layer itself for OPT and XGLM)."""
    adapter = dense_adapter(model)
    return [getattr(layer, adapter.mlp) if adapter.mlp else layer for layer in layers(model)]


def first_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose input is the FFN's input x (the up, gate_up or fc1 matrix)."""
    return getattr(mlps(model)[layer], get_adapter(model).up)


def down_projs(model: nn.Module) -> list[nn.Module]:
    """The second matrix of every layer (its input is h: one value per neuron)."""
    adapter = get_adapter(model)
    return [getattr(mlp, adapter.down) for mlp in mlps(model)]


def _matrix(module: nn.Module, transposed: bool) -> torch.Tensor:
    return module.weight.T if transposed else module.weight


def ffn_weights(model: nn.Module, layer: int) -> FFNWeights:
    """One layer's FFN matrices [out, in] and biases, whatever the layout (views, no copies)."""
    adapter, mlp = get_adapter(model), mlps(model)[layer]
    first, down = getattr(mlp, adapter.up), getattr(mlp, adapter.down)
    up, up_bias = _matrix(first, adapter.transposed), first.bias
    gate = gate_bias = None
    if adapter.kind == GATED:
        gate_module = getattr(mlp, adapter.gate)
        gate, gate_bias = _matrix(gate_module, adapter.transposed), gate_module.bias
    elif adapter.kind == FUSED:
        half = up.shape[0] // 2
        gate, up = up[:half], up[half:]
        if up_bias is not None:
            gate_bias, up_bias = up_bias[:half], up_bias[half:]
    return FFNWeights(up=up, down=_matrix(down, adapter.transposed), gate=gate, up_bias=up_bias,
                      gate_bias=gate_bias, down_bias=down.bias)


def activation(model: nn.Module, layer: int) -> nn.Module:
    """The FFN's activation function module of one layer."""
    return getattr(mlps(model)[layer], get_adapter(model).act)


def ffn_linear_names(model: nn.Module) -> tuple[str, ...]:
    """The FFN's matrices as names relative to a decoder layer ("mlp.up_proj", "fc1", ...)."""
    adapter = get_adapter(model)
    parts = (adapter.gate, adapter.up, adapter.down) if adapter.kind == GATED else (adapter.up, adapter.down)
    return tuple(f"{adapter.mlp}.{p}" if adapter.mlp else p for p in parts)


def n_layers(model: nn.Module) -> int:
    """Number of decoder layers."""
    return len(layers(model))


def layer_width(model: nn.Module, layer: int) -> int:
    """The FFN width of one layer (pruned models may differ per layer)."""
    return int(ffn_weights(model, layer).up.shape[0])


def d_ff(model: nn.Module) -> int:
    """Intermediate width of the FFN (of layer 0; pruned models may differ per layer)."""
    return layer_width(model, 0)


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where token ids must go)."""
    return model.get_input_embeddings().weight.device


def neuron_parts(model: nn.Module, layer: int, index: torch.Tensor) -> list[tuple[str, int, torch.Tensor]]:
    """How neurons `index` of one layer sit in its FFN's modules: (attribute, dim, positions), dim 0 = output
    rows and 1 = input columns of the [out, in] matrix. Slicing every part keeps exactly those neurons."""
    adapter = get_adapter(model)
    rows = index
    if adapter.kind == FUSED:  # gate rows, then up rows
        rows = torch.cat([index, layer_width(model, layer) + index])
    parts = [(adapter.up, 0, rows), (adapter.down, 1, index)]
    return [(adapter.gate, 0, index), *parts] if adapter.kind == GATED else parts
