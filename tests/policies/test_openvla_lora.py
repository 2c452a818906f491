"""LoRA with peft: targets, trainable counts, merge, adapter and heads persistence."""

from __future__ import annotations

import pytest
import torch

from policies.openvla.lora import (
    apply_lora,
    count_parameters,
    load_adapter,
    load_heads,
    merge_lora,
    save_adapter,
    save_heads,
)


def _perturb_lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_default_targets_are_llm_and_projector_linears_only(make_model):
    model, cfg = make_model()
    peft_model = apply_lora(model, r=4)
    wrapped = sorted(
        n.removeprefix("base_model.model.")
        for n, m in peft_model.named_modules()
        if hasattr(m, "lora_A") and hasattr(m, "base_layer")
    )
    assert len(wrapped) == 7 * cfg.llm.num_layers + 3
    assert {"projector.fc1", "projector.fc2", "projector.fc3"} <= set(wrapped)
    assert not any(
        n.startswith(("vision_backbone", "action_head", "proprio_projector")) or "lm_head" in n for n in wrapped
    )


def test_base_is_frozen_and_heads_stay_trainable(make_model):
    model, cfg = make_model(use_film=True)
    _, total_before = count_parameters(model)
    peft_model = apply_lora(model, r=4, alpha=8)
    trainable, total = count_parameters(peft_model)
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    heads = sum(p.numel() for m in (model.action_head, model.proprio_projector, model.film) for p in m.parameters())
    assert trainable == lora + heads
    assert total == total_before + lora
    assert not any(
        p.requires_grad for n, p in peft_model.named_parameters() if "language_model" in n and "lora_" not in n
    )


def test_merge_changes_outputs_less_than_1e5(make_model, batch):
    model, cfg = make_model()
    inputs, _ = batch(cfg)
    base_out = model.predict_action_chunk(**inputs)
    peft_model = apply_lora(model, r=4, alpha=16)
    _perturb_lora(peft_model)
    peft_model.eval()
    lora_out = peft_model.predict_action_chunk(**inputs)
    assert (lora_out - base_out).abs().max() > 1e-3, "the perturbed adapter must matter for the test to mean something"
    merged = merge_lora(peft_model)
    assert type(merged).__name__ == "VLA" and not hasattr(merged, "peft_config")
    assert (merged.predict_action_chunk(**inputs) - lora_out).abs().max() < 1e-5


def test_training_call_goes_through_the_wrapper(make_model, batch):
    model, cfg = make_model()
    inputs, actions = batch(cfg)
    peft_model = apply_lora(model, r=4)
    out = peft_model(**inputs, actions=actions)
    out["loss"].backward()
    assert any(p.grad is not None for n, p in peft_model.named_parameters() if "lora_A" in n)
    assert model.action_head.model.fc1.weight.grad is not None


def test_adapter_and_heads_round_trip(tmp_path, make_model, batch):
    model, cfg = make_model(seed=2)
    inputs, _ = batch(cfg)
    peft_model = apply_lora(model, r=4)
    _perturb_lora(peft_model, seed=1)
    with torch.no_grad():
        for p in model.action_head.parameters():
            p.add_(0.1)
    peft_model.eval()
    want = peft_model.predict_action_chunk(**inputs)
    save_adapter(peft_model, tmp_path)
    save_heads(peft_model, tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "heads.safetensors"} <= {
        p.name for p in tmp_path.iterdir()
    }
    fresh, _ = make_model(seed=2)  # same base weights, untrained heads
    restored = load_adapter(fresh, tmp_path)
    load_heads(restored, tmp_path)
    torch.testing.assert_close(restored.predict_action_chunk(**inputs), want, atol=0, rtol=0)


def test_bad_calls_are_rejected(tmp_path, make_model):
    model, _ = make_model()
    with pytest.raises(ValueError, match="r >= 1"):
        apply_lora(model, r=0)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="lm_head"):
        apply_lora(model, target_modules=["lm_head", "q_proj"])
    assert not any("lora_" in n for n, _ in model.named_parameters()), "a refused call must not leave adapters"
    assert model.language_model.lm_head.weight.requires_grad
    with pytest.raises(FileNotFoundError, match="heads.safetensors"):
        load_heads(model, tmp_path)
