"""The training loop: exact resume, overfitting, the eval hook, schedules, the sampler, config and CLI errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_fixtures import MICRO, micro_config, write_dataset

from train.logging_utils import read_metrics

pytestmark = pytest.mark.usefixtures("_restore_threads")


def _quiet_train(cfg, evaluate=None):
    from train.trainer import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the small-global-batch warning (tested on its own)
        return train(cfg, evaluate=evaluate)


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {
        f"{p.relative_to(directory)}:{k}": v
        for p in sorted(directory.rglob("*.safetensors"))
        for k, v in load_file(p).items()
    }


# ---- resume -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variant",
    [
        dict(finetune="full"),
        dict(finetune="lora", lora_rank=4, grad_accum=2, num_workers=1, mixed_precision="bf16", val_episodes=(2,)),
        dict(finetune="full", action_head="flow", flow_steps=2, val_episodes=(2,)),  # its noise must resume too
    ],
    ids=["full-fp32", "lora-bf16-accum2-worker", "flow-head"],
)
def test_two_steps_then_resume_equals_uninterrupted(tmp_path, data3, variant):
    a = _quiet_train(micro_config(data3, tmp_path / "a", **variant))
    b1 = _quiet_train(micro_config(data3, tmp_path / "b", **{**variant, "steps": 2}))
    b2 = _quiet_train(micro_config(data3, tmp_path / "b", resume=True, **variant))
    assert b2.step == 4 and len(b2.history) == 2, "the resumed session must run steps 3 and 4 only"
    losses_a = [h["loss"] for h in a.history]
    losses_b = [h["loss"] for h in b1.history + b2.history]
    assert losses_a == losses_b, f"per-step losses differ: {losses_a} vs {losses_b}"
    assert [h["lr"] for h in a.history] == [h["lr"] for h in b1.history + b2.history]
    wa, wb = _tensors(a.last_checkpoint), _tensors(b2.last_checkpoint)
    assert wa.keys() == wb.keys() and len(wa) > 0
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    opt_a = torch.load(a.last_checkpoint / "training_state/optimizer.pt", weights_only=True)
    opt_b = torch.load(b2.last_checkpoint / "training_state/optimizer.pt", weights_only=True)
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for i, state in opt_a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, opt_b["state"][i][key]), f"optimizer state {i}.{key} differs"
    steps_logged = [r["step"] for r in read_metrics(tmp_path / "b") if "train/loss" in r]
    assert steps_logged == [1, 2, 3, 4]
    markers = [r for r in read_metrics(tmp_path / "b") if r.get("event") == "resume"]
    assert [m["step"] for m in markers] == [2], "the resumed attempt marks where it starts in metrics.jsonl"
    assert (tmp_path / "b/checkpoints/last").resolve().name == "step_4"


def test_overfits_one_episode(tmp_path):
    """A micro model drives the L1 loss on one episode down by >= 10x (no augmentation, cosine lr)."""
    data = write_dataset(tmp_path / "one", episodes=1)
    cfg = micro_config(
        data,
        tmp_path / "run",
        steps=400,
        batch_size=19,
        chunk_size=2,
        lr=1e-3,
        lr_schedule="cosine",
        weight_decay=0.0,
        save_every=400,
        log_every=50,
        model_overrides={**MICRO, "image_aug": False},
    )
    result = _quiet_train(cfg)
    losses = [h["loss"] for h in result.history]
    assert np.isfinite(losses).all()
    ratio = losses[0] / min(losses[-10:])
    assert ratio >= 10, f"loss fell only {ratio:.1f}x: {losses[0]:.4f} -> {min(losses[-10:]):.4f}"


# ---- hook, warning, logging ---------------------------------------------------------------------------------
def test_eval_hook_called_at_the_right_steps_and_logged(tmp_path, data3):
    calls = []

    def evaluate(step, factory):
        model, processor, norm_stats, config = factory()
        assert not model.training, "the factory must hand over the model in eval mode"
        assert config["step"] == step and config["finetune"] == "full"
        from trainer_fixtures import predict

        chunk = predict(model, processor, norm_stats)
        calls.append(step)
        return {"success_once": step / 10, "chunk_abs_mean": float(chunk.abs().mean())}

    result = _quiet_train(
        micro_config(data3, tmp_path / "run", steps=5, bench_every=2, save_every=10, benchmark="smoke"),
        evaluate=evaluate,
    )
    assert calls == [2, 4, 5], "every bench_every steps and at the last step"
    logged = {r["step"]: r["bench/success_once"] for r in read_metrics(result.run_dir) if "bench/success_once" in r}
    assert logged == {2: 0.2, 4: 0.4, 5: 0.5}
    records = read_metrics(result.run_dir)
    train_keys = {
        "train/loss",
        "train/curr_action_l1",
        "train/future_actions_l1",
        "train/lr",
        "train/grad_norm",
        "train/samples_per_s",
        "train/data_wait_frac",
    }
    assert train_keys <= set().union(*records)
    assert list((result.run_dir / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard events missing"


def test_validation_metrics_logged_on_held_out_episodes(tmp_path, data3):
    result = _quiet_train(micro_config(data3, tmp_path / "run", steps=2, val_episodes=(1,), val_every=1))
    val = [r for r in read_metrics(result.run_dir) if "val/loss" in r]
    assert [r["step"] for r in val] == [1, 2]
    assert all(r["val/curr_action_l1"] > 0 for r in val)
    config = json.loads((result.last_checkpoint / "config.json").read_text())
    assert config["data"]["val_episodes_used"] == [1] and config["data"]["train_episodes"] == [0, 2]


@pytest.mark.parametrize(
    "batch,accum,processes,warns",
    [(4, 1, 1, True), (8, 1, 1, True), (4, 4, 1, False), (8, 1, 2, False), (16, 1, 1, False)],
)
def test_small_global_batch_warns(tmp_path, batch, accum, processes, warns):
    from train.trainer import _warn_small_batch

    cfg = micro_config(tmp_path, tmp_path / "run", batch_size=batch, grad_accum=accum)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_small_batch(cfg, processes)
    messages = [str(w.message) for w in caught]
    assert bool(messages) == warns, messages
    if warns:
        assert f"global batch {batch * accum * processes}" in messages[0] and "one trajectory" in messages[0]


def test_training_run_emits_the_global_batch_warning(tmp_path, data3):
    from train.trainer import train

    with pytest.warns(UserWarning, match=r"global batch 4 .* below 16"):
        train(micro_config(data3, tmp_path / "run", steps=1, save_every=1))


# ---- schedules and sampler ----------------------------------------------------------------------------------
def test_lr_schedules():
    from train.model_setup import lr_lambda

    multi = lr_lambda("multistep", 10, 0, (8,), 0.1)
    assert [multi(k) for k in (0, 7, 8, 9)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]
    warm = lr_lambda("cosine", 10, 2, (), 0.1)
    assert warm(0) == 0.5 and warm(1) == 1.0 and warm(2) == 1.0
    assert warm(6) == pytest.approx(0.5) and warm(10) == pytest.approx(0.0)
    assert lr_lambda("constant", 10, 0, (), 0.1)(9) == 1.0
    from train.train_config import TrainConfig

    assert TrainConfig.from_flat(data=Path("d"), out=Path("o"), steps=50000).milestones() == (40000,)


def test_sampler_shards_are_disjoint_and_resumable():
    from train.sampler import ResumableBatchSampler

    ranks = [ResumableBatchSampler(50, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == 6  # 50 // (4 * 2), the tail is dropped
    epoch0 = [i for r in ranks for b in r.epoch_batches(0) for i in b]
    assert len(epoch0) == len(set(epoch0)) == 48
    assert ranks[0].epoch_batches(1) != ranks[0].epoch_batches(0), "each epoch has its own permutation"
    assert ranks[1].epoch_batches(1, start=4) == ranks[1].epoch_batches(1)[4:]
    assert ranks[0].position(13) == (2, 1)
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        ResumableBatchSampler(7, 4, seed=0, world_size=2)


# ---- config, YAML, CLI, errors ------------------------------------------------------------------------------
def test_yaml_supplies_defaults_and_explicit_flags_win(tmp_path):
    from train.train_config import parse_train_args

    path = tmp_path / "run.yaml"
    path.write_text(
        f"data: {tmp_path}\nout: {tmp_path / 'r'}\nlr: 1.0e-3\nsteps: 7\nbatch-size: 4\n"
        "model_overrides: {llm: {num_layers: 1}}\n"
    )
    cfg = parse_train_args(["--config", str(path), "--lr", "5e-4"])  # explicit flag equal to the default still wins
    assert cfg.optim.lr == 5e-4 and cfg.optim.steps == 7 and cfg.optim.batch_size == 4 and cfg.data.data_dir == tmp_path
    assert cfg.model.model_overrides == {"llm": {"num_layers": 1}} and cfg.config == path
    assert parse_train_args(["--config", str(path)]).optim.lr == 1e-3


def test_yaml_unknown_key_is_a_clear_error(tmp_path):
    from train.train_config import TrainConfig, parse_train_args

    path = tmp_path / "bad.yaml"
    path.write_text("data: x\nout: y\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key 'learning_rate'"):
        parse_train_args(["--config", str(path)])
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_yaml(path)
    assert not (tmp_path / "y").exists()


def test_bad_model_overrides_fail_when_the_config_is_built(tmp_path):
    from train.train_config import TrainConfig

    path = tmp_path / "bad.yaml"
    path.write_text("model_overrides: {proprio_nois: 0.5}\n")
    with pytest.raises(ValueError, match=r"proprio_nois \(did you mean proprio_noise\?\)"):
        TrainConfig.from_yaml(path, data=tmp_path, out=tmp_path / "r")
    path.write_text("model_overrides: {proprio_noise: -1}\n")
    with pytest.raises(ValueError, match="proprio_noise must be a finite std >= 0"):
        TrainConfig.from_yaml(path, data=tmp_path, out=tmp_path / "r")
    with pytest.raises(ValueError, match="needs use_proprio"):
        TrainConfig.from_flat(data=tmp_path, out=tmp_path / "r", proprio_noise=0.5)
    with pytest.raises(ValueError, match="proprio_noise must be a finite std >= 0"):
        TrainConfig.from_flat(data=tmp_path, out=tmp_path / "r", use_proprio=True, proprio_noise=float("nan"))
    with pytest.raises(ValueError, match="proprio_noise_dims=.* needs use_proprio"):
        TrainConfig.from_flat(data=tmp_path, out=tmp_path / "r", proprio_noise_dims=("left_z=0.1",))
    path.write_text("use_proprio: true\nproprio_noise_dims: [left_z=0.1, lift_z=0.1]\n")
    with pytest.raises(ValueError, match="'lift_z=0.1' is not NAME=STD"):
        TrainConfig.from_yaml(path, data=tmp_path, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_cli_train_from_yaml_then_resume(tmp_path, data3, capsys):
    from scripts.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(
        json.dumps(
            {
                "data": str(data3),
                "out": str(tmp_path / "run"),
                "steps": 1,
                "batch_size": 4,
                "chunk_size": 4,
                "num_workers": 0,
                "threads": 1,
                "progress": False,
                "model_overrides": MICRO,
            }
        )
    )  # JSON is YAML
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--config", str(path)])
        assert exit_info.value.code == 0
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--config", str(path), "--steps", "2", "--resume"])
        assert exit_info.value.code == 0
    assert (tmp_path / "run/checkpoints/last").resolve().name == "step_2"
    assert "last checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("steps", 0, "steps must be an integer >= 1"),
        ("lr", -1.0, "lr must be > 0"),
        ("cameras", ("head", "top"), "unknown camera"),
        ("lr_milestones", (5, 3), "strictly increasing"),
        ("warmup_steps", 10, "warmup_steps"),
        ("base", Path("/nonexistent/base"), "not an OpenVLA-format"),
    ],
)
def test_config_validation_names_field(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        micro_config(tmp_path, tmp_path / "run", **{field: value})


def test_missing_data_dir_writes_nothing(tmp_path):
    from train.episodes import EpisodeDataError

    with pytest.raises(EpisodeDataError, match="does not exist"):
        _quiet_train(micro_config(tmp_path / "absent", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_resume_without_checkpoint_writes_nothing(tmp_path, data3):
    from train.checkpointing import ResumeError

    with pytest.raises(ResumeError, match="run does not exist; nothing to resume"):
        _quiet_train(micro_config(data3, tmp_path / "run", resume=True))
    assert not (tmp_path / "run").exists()


def test_resume_with_changed_lr_is_refused_and_existing_run_protected(tmp_path, data3):
    from train.checkpointing import ResumeError

    run = tmp_path / "run"
    _quiet_train(micro_config(data3, run, steps=2))
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(ResumeError, match=r"lr: checkpoint 0.0005 vs now 0.001"):
        _quiet_train(micro_config(data3, run, steps=4, lr=1e-3, resume=True))
    with pytest.raises(ResumeError, match="already has checkpoints"):
        _quiet_train(micro_config(data3, run, steps=4))
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"}  # the lock is taken briefly
    assert after == {p: t for p, t in before.items() if p.name != ".lock"}, "a refused run must not touch RUN"


def test_extending_steps_warns_when_it_changes_the_finished_schedule(tmp_path, data3):
    run = tmp_path / "run"
    _quiet_train(micro_config(data3, run, steps=2, lr_schedule="cosine"))
    from train.trainer import train

    with pytest.warns(UserWarning, match=r"--steps 2 -> 3 changes the cosine lr schedule of steps already trained"):
        warnings.filterwarnings("ignore", message=".*global batch")
        result = train(micro_config(data3, run, steps=3, lr_schedule="cosine", resume=True))
    assert result.step == 3


def test_extending_steps_can_keep_the_decay_it_had(tmp_path, data3):
    run = tmp_path / "run"
    _quiet_train(micro_config(data3, run, steps=5, warmup_steps=0))  # default milestone: 80 % of 5 = step 4
    from train.trainer import train

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*lr schedule.*")  # same lr for the steps done: no warning
        warnings.filterwarnings("ignore", message=".*global batch")
        result = train(micro_config(data3, run, steps=7, warmup_steps=0, lr_milestones=(4,), resume=True))
    assert result.step == 7
    with pytest.warns(UserWarning, match="lr schedule of steps already trained"):
        warnings.filterwarnings("ignore", message=".*global batch")
        train(micro_config(data3, run, steps=9, warmup_steps=0, lr_milestones=(2,), resume=True))


def test_wandb_without_the_package_is_a_clear_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ValueError, match="wandb package is not installed"):
        micro_config(tmp_path, tmp_path / "run", wandb=True)


def test_model_inputs_add_proprio_noise_only_in_training():
    import torch

    from policies.openvla.processor import VLAProcessor
    from train.train_step import model_inputs

    class _Proc:
        """Image/text processing left out; VLAProcessor's proprio augmentation at std 0.5."""

        settings = type("S", (), {"proprio_noise": 0.5, "proprio_noise_dims": ()})()
        augment_proprio = VLAProcessor.augment_proprio

        def __call__(self, images, instructions, train, generator):
            return {}

    batch = {
        "images": None,
        "instruction": ["x"] * 2,
        "actions": torch.zeros(2, 1, 14),
        "action_is_pad": torch.zeros(2, 1, dtype=torch.bool),
        "proprio": torch.zeros(2, 14),
    }
    cpu = torch.device("cpu")
    noisy = model_inputs(batch, _Proc(), True, torch.Generator().manual_seed(0), cpu)["proprio"]
    clean = model_inputs(batch, _Proc(), False, None, cpu)["proprio"]
    assert torch.equal(clean, batch["proprio"]) and noisy.abs().min() > 0


