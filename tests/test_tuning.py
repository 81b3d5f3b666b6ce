"""The offline instruction tuning of notebook 06 on a tiny model: it learns, is seeded, and reloads exactly."""

from __future__ import annotations

import pytest
import torch

from babel_utils import cache, config, models, tuning

TINY = dict(model="tiny-llama", device="cpu", languages=["en", "fr", "hi"], tuning_steps=6, tuning_lr=3e-3,
            tuning_batch=4, tuning_max_tokens=48)


def _cfg(**changes) -> config.BabelConfig:
    return config.BabelConfig(**{**TINY, **changes})


def _model():
    return models.load_model("tiny-llama", device="cpu")


def test_instruction_data_directions_and_encoding():
    cfg = _cfg()
    examples = tuning.instruction_examples(cfg)
    assert tuning.directions(cfg.languages) == [("en", "fr"), ("en", "hi"), ("fr", "en"), ("hi", "en")]
    assert len(examples) == 4 * 20 and examples[0].article == 1
    assert "from English to French" in examples[0].prompt and examples[0].prompt.endswith("French:")
    _, tok = _model()
    enc = tuning.encode(examples, tok, cfg.tuning_max_tokens)
    assert enc.input_ids.shape == (80, 48) and enc.target_mask.sum(1).min() >= 1
    assert not (enc.target_mask & ~enc.attention_mask.bool()).any()  # targets are real tokens
    assert enc.input_ids[0, 0] == tok.bos_token_id and not enc.target_mask[:, 0].any()
    held = tuning.instruction_examples(cfg, cfg.heldout_articles)
    assert {e.article for e in held} == set(range(21, 31))


def test_tuning_lowers_the_training_loss_and_is_seeded():
    cfg = _cfg()
    model, tok = _model()
    history, summary = tuning.tune(model, tok, cfg)
    assert len(history) == cfg.tuning_steps
    assert summary["loss_after_train"] < summary["loss_before_train"] - 0.05
    again, _ = _model()
    history2, summary2 = tuning.tune(again, tok, cfg)
    assert history["loss"].tolist() == history2["loss"].tolist()
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    other, _ = _model()
    history3, _ = tuning.tune(other, tok, cfg.replace(seed=1))
    assert history3["loss"].tolist() != history["loss"].tolist()


def test_only_the_chosen_weights_move():
    cfg = _cfg(tuning_params="mlp", tuning_steps=2)
    model, tok = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuning.tune(model, tok, cfg)
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".mlp." in k for k in moved)
    with pytest.raises(ValueError, match="tuning_params"):
        tuning.check_tuning_config(cfg.replace(tuning_params="everything"))


def test_cached_tuned_model_reloads_identical_weights():
    cfg = _cfg(tuning_steps=3)
    base, tok = _model()
    labels = torch.zeros(4, 256, dtype=torch.long).numpy()
    first = tuning.load_tuned(cfg, base, tok, labels)
    assert first.folder == cache.stage_dir(cfg, "tuning") and (first.folder / "meta.json").exists()
    assert first.label == tuning.OFFLINE_LABEL and first.meta["steps"] == 3
    # the base model is not changed by the tuning
    fresh, _ = _model()
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), fresh.parameters()))
    second = tuning.load_tuned(cfg, base, tok, labels)
    assert second.history.equals(first.history) and second.meta == first.meta
    for p, q in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(base.parameters(), second.model.parameters()))
    assert tuning.record_config(cfg, second).model == str(first.folder / "model")
    assert "short instruction tuning" in tuning.describe_tuning(second)


def test_tuned_model_must_match_the_base_labels():
    cfg = _cfg(tuning_steps=1)
    base, tok = _model()
    with pytest.raises(ValueError, match="not a variant of the base model"):
        tuning.load_tuned(cfg, base, tok, torch.zeros(4, 128, dtype=torch.long).numpy())


def test_offline_tuning_needs_two_languages():
    with pytest.raises(ValueError, match="at least two"):
        tuning.instruction_examples(_cfg(languages=["en"]))
