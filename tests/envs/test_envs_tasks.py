"""Real ManiSkill tests of the tasks, the wrapper and the experts (CPU simulator; lavapipe for images)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.specs import TASKS

pytestmark = pytest.mark.maniskill


@pytest.fixture(scope="module")
def state_envs():
    from envs.wrapper import make_env

    envs = {task: make_env(task, cameras=()) for task in TASKS}
    yield envs
    for env in envs.values():
        env.close()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_reset_is_deterministic_per_seed(state_envs, task):
    env = state_envs[task]
    a, _ = env.reset(seed=11)
    env.step(a["proprio"][0].astype(np.float64))  # disturb the state in between
    b, _ = env.reset(seed=11)
    c, _ = env.reset(seed=12)
    for key, value in a["privileged"].items():
        if key != "task":
            np.testing.assert_array_equal(
                value, b["privileged"][key], err_msg=f"{task}: {key} differs for the same seed"
            )
    np.testing.assert_array_equal(a["proprio"], b["proprio"])
    assert a["instruction"] == b["instruction"]
    moved = [k for k in a["privileged"] if k != "task" and not np.array_equal(a["privileged"][k], c["privileged"][k])]
    assert moved, f"{task}: seeds 11 and 12 gave the same initial object state"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_solves_seed_zero(state_envs, task):
    from envs.experts import make_expert
    from envs.recording import run_expert_episode

    result = run_expert_episode(state_envs[task], make_expert(task), seed=0, record=False)
    assert result["success"], f"{task}: expert failed on seed 0 after {result['steps']} steps"


def test_idle_policy_does_not_succeed(state_envs):
    env = state_envs["DualArmLiftBar-v1"]
    obs, _ = env.reset(seed=0)
    hold = obs["proprio"][0].astype(np.float64)
    for _ in range(20):
        obs, _, _, _, info = env.step(hold)
    assert not info["success"][0]


@pytest.mark.parametrize("arm_slice", [slice(0, 7), slice(7, 14)])
def test_action_round_trips_through_the_controller(state_envs, arm_slice):
    """Commanding a pose and letting the controller settle gives that pose back as proprio."""
    env = state_envs["TwoRobotPickCube-v1"]
    obs, _ = env.reset(seed=3)
    start = obs["proprio"][0].astype(np.float64)
    target = start.copy()
    target[arm_slice][:3] += [0.04, -0.03, -0.05]
    target[arm_slice][3:6] += [0.1, -0.1, 0.4]
    target[arm_slice][6] = -1.0
    for k in range(40):
        s = min(1.0, (k + 1) / 20)
        obs, *_ = env.step(start + s * (target - start))
    got = obs["proprio"][0]
    assert np.allclose(got[arm_slice][:3], target[arm_slice][:3], atol=2e-3), (got[arm_slice], target[arm_slice])
    assert np.allclose(got[arm_slice][3:6], target[arm_slice][3:6], atol=1e-2)
    assert got[arm_slice][6] < -0.5, "closing the gripper must lower the measured gripper value"


def test_bad_actions_raise_clear_errors(state_envs):
    env = state_envs["TwoRobotStackCube-v1"]
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected shape \(1, 14\)"):
        env.step(np.zeros(7))
    nan = obs["proprio"][0].astype(np.float64)
    nan[9] = np.nan
    with pytest.raises(ValueError, match="right_z"):
        env.step(nan)


@pytest.mark.render
def test_rendered_frames_are_real_and_reproducible():
    from envs.wrapper import make_env

    env = make_env("DualArmPlaceShoe-v1", cameras=("head", "left_wrist", "right_wrist", "low"), image_size=64)
    try:
        first, _ = env.reset(seed=5)
        images = first["images"]
        assert set(images) == {"head", "left_wrist", "right_wrist", "low"}
        for cam, img in images.items():
            assert img.shape == (1, 64, 64, 3) and img.dtype == np.uint8, cam
            assert img.std() > 5.0, f"{cam}: frame is (nearly) constant"
        cams = list(images)
        for i in range(len(cams)):
            for j in range(i + 1, len(cams)):
                diff = np.abs(images[cams[i]].astype(int) - images[cams[j]].astype(int)).mean()
                assert diff > 5.0, f"{cams[i]} and {cams[j]} show the same picture"
        again, _ = env.reset(seed=5)
        for cam in cams:
            np.testing.assert_array_equal(
                images[cam], again["images"][cam], err_msg=f"{cam}: first frame not reproducible"
            )
        other, _ = env.reset(seed=6)
        assert not np.array_equal(images["head"], other["images"]["head"])
    finally:
        env.close()


@pytest.mark.render
def test_unrequested_cameras_are_not_rendered():
    from envs.wrapper import make_env

    env = make_env("TwoRobotPickCube-v1", cameras=("low",), image_size=32)
    try:
        obs, _ = env.reset(seed=0)
        assert list(obs["images"]) == ["low"]
        obs, *_ = env.step(obs["proprio"][0].astype(np.float64))
        assert list(obs["images"]) == ["low"]
    finally:
        env.close()


def test_action_noise_perturbs_execution_but_records_the_clean_plan(state_envs):
    from envs.experts import make_expert
    from envs.recording import run_expert_episode

    env, task = state_envs["DualArmLiftBar-v1"], "DualArmLiftBar-v1"
    clean = run_expert_episode(env, make_expert(task), seed=4, record=True)
    noisy = run_expert_episode(env, make_expert(task), seed=4, record=True, action_noise=0.01)
    n = min(len(clean["action"]), len(noisy["action"]))
    np.testing.assert_allclose(
        noisy["action"][:n],
        clean["action"][:n],
        atol=1e-9,
        err_msg="the recorded action must be the expert's clean target",
    )
    drift = np.abs(noisy["proprio"][5:n, :3] - clean["proprio"][5:n, :3]).mean()
    assert drift > 0.003, f"executed noise should move the arm (mean drift {drift:.4f} m)"


@pytest.mark.parametrize(
    "task, key, heading, limit_deg",
    [
        ("DualArmPickColorCube-v1", "target_pose", 0.0, 15.0),
        ("DualArmPickColorCube-v1", "other_pose", 0.0, 15.0),
        ("DualArmPlaceShoe-v1", "shoe_pose", 90.0, 15.0),
        ("DualArmLiftBar-v1", "bar_pose", 0.0, 15.0),
    ],
)
def test_object_yaws_stay_in_the_documented_range(state_envs, task, key, heading, limit_deg):
    from envs.experts.base import quat_yaw

    yaws = []
    for seed in range(40):
        obs, _ = state_envs[task].reset(seed=seed)
        yaws.append(np.rad2deg(quat_yaw(np.asarray(obs["privileged"][key][0], dtype=np.float64))) - heading)
    yaws = np.asarray(yaws)
    assert np.abs(yaws).max() <= limit_deg + 1e-3, f"{task}: {key} yaw {np.abs(yaws).max():.1f} deg off {heading}"
    assert np.abs(yaws).max() > 0.6 * limit_deg, f"{task}: {key} yaws span only {np.ptp(yaws):.1f} deg"
