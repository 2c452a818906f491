"""VLAConfig: presets, overrides, validation messages, JSON round trip."""

from __future__ import annotations

import json

import pytest

from policies.openvla.config import VLAConfig, pad_vocab, preset


def test_openvla_7b_preset_has_the_real_dimensions():
    cfg = preset("openvla-7b")
    assert cfg.vision_dim == 1024 + 1152
    assert cfg.num_patches_per_view == 256
    assert cfg.channels_per_view == 6
    assert cfg.projector_kind == "fused-gelu-mlp"
    assert (cfg.llm.hidden_size, cfg.llm.num_layers, cfg.llm.vocab_size) == (4096, 32, 32064)
    assert cfg.action_token_end_id == 32000 and cfg.empty_token_id == 29871


def test_tiny_preset_is_small_and_same_architecture():
    cfg = preset("tiny")
    assert cfg.vision_backbone == "dinosiglip" and cfg.projector_kind == "fused-gelu-mlp"
    assert (cfg.image_size, cfg.patch_size, cfg.num_patches_per_view) == (128, 16, 64)
    assert cfg.dino.width == 192 and 4 <= cfg.dino.depth <= 6
    assert (cfg.llm.hidden_size, cfg.llm.num_layers) == (256, 4)


def test_overrides_reach_nested_fields_and_keep_the_rest():
    cfg = preset("tiny", chunk_size=4, llm={"num_layers": 2}, cameras=["head"])
    assert cfg.chunk_size == 4 and cfg.llm.num_layers == 2 and cfg.llm.hidden_size == 256
    assert cfg.cameras == ("head",)
    assert preset("tiny").chunk_size == 8  # presets are not mutated


def test_json_round_trip_is_exact():
    cfg = preset("tiny", use_film=True, action_head="tokens", token_decoding="parallel", cameras=("low", "head"))
    again = VLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"cameras": ("head", "nose")}, "cameras"),
        ({"cameras": ()}, "cameras"),
        ({"action_head": "diffusion"}, "action_head"),
        ({"image_size": 100}, "image_size 100"),
        ({"dino": {"mlp_dim": 300}}, "dino.mlp_dim"),
        ({"llm": {"num_heads": 5}}, "num_heads"),
        ({"action_token_end_id": 5000}, "action_token_end_id"),
        ({"norm_mode": "minmax"}, "norm_mode"),
        ({"crop_scale": 1.5}, "crop_scale"),
    ],
)
def test_invalid_values_name_the_field(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        preset("tiny", **overrides)


def test_unknown_field_and_preset_are_listed():
    with pytest.raises(ValueError, match="unknown field.*chunksize"):
        preset("tiny", chunksize=3)
    with pytest.raises(ValueError, match="unknown VLA preset 'huge'.*openvla-7b"):
        preset("huge")


def test_pad_vocab_matches_openvla():
    assert pad_vocab(32001) == 32064
    assert pad_vocab(64) == 64
