"""Checkpoint directories: exact file set, atomic writes, ``last`` pointer, rotation, loading as a policy model
without the training data, LoRA on an OpenVLA-format base, and ``vla merge-lora``."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from trainer_fixtures import MICRO, micro_config, predict

from policies.openvla.run_format import load_checkpoint_model

TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}
TRAINING_STATE = {
    "training_state/optimizer.pt",
    "training_state/scheduler.pt",
    "training_state/rng.pt",
    "training_state/state.json",
}
COMMON = {"config.json", "dataset_statistics.json", "vla_processor.json", "manifest.json"} | TOKENIZER_FILES
FULL = COMMON | {"model.safetensors"}
LORA = COMMON | {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "heads.safetensors"}


pytestmark = pytest.mark.usefixtures("_restore_threads")


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def _train_capturing(cfg):
    """Train; return (result, the in-memory model's predictions at the last step, in-memory config)."""
    from train.trainer import train

    seen = {}

    def evaluate(step, factory):
        model, processor, stats, config = factory()
        seen["pred"], seen["config"] = predict(model, processor, stats), config
        return {}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = train(cfg, evaluate=evaluate)
    return result, seen["pred"], seen["config"]


def test_full_checkpoint_files_pointer_rotation_and_exact_reload(tmp_path, data3):
    result, pred, _ = _train_capturing(
        micro_config(data3, tmp_path / "run", steps=3, save_every=1, keep_last=2, bench_every=3)
    )
    root = tmp_path / "run/checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_2", "step_3"], "keep_last=2 rotation"
    assert os.readlink(root / "last") == "step_3", "last must be a relative symlink to the newest checkpoint"
    ckpt = result.last_checkpoint
    assert _files(ckpt) == FULL | TRAINING_STATE
    config = json.loads((ckpt / "config.json").read_text())
    assert config["finetune"] == "full" and config["base"] is None and config["step"] == 3
    assert config["data"]["cameras"] == ["head", "left_wrist"] and config["data"]["image_size"] == [32, 32]
    assert config["model"]["chunk_size"] == 4 and config["norm_mode"] == "bounds_q99"
    assert config["unnorm_key"] == "LiftCube-v1" and config["action_layout"][0] == "left_x"
    assert 0 < config["trainable_params"] < config["total_params"]
    state = json.loads((ckpt / "training_state/state.json").read_text())
    assert state["step"] == 3 and state["micro_batch"] == 3 and state["world_size"] == 1
    # no access to the training data: copy the checkpoint elsewhere and delete the data folder's copy
    moved = shutil.copytree(ckpt, tmp_path / "elsewhere")
    model, processor, stats, raw = load_checkpoint_model(moved)
    assert not model.training and raw["step"] == 3
    assert torch.equal(predict(model, processor, stats), pred), "reloaded model must predict exactly as in memory"
    from scripts.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["merge-lora", str(ckpt), str(tmp_path / "merged")])
    assert exit_info.value.code == 2 and not (tmp_path / "merged").exists(), "merge-lora needs a LoRA checkpoint"


def test_lora_checkpoint_without_base_is_self_contained_and_merges(tmp_path, data3):
    from scripts.cli import main

    data = shutil.copytree(data3, tmp_path / "data")
    result, pred, _ = _train_capturing(
        micro_config(data, tmp_path / "run", steps=2, finetune="lora", lora_rank=4, bench_every=2)
    )
    ckpt = result.last_checkpoint
    assert _files(ckpt) == LORA | {"base_model.safetensors"} | TRAINING_STATE
    shutil.rmtree(data)  # a checkpoint loads as a policy with no access to the training data
    model, processor, stats, raw = load_checkpoint_model(tmp_path / "run")  # a run dir resolves to last
    assert raw["finetune"] == "lora" and hasattr(model, "peft_config")
    assert torch.equal(predict(model, processor, stats), pred)
    with pytest.raises(SystemExit) as exit_info:
        main(["merge-lora", str(tmp_path / "run/checkpoints/last"), str(tmp_path / "merged")])
    assert exit_info.value.code == 0
    assert _files(tmp_path / "merged") == FULL
    merged, processor2, stats2, raw2 = load_checkpoint_model(tmp_path / "merged")
    assert raw2["finetune"] == "full" and raw2["merged_from"] == str(ckpt) and not hasattr(merged, "peft_config")
    diff = (predict(merged, processor2, stats2) - pred).abs().max()
    assert diff < 1e-5, f"merged model differs from the adapter model by {diff}"
    with pytest.raises(FileExistsError, match="already exists"):
        from train.checkpointing import merge_lora_checkpoint

        merge_lora_checkpoint(ckpt, tmp_path / "merged")


