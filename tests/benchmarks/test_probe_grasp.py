"""benchmarks/probe_grasp.py on the real DualArmPickSideCube-v1 env with scripted fake policies."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.probe_grasp import first_close, localization, main, summarize
from envs.layout import ACTION_LAYOUT
from policies.base import PolicyMetadata

pytestmark = pytest.mark.maniskill
TASK = "DualArmPickSideCube-v1"
H = 8


class _Hover:
    """Moves ``arm`` to ``height`` m above ``target`` for ``open_chunks`` chunks, then closes its gripper."""

    metadata = PolicyMetadata(name="hover", cameras=(), chunk_size=H)

    def __init__(self, arm: str, target: np.ndarray, height: float, open_chunks: int | None = 3):
        self.arm, self.target, self.height, self.open_chunks, self.calls = arm, target, height, open_chunks, 0

    def predict_action_chunk(self, obs):
        action = np.asarray(obs.proprio, np.float64)[0].copy()
        o = ACTION_LAYOUT.index(f"{self.arm}_x")
        action[o : o + 3] = self.target + [0.0, 0.0, self.height]
        closing = self.open_chunks is not None and self.calls >= self.open_chunks
        action[o + 6] = -1.0 if closing else 1.0
        self.calls += 1
        return np.repeat(action[None, None], H, axis=1)


@pytest.fixture(scope="module")
def env():
    from envs.wrapper import make_env

    env = make_env(TASK, cameras=())
    yield env
    env.close()


def _target(env, seed: int) -> tuple[np.ndarray, str]:
    obs, _ = env.reset(seed=seed)
    side = "left" if obs["privileged"]["side"][0, 0] < 0 else "right"
    return np.asarray(obs["privileged"]["target_pose"][0, :3], np.float64), side


def test_the_offset_is_where_the_arm_was_when_it_closed(env) -> None:
    target, side = _target(env, 3)
    row = first_close(_Hover(side, target, 0.05), env, 3, max_steps=64)
    assert row["step"] == 3 * H and row["arm"] == side and row["instructed_arm"] is True
    dx, dy, dz = row["offset_cm"]
    assert abs(dx) < 1.0 and abs(dy) < 1.0 and 3.5 < dz < 6.0  # the arm settled ~5 cm above the cube centre
    other = "right" if side == "left" else "left"
    wrong = first_close(_Hover(other, target, 0.10), env, 3, max_steps=64)
    assert wrong["arm"] == other and wrong["instructed_arm"] is False
    never = first_close(_Hover(side, target, 0.05, open_chunks=None), env, 3, max_steps=20)
    assert {k: v for k, v in never.items() if k != "target_cm"} == {
        "seed": 3,
        "step": None,
        "arm": None,
        "instructed_arm": None,
        "offset_cm": None,
    }
    assert never["target_cm"][1] > 0  # mirrored by side: both sides' objects at y > 0
    summary = summarize([row, wrong, never])
    assert summary["seeds"] == 3 and summary["closed"] == 2 and summary["closed_instructed_arm"] == 1
    # offsets describe the instructed arm's close only: the wrong arm's ~35 cm miss is not averaged in
    assert summary["abs_dy_cm"]["mean"] == pytest.approx(abs(row["offset_cm"][1]), abs=0.01)
    assert summary["dz_cm"]["mean"] == pytest.approx(row["offset_cm"][2], abs=0.01)


def test_localization_tells_a_policy_that_follows_the_object_from_one_that_goes_to_the_mean(env) -> None:
    seeds = [3, 4, 5, 6, 7, 8]
    follows, mean_point = [], []
    for seed in seeds:
        target, side = _target(env, seed)
        follows.append(first_close(_Hover(side, target, 0.02, open_chunks=3), env, seed, max_steps=64))
        fixed = np.array([0.10, 0.19 if side == "right" else -0.19, 0.025])  # mean grasp point, 8 cm up (no contact)
        mean_point.append(first_close(_Hover(side, fixed, 0.08, open_chunks=3), env, seed, max_steps=64))
    good, blind = summarize(follows)["localization"], summarize(mean_point)["localization"]
    for axis in "xy":
        assert good[axis]["slope"] == pytest.approx(1.0, abs=0.15) and good[axis]["corr"] > 0.95
        assert abs(blind[axis]["slope"]) < 0.15
        assert good[axis]["blind_abs_err_cm"] == blind[axis]["blind_abs_err_cm"] > 0.5  # same seeds, same targets
    with pytest.raises(ValueError, match=">= 3 closes"):
        localization(follows[:2])


def test_a_task_without_a_target_pose_is_refused(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path), "--seeds", "5:5"])
    from envs.wrapper import make_env

    bar = make_env("DualArmLiftBar-v1", cameras=())
    try:
        with pytest.raises(KeyError, match="target_pose"):
            first_close(_Hover("left", np.zeros(3), 0.1), bar, 0, max_steps=8)
    finally:
        bar.close()


def test_bad_arguments_are_named_and_nothing_is_written(tmp_path) -> None:
    out = tmp_path / "probe.json"
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path), "--max-steps", "0", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path), "--seeds", "3:x", "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="missing"):
        main(["--checkpoint", str(tmp_path / "missing"), "--out", str(out)])
    assert not out.exists()