def test_old_flag_names_still_load_from_files(tmp_path):
    """Recipes written before the rename (eval_every / eval_benchmark) keep loading under the new names."""
    from train.train_config import TrainConfig

    path = tmp_path / "old.yaml"
    path.write_text("data: d\nout: o\neval_every: 7\neval_benchmark: smoke\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.cadence.bench_every, cfg.cadence.benchmark) == (7, "smoke")


def test_keypose_aux_run_feeds_keyposes_and_logs_their_loss(tmp_path, data3):
    """The trainer asks the data for keyposes exactly when the model has keypose_aux, and logs keypose_l1."""
    micro = {**MICRO, "keypoints": 4}
    aux = _quiet_train(
        micro_config(
            data3,
            tmp_path / "aux",
            steps=2,
            val_episodes=(1,),
            val_every=2,
            log_every=1,
            model_overrides={**micro, "keypose_aux": 1.0},
        )
    )
    records = read_metrics(aux.run_dir)
    assert all(np.isfinite(r["train/keypose_l1"]) for r in records if "train/loss" in r)
    assert any("val/keypose_l1" in r for r in records)
    plain = _quiet_train(micro_config(data3, tmp_path / "plain", steps=1, val_episodes=(1,), model_overrides=micro))
    assert not any(k.endswith("keypose_l1") for r in read_metrics(plain.run_dir) for k in r)