@pytest.fixture
def openvla_base(tmp_path, data3):
    """A micro model exported in the OpenVLA(-OFT) format, with an L1 head of chunk 8 and a tokenizer."""
    from policies.normalization import ArrayStats, NormStats
    from policies.openvla.config import preset
    from policies.openvla.model import VLA
    from policies.openvla.openvla_format import export_openvla_checkpoint
    from policies.openvla.processor import VLAProcessor
    from policies.openvla.tokenizer import config_for_tokenizer, train_instruction_tokenizer

    tokenizer = train_instruction_tokenizer(["pick up the cube", "grasp the cube", "raise the block"], n_action_bins=32)
    config = config_for_tokenizer(preset("tiny", **MICRO, chunk_size=8, proprio_dim=0, cameras=("head",)), tokenizer)
    torch.manual_seed(5)
    stats = {"base_data": NormStats(action=ArrayStats.compute(torch.randn(50, 14).numpy()))}
    return export_openvla_checkpoint(tmp_path / "base", VLA(config), stats, processor=VLAProcessor(config, tokenizer))


def test_lora_on_openvla_base(tmp_path, data3, openvla_base):
    cfg = micro_config(
        data3, tmp_path / "run", steps=2, base=openvla_base, lora_rank=4, bench_every=2, model_overrides={}
    )  # the base fixes every architecture field
    assert cfg.finetune.mode == "lora", "default with --base"
    result, pred, config = _train_capturing(cfg)
    ckpt = result.last_checkpoint
    assert _files(ckpt) == LORA | TRAINING_STATE, "with --base the frozen base is NOT copied"
    raw = json.loads((ckpt / "config.json").read_text())
    assert raw["base"] == str(openvla_base.resolve())
    assert raw["model"]["chunk_size"] == 4 and raw["model"]["proprio_dim"] == 14
    assert raw["model"]["cameras"] == ["head", "left_wrist"]
    model, processor, stats, _ = load_checkpoint_model(ckpt)
    assert torch.equal(predict(model, processor, stats), pred)
    moved = shutil.move(str(openvla_base), tmp_path / "moved_base")
    with pytest.raises(FileNotFoundError, match="base folder"):
        load_checkpoint_model(ckpt)
    model2, processor2, stats2, _ = load_checkpoint_model(ckpt, base=moved, merge=True)
    assert (predict(model2, processor2, stats2) - pred).abs().max() < 1e-5


def test_lora_on_base_under_bf16_keeps_the_frozen_base_in_bf16(tmp_path, data3, openvla_base):
    seen = {}

    def evaluate(step, factory):
        model, processor, stats, _ = factory()
        dtypes = {}
        for name, p in model.named_parameters():
            dtypes.setdefault((p.requires_grad, p.dtype), name)
        seen["dtypes"], seen["pred"] = dtypes, predict(model, processor, stats)
        return {}

    from train.trainer import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = train(
            micro_config(
                data3,
                tmp_path / "run",
                steps=2,
                base=openvla_base,
                lora_rank=4,
                bench_every=2,
                model_overrides={},
                mixed_precision="bf16",
            ),
            evaluate=evaluate,
        )
    assert {key for key in seen["dtypes"]} == {(False, torch.bfloat16), (True, torch.float32)}, seen["dtypes"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert torch.isfinite(seen["pred"]).all()


def test_base_with_incompatible_override_is_refused(tmp_path, data3, openvla_base):
    cfg = micro_config(data3, tmp_path / "run", base=openvla_base, model_overrides={"llm": {"num_layers": 1}})
    with pytest.raises(ValueError, match="fields that fix its weights: llm"):
        _train_capturing(cfg)
    assert not (tmp_path / "run").exists()


def test_failed_write_leaves_previous_checkpoint_and_no_partial_directory(tmp_path, data3, monkeypatch):
    import policies.openvla.run_format as run_format

    _train_capturing(micro_config(data3, tmp_path / "run", steps=2, save_every=2, bench_every=2))
    root = tmp_path / "run/checkpoints"

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_format, "write_model_files", boom)
    with pytest.raises(OSError, match="no space left on device while writing .*step_4"):
        _train_capturing(micro_config(data3, tmp_path / "run", steps=4, save_every=2, bench_every=2, resume=True))
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_2"], "no step_4 and no temporary directory"
    assert os.readlink(root / "last") == "step_2"


def test_rotation_never_deletes_the_last_target(tmp_path):
    from train.checkpointing import rotate_checkpoints, update_last_pointer

    for n in (1, 2, 3):
        (tmp_path / f"step_{n}").mkdir()
    update_last_pointer(tmp_path, "step_1")
    deleted = rotate_checkpoints(tmp_path, keep_last=1)
    assert sorted(p.name for p in deleted) == ["step_2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "step_1", "step_3"]


def test_reading_a_foreign_directory_is_a_clear_error(tmp_path):
    from policies.openvla.run_format import read_checkpoint_config, resolve_checkpoint_dir

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "openvla"}))
    with pytest.raises(ValueError, match="not 'vla-harness/run-checkpoint'"):
        read_checkpoint_config(tmp_path)
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json and no checkpoints/last"):
        resolve_checkpoint_dir(tmp_path / "run")
