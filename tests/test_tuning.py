"""The offline instruction tuning of notebook 06 on a tiny model: it learns, is seeded, and reloads exactly."""

from __future__ import annotations

import pytest
import torch

from babel_utils.analyse import instruction_data, lora, tuning
from babel_utils.core import cache, config, paths
from babel_utils.models import loading as models

TINY = dict(model="tiny-llama", device="cpu", languages=["en", "fr", "hi"], tuning_steps=6, tuning_lr=3e-3,
            tuning_batch=4, tuning_max_tokens=48)


@pytest.fixture(autouse=True)
def _one_thread():
    """A tiny model runs fastest (and bitwise reproducibly) on one thread, even on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(**changes) -> config.BabelConfig:
    return config.BabelConfig(**{**TINY, **changes})


def _model():
    return models.load_model("tiny-llama", device="cpu")


def test_instruction_data_directions_and_encoding():
    cfg = _cfg()
    examples = instruction_data.instruction_examples(cfg)
    assert instruction_data.directions(cfg.languages) == [("en", "fr"), ("en", "hi"), ("fr", "en"), ("hi", "en")]
    assert len(examples) == 4 * 20 and examples[0].article == 1
    assert "from English to French" in examples[0].prompt and examples[0].prompt.endswith("French:")
    _, tok = _model()
    enc = instruction_data.encode(examples, tok, cfg.tuning_max_tokens)
    assert enc.input_ids.shape == (80, 48) and enc.target_mask.sum(1).min() >= 1
    assert not (enc.target_mask & ~enc.attention_mask.bool()).any()  # targets are real tokens
    assert enc.input_ids[0, 0] == tok.bos_token_id and not enc.target_mask[:, 0].any()
    held = instruction_data.instruction_examples(cfg, cfg.heldout_articles)
    assert {e.article for e in held} == set(range(21, 31))


@pytest.mark.parametrize("rank", [4, 0])
def test_tuning_lowers_the_training_loss_and_is_seeded(rank):
    cfg = _cfg(tuning_rank=rank, tuning_lr=1e-2 if rank else 3e-3)
    model, tok = _model()
    history, summary, adapter = tuning.tune(model, tok, cfg)
    assert len(history) == cfg.tuning_steps and (adapter is not None) == (rank > 0)
    assert summary["loss_after_train"] < summary["loss_before_train"] - 0.05
    again, _ = _model()
    history2, _, adapter2 = tuning.tune(again, tok, cfg)
    assert history["loss"].tolist() == history2["loss"].tolist()
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    if rank:
        assert all(torch.equal(adapter[k], adapter2[k]) for k in adapter)
        assert adapter["layers.0.self_attn.q_proj.lora_A"].shape == (rank, 64)
    other, _ = _model()
    history3, _, _ = tuning.tune(other, tok, cfg.replace(seed=1))
    assert history3["loss"].tolist() != history["loss"].tolist()


@pytest.mark.parametrize("rank", [2, 0])
def test_only_the_chosen_weights_move(rank):
    cfg = _cfg(tuning_params="mlp", tuning_steps=2, tuning_rank=rank)
    model, tok = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuning.tune(model, tok, cfg)
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".mlp." in k for k in moved)
    assert {k.rsplit(".", 2)[-2] for k in moved} == {"gate_proj", "up_proj", "down_proj"}
    with pytest.raises(ValueError, match="tuning_params"):
        tuning.check_tuning_config(cfg.replace(tuning_params="everything"))
    with pytest.raises(ValueError, match="tuning_rank"):
        tuning.check_tuning_config(cfg.replace(tuning_rank=-1))


def _assert_merge_equals_hooked(model, linears, ids, rank):
    """Random LoRA weights on `linears`: the hooked model's logits equal those after merging them into W."""
    adapter = lora.LoRA(linears, rank=rank, seed=0)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.05)
    adapter.attach()
    with torch.no_grad():
        hooked = model(ids).logits
    adapter.detach()
    lora.merge_adapter(model, adapter.state_dict(), adapter.scale)
    with torch.no_grad():
        assert torch.allclose(hooked, model(ids).logits, atol=1e-4)


