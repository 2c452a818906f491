"""Checkpoint I/O on micro checkpoints the tests write: run-format round trip, OpenVLA format, bad checkpoints."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from policies.openvla import weights as ck
from policies.openvla.openvla_format import export_openvla_checkpoint, from_openvla_checkpoint
from policies.openvla.processor import VLAProcessor
from policies.openvla.run_format import (
    RUN_CHECKPOINT_FORMAT,
    load_checkpoint_model,
    verify_checkpoint,
    write_checkpoint_dir,
    write_manifest,
)
from policies.openvla.weights import CheckpointError


def write_run_checkpoint(target, model, proc, norm_stats):
    """A finetune=full `vla train`-format checkpoint of an in-memory model (what the trainer writes)."""
    config = {
        "format": RUN_CHECKPOINT_FORMAT,
        "format_version": 1,
        "model": model.config.to_dict(),
        "data": {"cameras": list(model.config.cameras)},
        "finetune": "full",
        "base": None,
        "unnorm_key": next(iter(norm_stats)),
        "norm_mode": model.config.norm_mode,
    }
    return write_checkpoint_dir(target, config=config, processor=proc, model=model, norm_stats=norm_stats)


@pytest.fixture
def saved(tmp_path, make_model, micro_tokenizer, norm_stats):
    model, cfg = make_model(seed=5, center_crop=False)
    proc = VLAProcessor(cfg, micro_tokenizer)
    return model, proc, tmp_path


def test_run_checkpoint_round_trip_is_exact(saved, batch, norm_stats):
    model, proc, tmp = saved
    write_run_checkpoint(tmp / "ckpt", model, proc, norm_stats)
    assert sorted(os.listdir(tmp)) == ["ckpt"], "no temporary directories may be left behind"
    assert verify_checkpoint(tmp / "ckpt", deep=True), "a manifest is written last"
    loaded, proc2, _, raw = load_checkpoint_model(tmp / "ckpt")
    assert loaded.config == model.config and not loaded.training and raw["finetune"] == "full"
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    inputs, _ = batch(model.config)
    assert torch.equal(model.predict_action_chunk(**inputs), loaded.predict_action_chunk(**inputs))
    assert proc2.settings == proc.settings and proc2.tokenizer.get_vocab() == proc.tokenizer.get_vocab()
    bf16, *_ = load_checkpoint_model(tmp / "ckpt", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16


def test_failed_save_keeps_the_previous_checkpoint(saved, monkeypatch, norm_stats):
    model, proc, tmp = saved
    write_run_checkpoint(tmp / "ckpt", model, proc, norm_stats)
    before = (tmp / "ckpt" / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="no space left on device while writing .*ckpt"):
        write_run_checkpoint(tmp / "ckpt", model, proc, norm_stats)
    assert (tmp / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp)) == ["ckpt"]


def test_cut_short_weights_are_named(saved, norm_stats):
    """A truncated model.safetensors: a one-line CheckpointError naming the file (with and without manifest)."""
    model, proc, tmp = saved
    ckpt = write_run_checkpoint(tmp / "ckpt", model, proc, norm_stats)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 1000 bytes, the manifest says \d+ \(cut short"):
        load_checkpoint_model(ckpt)
    (ckpt / "manifest.json").unlink()  # a checkpoint written before manifests existed
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable safetensors file"):
        load_checkpoint_model(ckpt)


def test_run_checkpoint_lists_bad_keys(saved, norm_stats):
    model, proc, tmp = saved
    ckpt = write_run_checkpoint(tmp / "ckpt", model, proc, norm_stats)
    path = ckpt / "model.safetensors"
    state = load_file(str(path))
    del state["projector.fc3.bias"]
    state["projector.fc9.weight"] = torch.zeros(2)
    state["action_head.model.fc2.weight"] = torch.zeros(1, 1)
    save_file(state, str(path))
    write_manifest(ckpt)  # the tensors themselves are wrong, not the file
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_model(ckpt)
    msg = str(err.value)
    assert "projector.fc3.bias" in msg and "projector.fc9.weight" in msg and "action_head.model.fc2.weight" in msg
    assert "missing" in msg and "unexpected" in msg and "shape mismatch" in msg


def test_openvla_format_round_trip_loads_heads_and_stats(saved, batch, norm_stats):
    model, proc, tmp = saved
    export_openvla_checkpoint(tmp / "ov", model, norm_stats, max_shard_bytes=60_000, step="150000", processor=proc)
    names = os.listdir(tmp / "ov")
    assert "action_head--150000_checkpoint.pt" in names and "proprio_projector--150000_checkpoint.pt" in names
    assert sum(n.startswith("model-") for n in names) > 2
    loaded, proc2, stats = from_openvla_checkpoint(
        tmp / "ov", chunk_size=model.config.chunk_size, cameras=model.config.cameras, center_crop=False
    )
    assert loaded.config == model.config
    assert list(stats) == ["micro"] and stats["micro"].num_transitions == 64
    inputs, _ = batch(model.config)
    assert torch.equal(model.predict_action_chunk(**inputs), loaded.predict_action_chunk(**inputs))
    assert proc2.tokenizer.get_vocab() == proc.tokenizer.get_vocab()


def test_openvla_format_without_heads_is_the_token_model(tmp_path, make_model, norm_stats):
    model, cfg = make_model(action_head="tokens", proprio_dim=0)
    export_openvla_checkpoint(tmp_path / "ov", model, norm_stats)
    loaded, proc, _ = from_openvla_checkpoint(tmp_path / "ov")
    assert loaded.config.action_head == "tokens" and loaded.action_head is None and loaded.proprio_projector is None
    assert loaded.config.chunk_size == 1 and loaded.config.action_dim == 3
    assert proc.tokenizer is None  # not exported: image preprocessing only


@pytest.fixture
def exported(saved, norm_stats):
    model, proc, tmp = saved
    export_openvla_checkpoint(tmp / "ov", model, norm_stats, max_shard_bytes=60_000)
    return tmp / "ov"


def _index(ckpt):
    return json.loads((ckpt / "model.safetensors.index.json").read_text())


def test_missing_shard_is_named_with_its_tensors(exported):
    weight_map = _index(exported)["weight_map"]
    shard = weight_map["language_model.lm_head.weight"]
    (exported / shard).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{shard}.*language_model.lm_head.weight"):
        from_openvla_checkpoint(exported)


def test_wrong_shape_unknown_and_missing_keys_are_listed(exported):
    index = _index(exported)
    shard = index["weight_map"]["projector.fc1.weight"]
    state = load_file(str(exported / shard))
    state["projector.fc1.weight"] = torch.zeros(3, 3)
    state["vision_backbone.featurizer.blocks.0.attn.mystery"] = torch.zeros(4)
    index["weight_map"]["vision_backbone.featurizer.blocks.0.attn.mystery"] = shard
    save_file(state, str(exported / shard))
    gone = "projector.fc2.bias"
    other = index["weight_map"].pop(gone)
    state = load_file(str(exported / other))
    del state[gone]
    save_file(state, str(exported / other))
    (exported / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as err:
        from_openvla_checkpoint(exported)
    msg = str(err.value)
    assert "projector.fc1.weight: expected" in msg and "found [3, 3]" in msg
    assert "unexpected key(s): ['vision_backbone.featurizer.blocks.0.attn.mystery']" in msg
    assert f"missing key(s): ['{gone}']" in msg


def test_bad_head_file_is_reported(exported):
    path = next(exported.glob("action_head--*_checkpoint.pt"))
    state = torch.load(path, weights_only=True)
    state["module.model.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="module|model.extra.weight"):
        from_openvla_checkpoint(exported, chunk_size=2)


def test_format_confusion_has_clear_errors(exported, saved, norm_stats):
    with pytest.raises(ValueError, match="not written by `vla train`"):
        load_checkpoint_model(exported)
    model, proc, tmp = saved
    write_run_checkpoint(tmp / "run", model, proc, norm_stats)
    with pytest.raises(ValueError, match="model_type"):
        from_openvla_checkpoint(tmp / "run")


def test_key_report_limits_and_passes():
    ck.key_report("x", {"a": (1,)}, {"a": (1,)})
    with pytest.raises(CheckpointError, match="30 missing key"):
        ck.key_report("x", {f"k{i}": (1,) for i in range(30)}, {})


def test_released_openvla_7b_config_maps_to_the_preset_dimensions():
    from policies.openvla.config import preset
    from policies.openvla.openvla_config import config_from_openvla

    raw = {  # the fields of openvla/openvla-7b config.json that matter (its text_config is a 4.40 diff)
        "arch_specifier": "no-align+fused-gelu-mlp",
        "image_sizes": [224, 224],
        "llm_backbone_id": "llama2-7b-pure",
        "model_type": "openvla",
        "n_action_bins": 256,
        "pad_to_multiple_of": 64,
        "pad_token_id": 32000,
        "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "norm_stats": {"bridge_orig": {"action": {k: [0.0] * 7 for k in ("mean", "std", "min", "max", "q01", "q99")}}},
    }
    cfg = config_from_openvla(raw, "config.json", {}, {})
    want = preset("openvla-7b")
    assert (cfg.dino, cfg.siglip, cfg.llm, cfg.image_size, cfg.patch_size) == (
        want.dino,
        want.siglip,
        want.llm,
        want.image_size,
        want.patch_size,
    )
    assert (cfg.action_token_end_id, cfg.empty_token_id, cfg.action_head, cfg.chunk_size, cfg.action_dim) == (
        32000,
        29871,
        "tokens",
        1,
        7,
    )
    oft = config_from_openvla(raw, "config.json", {}, {"action_head": "l1", "action_dim": 14, "proprio_dim": 14})
    assert (oft.action_head, oft.chunk_size) == ("l1", 8)
    with pytest.raises(ValueError, match="unknown timm_model_ids"):
        config_from_openvla({**raw, "timm_model_ids": ["vit_base", "x"]}, "config.json", {}, {})
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        config_from_openvla({**raw, "text_config": {"tie_word_embeddings": True}}, "config.json", {}, {})


def test_several_head_steps_need_a_choice(exported):
    head = next(exported.glob("action_head--*_checkpoint.pt"))
    (exported / "action_head--99_checkpoint.pt").write_bytes(head.read_bytes())
    with pytest.raises(ValueError, match="several action_head files"):
        from_openvla_checkpoint(exported)
    model, _, _ = from_openvla_checkpoint(exported, step="99", chunk_size=2)
    assert model.action_head is not None


def test_check_checkpoint_on_a_run_checkpoint(saved, batch, norm_stats, capsys):
    from policies.openvla.check import run_check
    from policies.openvla.check_config import CheckCheckpointConfig

    model, proc, tmp = saved
    write_run_checkpoint(tmp / "ckpt", model, proc, norm_stats)
    inputs, _ = batch(model.config, n=2)
    images = torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8)
    pv = proc.preprocess_images(images, train=False)
    args = (pv, inputs["input_ids"], inputs["attention_mask"])
    with torch.no_grad():
        hidden = model.action_hidden_states(*args, inputs["proprio"])
        gen = model.generate_action_tokens(
            pv[:, :6], *args[1:], n_tokens=3, restrict_to_actions=False, return_logits=True
        )
        ref = {
            "images": images,
            "pixel_values": pv,
            "input_ids": args[1],
            "attention_mask": args[2],
            "proprio": inputs["proprio"],
            "projected_patch_embeddings": model.embed_images(pv),
            "oft_action_hidden_states": hidden,
            "oft_actions_normalized": model.action_head(hidden),
            "logits_last": gen["logits"][:, 0],
            "discrete_token_ids": gen["token_ids"],
        }
    save_file({k: v.contiguous() for k, v in ref.items()}, str(tmp / "ref.safetensors"))
    cfg = CheckCheckpointConfig(tmp / "ckpt", tmp / "ref.safetensors")
    assert run_check(cfg) == 0, capsys.readouterr().out
    ref["oft_actions_normalized"] = ref["oft_actions_normalized"] + 1e-4
    save_file({k: v.contiguous() for k, v in ref.items()}, str(tmp / "ref.safetensors"))
    assert run_check(cfg) == 1
    assert "failed: ['oft_actions_normalized']" in capsys.readouterr().out


def test_single_encoder_openvla_round_trip(tmp_path, make_model, batch, norm_stats):
    model, cfg = make_model(vision_backbone="siglip", center_crop=False)
    export_openvla_checkpoint(tmp_path / "ov", model, norm_stats)
    raw = json.loads((tmp_path / "ov" / "config.json").read_text())
    assert raw["use_fused_vision_backbone"] is False and raw["arch_specifier"] == "no-align+gelu-mlp"
    loaded, _, _ = from_openvla_checkpoint(
        tmp_path / "ov", chunk_size=cfg.chunk_size, cameras=cfg.cameras, center_crop=False
    )
    assert loaded.config.replace(dino=cfg.dino) == cfg  # the unused DINOv2 spec keeps its default
    inputs, _ = batch(cfg)
    assert torch.equal(model.predict_action_chunk(**inputs), loaded.predict_action_chunk(**inputs))
