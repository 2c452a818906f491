"""The optimizer's parameter groups: ``--lr-scale MODULE=FACTOR`` (a per-module learning rate) and its checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from trainer_fixtures import MICRO, micro_config

from train.model_setup import param_groups

pytestmark = pytest.mark.usefixtures("_restore_threads")
KP = {**MICRO, "keypoints": 4}


def _train(cfg):
    from train.trainer import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the small-global-batch warning
        return train(cfg)


def _weights(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(run.last_checkpoint) / "model.safetensors")


def test_one_step_moves_the_scaled_module_by_factor_times_and_nothing_else(tmp_path, data3):
    """AdamW's step is lr * (direction + weight decay): with one step from the same init, the scaled module moves
    exactly FACTOR times as far (against a run that all but freezes it), and every other weight is unchanged."""
    common = dict(steps=1, warmup_steps=0, lr_schedule="constant", val_episodes=(2,), model_overrides=KP)
    runs = {
        name: _weights(_train(micro_config(data3, tmp_path / name, lr_scale=scale, **common)))
        for name, scale in (("x10", ("keypoint_encoder=10",)), ("x1", ()), ("x0", ("keypoint_encoder=1e-9",)))
    }
    scaled = [k for k in runs["x1"] if k.startswith("keypoint_encoder.")]
    assert scaled, "the micro model with keypoints must have keypoint_encoder weights"
    for key in runs["x1"]:
        if key in scaled:
            moved10 = runs["x10"][key] - runs["x0"][key]
            moved1 = runs["x1"][key] - runs["x0"][key]
            if moved1.abs().max() > 0:
                torch.testing.assert_close(moved10, 10 * moved1, rtol=1e-3, atol=1e-7, msg=key)
        else:
            assert torch.equal(runs["x10"][key], runs["x1"][key]), f"{key} must not depend on the keypoint lr"


def test_lr_scale_groups_survive_resume(tmp_path, data3):
    common = dict(lr_scale=("keypoint_encoder=10",), val_episodes=(2,), model_overrides=KP, warmup_steps=1)
    whole = _train(micro_config(data3, tmp_path / "a", **common))
    _train(micro_config(data3, tmp_path / "b", steps=2, **common))
    resumed = _train(micro_config(data3, tmp_path / "b", resume=True, **common))
    assert [h["loss"] for h in whole.history][2:] == [h["loss"] for h in resumed.history]
    state = torch.load(Path(resumed.last_checkpoint) / "training_state/optimizer.pt", weights_only=True)
    lrs = [group["lr"] for group in state["param_groups"]]
    assert [group.get("name") for group in state["param_groups"]] == ["rest", "keypoint_encoder"]
    assert lrs[1] == pytest.approx(10 * lrs[0])


def test_resume_with_a_changed_lr_scale_is_refused(tmp_path, data3):
    from train.checkpointing import ResumeError

    run = tmp_path / "run"
    common = dict(val_episodes=(2,), model_overrides=KP, warmup_steps=0)
    _train(micro_config(data3, run, steps=1, lr_scale=("keypoint_encoder=10",), **common))
    with pytest.raises(ResumeError, match="lr_scale"):
        _train(micro_config(data3, run, steps=2, lr_scale=("keypoint_encoder=3",), resume=True, **common))


def test_param_groups_match_peft_names_and_keep_the_rest_first():
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    named = [("base_model.model.llm.w", a), ("base_model.model.keypoint_encoder.conv.w", b), ("film.w", c)]
    groups = param_groups(named, 1e-4, {"keypoint_encoder": 10.0, "film": 0.5})
    assert [g["name"] for g in groups] == ["rest", "keypoint_encoder", "film"]
    assert [g["params"] for g in groups] == [[a], [b], [c]]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3, 5e-5])
    assert [g["name"] for g in param_groups(named, 1e-4, {})] == ["rest"]


def test_a_module_without_trainable_parameters_is_named_with_the_choices():
    named = [("llm.w", torch.nn.Parameter(torch.zeros(1))), ("action_head.w", torch.nn.Parameter(torch.zeros(1)))]
    with pytest.raises(ValueError, match=r"\['keypoints'\].*trainable modules: \['action_head', 'llm'\]"):
        param_groups(named, 1e-4, {"keypoints": 10.0})
    with pytest.raises(ValueError, match="keypoint_encoder"):  # prefix matching is by whole path parts
        param_groups([("keypoint_encoder_x.w", named[0][1])], 1e-4, {"keypoint_encoder": 2.0})


@pytest.mark.parametrize(
    "items,match",
    [
        (("keypoint_encoder",), "expected MODULE=FACTOR"),
        (("keypoint_encoder=0",), "expected MODULE=FACTOR > 0"),
        (("=3",), "expected MODULE=FACTOR"),
        (("film=2", "film=3"), "names a module twice"),
    ],
)
def test_lr_scale_validation(tmp_path, items, match):
    with pytest.raises(ValueError, match=match):
        micro_config(tmp_path, tmp_path / "run", lr_scale=items)


def test_lr_scale_is_normalised_and_read_back(tmp_path):
    cfg = micro_config(tmp_path, tmp_path / "run", lr_scale=[" keypoint_encoder = 10.0"])
    assert cfg.optim.lr_scale == ("keypoint_encoder=10",)
    assert cfg.optim.lr_scales == {"keypoint_encoder": 10.0}
