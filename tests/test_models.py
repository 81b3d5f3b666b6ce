"""Model loading: tiny models, local folders (the hub code path), built-in GGUF models, adapters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from babel_utils.models import adapters
from babel_utils.models.loading import BUILTIN_MODELS, _gguf_parts, load_model, tiny_model


def test_adapter_finds_gated_ffn(tiny):
    model, _ = tiny
    w = adapters.ffn_weights(model, 0)
    assert (w.gate.shape[0], w.up.shape[0], w.down.shape[1]) == (256, 256, 256)
    assert adapters.n_layers(model) == 4 and adapters.d_ff(model) == 256
    assert adapters.body(model) is model.model


def test_unknown_architecture_names_the_supported_ones():
    class Fake(nn.Module):
        config = type("C", (), {"model_type": "t5"})()

    with pytest.raises(ValueError) as err:
        adapters.get_adapter(Fake())
    assert "t5" in str(err.value) and "llama" in str(err.value) and "gemma3_text" in str(err.value)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="built-in models: gemma-3-270m"):
        load_model("gemma-270m")
    with pytest.raises(ValueError, match="tiny models"):
        tiny_model("tiny-gpt")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3", "tiny-gpt-neox"])
def test_local_folder_loads_like_a_hub_id(tmp_path, name):
    model, tokenizer = load_model(name, device="cpu")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, tok = load_model(str(tmp_path), device="cpu")
    ids = tok(["Hello"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)
    assert again.config.model_type == model.config.model_type


def test_tiny_models_are_deterministic():
    a, b = tiny_model("tiny-llama", seed=1), tiny_model("tiny-llama", seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_builtin_gguf_files_are_found_without_importing_their_packages():
    for name, spec in BUILTIN_MODELS.items():
        parts = _gguf_parts(spec)
        assert parts and all(p.exists() for p in parts), name
    assert [p.name[-2:] for p in _gguf_parts(BUILTIN_MODELS["gemma-3-270m"])] == ["00", "01", "02", "03"]


def test_smollm2_dequantizes_once_and_loads(monkeypatch):
    model, tokenizer = load_model("smollm2-135m-instruct", device="cpu")
    assert model.config.model_type == "llama" and adapters.d_ff(model) == 1536
    monkeypatch.setattr("babel_utils.models.loading._assemble_gguf", lambda *a: pytest.fail("dequantized twice"))
    load_model("smollm2-135m-instruct", device="cpu")
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0])


def test_the_gguf_file_is_parsed_once_within_the_block_and_the_library_restored():
    import gguf

    from babel_utils.models.loading import _gguf_parsed_once

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        arch = next(iter(gguf.MODEL_ARCH_NAMES))
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)


@pytest.mark.parametrize("load", ["ffn_width", "load_model"])
def test_an_unknown_hub_model_offline_is_a_babel_error_with_the_fix(load, monkeypatch):
    import huggingface_hub.constants

    import babel_utils.models.loading as models

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network retries in the test
    with pytest.raises(ValueError) as err:
        getattr(models, load)("nobody/nonexistent-model")
    message = str(err.value)
    assert "'nobody/nonexistent-model' could not be loaded from the Hugging Face hub" in message
    assert "gemma-3-270m" in message and "local folder" in message
