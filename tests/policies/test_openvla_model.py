"""The VLA forward: heads, losses, padding, attention pattern, FiLM, dtypes, action-token bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.openvla.heads import actions_to_token_ids, bin_centers, token_ids_to_actions

MODES = [("l1", "autoregressive"), ("tokens", "autoregressive"), ("tokens", "parallel")]


@pytest.mark.parametrize(("head", "decoding"), MODES)
def test_training_forward_returns_loss_metrics_and_gradients(make_model, batch, head, decoding):
    model, cfg = make_model(action_head=head, token_decoding=decoding)
    inputs, actions = batch(cfg)
    model.train()
    calls = []
    vb = model.vision_backbone
    for last in (vb.featurizer.encoder.layer[-1], vb.fused_featurizer.encoder.layers[-1], vb.fused_featurizer.head):
        last.register_forward_hook(lambda *args: calls.append(1))
    out = model(**inputs, actions=actions)
    assert not calls, "the last ViT block and SigLIP's pool head must not run (features come from block depth-2)"
    assert out["actions_pred"].shape == (3, cfg.chunk_size, cfg.action_dim)
    assert out["actions_pred"].dtype == torch.float32
    for key in ("loss", "curr_action_l1", "future_actions_l1"):
        assert out[key].ndim == 0 and torch.isfinite(out[key]), key
    out["loss"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("language_model.model.layers.0") for n in grads)
    assert any(n.startswith("vision_backbone.fused_featurizer") for n in grads)
    assert any(n.startswith("proprio_projector") for n in grads)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "vision_backbone.featurizer.layernorm.weight" in frozen and not frozen & grads


def test_l1_loss_is_the_mean_abs_error_and_skips_padded_steps(make_model, batch):
    model, cfg = make_model()
    inputs, actions = batch(cfg)
    pred = model(**inputs)["actions_pred"]
    out = model(**inputs, actions=actions)
    torch.testing.assert_close(out["loss"], (pred - actions).abs().mean())
    torch.testing.assert_close(out["curr_action_l1"], (pred - actions)[:, 0].abs().mean())
    pad = torch.zeros(3, cfg.chunk_size, dtype=torch.bool)
    pad[:, -1] = True
    changed = actions.clone()
    changed[:, -1] += 5.0  # targets of padded steps must not matter
    a = model(**inputs, actions=actions, action_is_pad=pad)["loss"]
    b = model(**inputs, actions=changed, action_is_pad=pad)["loss"]
    c = model(**inputs, actions=changed)["loss"]
    torch.testing.assert_close(a, b)
    assert c > a + 1.0


def test_token_loss_is_cross_entropy_on_action_tokens(make_model, batch):
    model, cfg = make_model(action_head="tokens", token_decoding="parallel")
    inputs, actions = batch(cfg)
    labels = actions_to_token_ids(actions, cfg.n_action_bins, cfg.action_token_end_id).reshape(3, -1)
    hidden = model.action_hidden_states(
        inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], inputs["proprio"]
    )
    logits = model.language_model.lm_head(hidden)
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(model(**inputs, actions=actions)["loss"], want)


@pytest.mark.parametrize(("head", "decoding"), MODES)
def test_right_padding_does_not_change_actions(make_model, batch, head, decoding):
    model, cfg = make_model(action_head=head, token_decoding=decoding)
    inputs, _ = batch(cfg)
    lengths = inputs["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1, "the batch must contain padded prompts"
    full = model.predict_action_chunk(**inputs)
    assert full.shape == (3, cfg.chunk_size, cfg.action_dim)
    for i, n in enumerate(lengths.tolist()):
        alone = model.predict_action_chunk(
            inputs["pixel_values"][i : i + 1],
            inputs["input_ids"][i : i + 1, :n],
            inputs["attention_mask"][i : i + 1, :n],
            inputs["proprio"][i : i + 1],
        )
        torch.testing.assert_close(full[i], alone[0], atol=1e-5, rtol=0)


def test_autoregressive_logits_ignore_padding(make_model, batch):
    model, cfg = make_model(action_head="tokens")
    inputs, _ = batch(cfg)
    args = (inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], inputs["proprio"])
    full = model.generate_action_tokens(*args, return_logits=True)
    n = int(inputs["attention_mask"][0].sum())
    alone = model.generate_action_tokens(args[0][:1], args[1][:1, :n], args[2][:1, :n], args[3][:1], return_logits=True)
    torch.testing.assert_close(full["logits"][0], alone["logits"][0], atol=1e-5, rtol=0)
    assert torch.equal(full["token_ids"][0], alone["token_ids"][0])
    lo = cfg.action_token_end_id - cfg.n_action_bins
    assert ((full["token_ids"] >= lo) & (full["token_ids"] < cfg.action_token_end_id)).all()


def test_parallel_decoding_is_bidirectional_and_token_decoding_is_causal(make_model, batch):
    model, cfg = make_model()
    inputs, _ = batch(cfg, n=1)
    embeds = torch.randn(1, 12, cfg.llm.hidden_size)
    mask = torch.ones(1, 12, dtype=torch.int64)
    later = embeds.clone()
    later[:, -1] += 1.0
    for causal, should_change in ((False, True), (True, False)):
        a = model._llm(embeds, mask, causal).last_hidden_state[:, :6]
        b = model._llm(later, mask, causal).last_hidden_state[:, :6]
        assert (not torch.allclose(a, b, atol=1e-6)) == should_change, f"causal={causal}"


def test_readout_is_off_by_one(make_model, batch):
    """Slot j is read at the position of slot j-1: slot 0 comes from the last prompt token."""
    model, cfg = make_model()
    inputs, _ = batch(cfg, n=1)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    slots = torch.zeros(1, cfg.n_action_slots, cfg.llm.hidden_size)
    embeds, full_mask, start = model._sequence(inputs["pixel_values"], ids, mask, inputs["proprio"], slots, stop=True)
    hidden = model._llm(embeds, full_mask, False).last_hidden_state
    got = model.action_hidden_states(inputs["pixel_values"], ids, mask, inputs["proprio"])
    n_prefix = 2 * cfg.num_patches_per_view + 1  # 2 views + proprio token
    assert int(start) == n_prefix + ids.shape[1]
    torch.testing.assert_close(
        got, hidden[:, n_prefix + ids.shape[1] - 1 : n_prefix + ids.shape[1] - 1 + cfg.n_action_slots]
    )


def test_sdpa_and_eager_attention_agree(make_model, batch):
    sdpa, cfg = make_model(seed=3)
    eager, _ = make_model(seed=3, attn_implementation="eager")
    eager.load_state_dict(sdpa.state_dict())
    inputs, _ = batch(cfg)
    torch.testing.assert_close(
        sdpa.predict_action_chunk(**inputs), eager.predict_action_chunk(**inputs), atol=1e-5, rtol=0
    )


def test_film_zero_is_identity_and_nonzero_conditions_on_language(make_model, batch):
    model, cfg = make_model(seed=1, use_film=True)
    plain, _ = make_model(seed=1)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("film.")})
    inputs, _ = batch(cfg)
    torch.testing.assert_close(model.predict_action_chunk(**inputs), plain.predict_action_chunk(**inputs))
    with torch.no_grad():
        for p in model.film.parameters():
            p.normal_(0, 0.5)
    lang = torch.randn(2, cfg.llm.hidden_size)
    pv = inputs["pixel_values"][:1].expand(2, -1, -1, -1)
    feats = model.embed_images(pv, lang)
    assert not torch.allclose(feats[0], feats[1], atol=1e-4), "FiLM must make features depend on the language"


def test_bf16_on_cpu(make_model, batch):
    model, cfg = make_model()
    inputs, actions = batch(cfg)
    ref = model.predict_action_chunk(**inputs)
    model = model.to(torch.bfloat16)
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    out = model(**inputs, actions=actions)
    assert out["actions_pred"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert (model.predict_action_chunk(**inputs) - ref).abs().max() < 0.1


def test_bad_inputs_are_rejected(make_model, batch):
    model, cfg = make_model()
    inputs, _ = batch(cfg)
    left = dict(inputs, attention_mask=inputs["attention_mask"].flip(1))
    with pytest.raises(ValueError, match="right-padded"):
        model.predict_action_chunk(**left)
    with pytest.raises(ValueError, match="proprio"):
        model.predict_action_chunk(**{k: v for k, v in inputs.items() if k != "proprio"})
    with pytest.raises(ValueError, match="channels"):
        model.predict_action_chunk(**dict(inputs, pixel_values=inputs["pixel_values"][:, :5]))
    with pytest.raises(ValueError, match="actions must be"):
        model(**inputs, actions=torch.zeros(3, cfg.chunk_size + 1, cfg.action_dim))


def test_action_tokens_match_openvla_digitize():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(-1.2, 1.2, 500), [-1.0, 1.0, 0.0]]).astype(np.float32)
    bins = np.linspace(-1, 1, 256)
    want = 32000 - np.digitize(np.clip(a, -1, 1), bins)  # openvla ActionTokenizer.__call__
    got = actions_to_token_ids(torch.from_numpy(a), 256, 32000).numpy()
    np.testing.assert_array_equal(got, want)
    centers = (bins[:-1] + bins[1:]) / 2
    decoded = token_ids_to_actions(torch.from_numpy(got), 256, 32000).numpy()
    np.testing.assert_allclose(decoded, centers[np.clip(32000 - want - 1, 0, 254)], atol=1e-7)
    assert np.abs(decoded - np.clip(a, -1, 1)).max() <= (2 / 255) + 1e-6
    assert bin_centers(256).shape == (255,)


@pytest.mark.slow
def test_torch_compile_gives_the_same_chunk(make_model, batch):
    model, cfg = make_model()
    inputs, _ = batch(cfg)
    want = model.predict_action_chunk(**inputs)
    model.compile_submodules()
    torch.testing.assert_close(model.predict_action_chunk(**inputs), want, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_sdpa_matches_cpu(make_model, batch):
    model, cfg = make_model()
    inputs, actions = batch(cfg)
    want = model.predict_action_chunk(**inputs)
    gpu = model.to(device="cuda", dtype=torch.bfloat16)
    cuda_inputs = {k: v.cuda() for k, v in inputs.items()}
    got = gpu.predict_action_chunk(**cuda_inputs)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    assert (got.cpu() - want).abs().max() < 0.1
    out = gpu(**cuda_inputs, actions=actions.cuda())
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("backbone", ["dinov2", "siglip"])
def test_single_encoder_backbones(make_model, batch, backbone):
    model, cfg = make_model(vision_backbone=backbone, cameras=("head", "left_wrist", "right_wrist"))
    assert cfg.channels_per_view == 3 and cfg.projector_kind == "gelu-mlp"
    assert not hasattr(model.projector, "fc3")
    assert model.vision_backbone.featurizer.__class__.__name__.lower().startswith(backbone[:5])
    inputs, actions = batch(cfg)
    assert inputs["pixel_values"].shape[1] == 9
    out = model(**inputs, actions=actions)
    assert out["actions_pred"].shape == (3, cfg.chunk_size, cfg.action_dim) and torch.isfinite(out["loss"])