def test_lora_merge_equals_the_hooked_model():
    model, tok = _model()
    linears = lora.target_linears(model, "layers")
    assert len(linears) == 4 * 7  # q, k, v, o, gate, up, down in 4 layers
    _assert_merge_equals_hooked(model, linears, torch.randint(3, 200, (2, 12)), rank=3)
    with pytest.raises(ValueError, match="does not have"):
        lora.merge_adapter(model, {"layers.9.mlp.up_proj.lora_A": torch.zeros(1, 64),
                                     "layers.9.mlp.up_proj.lora_B": torch.zeros(256, 1)}, 1.0)


@pytest.mark.parametrize("rank", [4, 0])
def test_cached_tuned_model_reloads_identical_weights(rank):
    cfg = _cfg(tuning_steps=3, tuning_rank=rank)
    base, tok = _model()
    labels = torch.zeros(4, 256, dtype=torch.long).numpy()
    first = tuning.load_tuned(cfg, base, tok, labels)
    assert first.folder == cache.stage_dir(cfg, "tuning") and (first.folder / "meta.json").exists()
    assert ((first.folder / tuning.ADAPTER_FILE).exists()) == (rank > 0)
    assert first.label == tuning.OFFLINE_LABEL and first.meta["steps"] == 3
    # the base model is not changed by the tuning
    fresh, _ = _model()
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), fresh.parameters()))
    second = tuning.load_tuned(cfg, base, tok, labels)
    assert second.history.equals(first.history) and second.meta == first.meta
    for p, q in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(base.parameters(), second.model.parameters()))
    # the tuned model's counts are cached apart from the base model's
    rec = tuning.record_config(cfg, second)
    assert rec.model.startswith("tiny-llama+tuned:") and cache.stage_key(rec, "record") != cache.stage_key(cfg, "record")
    assert "short instruction tuning" in tuning.describe_tuning(second)
    changes = tuning.weight_change(base, second.model)
    assert len(changes) == 4 and (changes.relative_change > 0).all()


def test_committed_adapter_is_used(monkeypatch, tmp_path):
    cfg = _cfg(tuning_steps=2)
    monkeypatch.setattr(tuning, "COMMITTED_DIR", tmp_path / "committed")
    target = tuning.write_committed(cfg)
    assert target == tuning.committed_dir(cfg) and (target / tuning.ADAPTER_FILE).exists()
    base, tok = _model()
    tuned = tuning.load_tuned(cfg, base, tok, torch.zeros(4, 256, dtype=torch.long).numpy())
    assert tuned.folder == target and not (tuning.tuned_dir(cfg) / "meta.json").exists()  # nothing re-tuned


def test_tuned_model_must_match_the_base_labels():
    cfg = _cfg(tuning_steps=1)
    base, tok = _model()
    with pytest.raises(ValueError, match="not a variant of the base model"):
        tuning.load_tuned(cfg, base, tok, torch.zeros(4, 128, dtype=torch.long).numpy())


def test_offline_tuning_needs_two_languages():
    with pytest.raises(ValueError, match="at least two"):
        instruction_data.instruction_examples(_cfg(languages=["en"]))


def test_committed_adapters_match_the_default_config():
    """A committed adapter is found by the default config's tuning key; a changed default would silently
    re-tune for minutes in 06, so it must come with a new adapter (babel tune)."""
    committed = sorted(p.parent.name for p in tuning.COMMITTED_DIR.glob("*/meta.json"))
    if not committed:
        pytest.skip("no committed adapter")
    cfg = config.load_config(paths.CONFIGS_DIR / "default.yaml")
    assert (tuning.committed_dir(cfg) / "meta.json").exists(), (
        f"resources/tuning holds {committed} but not the default config's key {tuning.committed_dir(cfg).name}; "
        "rerun `babel tune configs/default.yaml`.")


def test_lora_on_conv1d_maps_merges_like_the_hooked_model():
    """GPT-2 keeps its linear maps in Conv1D modules (weights [in, out]): the adapters fit and merge there too."""
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64)
    model = transformers.GPT2LMHeadModel(config).eval()
    linears = lora.target_linears(model, "layers")
    assert len(linears) == 2 * 4  # c_attn, c_proj of the attention; c_fc, c_proj of the FFN
    assert sorted(lora.target_linears(model, "mlp")) == ["layers.0.mlp.c_fc", "layers.0.mlp.c_proj",
                                                          "layers.1.mlp.c_fc", "layers.1.mlp.c_proj"]
    _assert_merge_equals_hooked(model, linears, torch.randint(3, 300, (2, 10)), rank=2)
