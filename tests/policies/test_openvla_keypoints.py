"""Spatial-softmax keypoint tokens (VLAConfig.keypoints): coordinates, token layout, training, save/load."""

from __future__ import annotations

import pytest
import torch

from policies.openvla.keypoints import KeypointEncoder, spatial_softmax


def test_spatial_softmax_returns_the_peak_coordinates():
    maps = torch.zeros(2, 3, 5, 9)
    maps[0, 0, 0, 0] = 50.0  # top-left pixel centre: (-1, -1)
    maps[0, 1, 4, 8] = 50.0  # bottom-right: (1, 1)
    maps[0, 2, 2, 6] = 50.0  # row 2 of 5 -> y 0; column 6 of 9 -> x 0.5
    out = spatial_softmax(maps, torch.tensor(1.0))
    torch.testing.assert_close(out[0], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.5, 0.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1], torch.zeros(3, 2), atol=1e-6, rtol=0)  # flat maps: the image centre
    # A high temperature flattens a peak toward the centre.
    assert spatial_softmax(maps, torch.tensor(100.0))[0, 1].abs().max() < 0.5


def test_model_appends_one_keypoint_token_per_view(make_model, batch):
    model, cfg = make_model(keypoints=4)
    assert cfg.num_vision_tokens == len(cfg.cameras) * (cfg.num_patches_per_view + 1)
    inputs, _ = batch(cfg)
    feats = model.embed_images(inputs["pixel_values"])
    n = cfg.num_patches_per_view
    assert feats.shape == (3, cfg.num_vision_tokens, cfg.llm.hidden_size)
    enc = model.keypoint_encoder
    points = enc(enc.view_keypoints(inputs["pixel_values"], cfg.channels_per_view))
    for view in range(len(cfg.cameras)):
        torch.testing.assert_close(feats[:, view * (n + 1) + n], points[:, view])
    plain, _ = make_model()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("keypoint_encoder.")})
    patches = plain.embed_images(inputs["pixel_values"]).reshape(3, len(cfg.cameras), n, -1)
    torch.testing.assert_close(feats.reshape(3, len(cfg.cameras), n + 1, -1)[:, :, :n], patches)


def test_keypoint_token_follows_the_object_and_trains(make_model, batch):
    model, cfg = make_model(keypoints=2)
    inputs, actions = batch(cfg)
    model.train()
    out = model(**inputs, actions=actions)
    out["loss"].backward()
    grads = {n for n, p in model.keypoint_encoder.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"conv.0.weight", "log_temperature", "fc1.weight"} <= grads
    # Two images that differ only in where a bright square sits give different keypoints, in the right order.
    enc = KeypointEncoder(1, 8)
    with torch.no_grad():
        for p in enc.conv.parameters():
            p.zero_()
        enc.conv[0].weight[:, :3, 2, 2] = 1.0  # every channel: the centre tap of each colour (not the coordinates)
        enc.conv[2].weight[:, :, 1, 1] = torch.eye(enc.conv[2].weight.shape[0])
        enc.conv[4].weight.fill_(10.0)
    img = torch.zeros(2, 3, 32, 32)
    img[0, :, 4:8, 4:8] = 1.0
    img[1, :, 20:24, 24:28] = 1.0
    xy = enc.keypoints(img)[:, 0]
    assert xy[0, 0] < -0.5 and xy[0, 1] < -0.5 and xy[1, 0] > 0.4 and xy[1, 1] > 0.1, xy


def test_keypoint_heads_round_trip_and_refuse_openvla_export(tmp_path, make_model, batch):
    from policies.openvla.lora import load_heads, save_heads
    from policies.openvla.openvla_format import export_openvla_checkpoint

    model, cfg = make_model(seed=3, keypoints=3)
    inputs, _ = batch(cfg)
    save_heads(model, tmp_path)
    restored, _ = make_model(seed=4, keypoints=3)
    restored.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("keypoint_encoder.")}, strict=False
    )
    assert not torch.allclose(restored.predict_action_chunk(**inputs), model.predict_action_chunk(**inputs))
    load_heads(restored, tmp_path)
    torch.testing.assert_close(restored.predict_action_chunk(**inputs), model.predict_action_chunk(**inputs))
    with pytest.raises(ValueError, match="keypoint"):
        export_openvla_checkpoint(tmp_path / "export", model, {})


def test_negative_keypoints_rejected(make_config):
    with pytest.raises(ValueError, match="keypoints"):
        make_config(keypoints=-1)


def test_keypose_aux_adds_to_the_training_loss_only(make_model, batch):
    model, cfg = make_model(keypoints=2, keypose_aux=0.5)
    inputs, actions = batch(cfg)
    keypose = torch.rand(3, 2, 3) * 2 - 1
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    model.train()
    out = model(**inputs, actions=actions, keypose=keypose, keypose_mask=mask)
    plain = model(**inputs, actions=actions)
    assert out["keypose_l1"] > 0 and "keypose_l1" not in plain
    torch.testing.assert_close(out["loss"], plain["loss"] + 0.5 * out["keypose_l1"])
    out["loss"].backward()
    enc = model.keypoint_encoder
    assert enc.readout[0].weight.grad.abs().sum() > 0 and enc.conv[0].weight.grad.abs().sum() > 0
    model.eval()
    evaluated = model(**inputs, actions=actions, keypose=keypose, keypose_mask=mask)
    torch.testing.assert_close(evaluated["loss"], model(**inputs, actions=actions)["loss"])
    # Masked arms do not count: changing their targets leaves the loss unchanged.
    other = keypose.clone()
    other[~mask] += 5.0
    torch.testing.assert_close(
        enc.keypose_loss(torch.zeros(3, len(cfg.cameras), 4), keypose, mask),
        enc.keypose_loss(torch.zeros(3, len(cfg.cameras), 4), other, mask),
    )
    with pytest.raises(ValueError, match="keypose_aux"):
        make_model(keypose_aux=1.0)  # no keypoints to read out


def test_tokens_and_keypose_readout_share_one_conv_pass(make_model, batch):
    model, cfg = make_model(keypoints=2, keypose_aux=1.0)
    inputs, actions = batch(cfg)
    calls = []
    model.keypoint_encoder.conv.register_forward_hook(lambda *_: calls.append(1))
    keypose, mask = torch.zeros(3, 2, 3), torch.ones(3, 2, dtype=torch.bool)
    model.train()
    model(**inputs, actions=actions, keypose=keypose, keypose_mask=mask)
    assert len(calls) == 1 and model._given_points is None


def test_keypoints_see_their_image_coordinates():
    """CoordConv: on a blank image a translation-equivariant conv gives every position the same logit (all
    keypoints at the centre); with the coordinate channels the keypoints can sit anywhere."""
    from policies.openvla.keypoints import KeypointEncoder

    torch.manual_seed(0)
    enc = KeypointEncoder(8, 16)
    with torch.no_grad():
        points = enc.keypoints(torch.zeros(1, 3, 32, 32))
    assert points.abs().max() > 0.05
