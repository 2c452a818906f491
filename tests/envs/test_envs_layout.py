"""The 14-D action/proprio contract: validation, frames, Euler conventions, gripper scale (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from envs.layout import (
    ACTION_LAYOUT,
    GRIPPER_DIMS,
    R_HOME,
    action_to_controller,
    gripper_from_joint,
    rpy_to_tcp_matrix,
    tcp_matrix_to_rpy,
    tcp_pose_to_proprio,
    validate_action,
)
from envs.recording import relative_actions


def test_layout_names_left_arm_first():
    assert len(ACTION_LAYOUT) == 14
    assert ACTION_LAYOUT[:7] == ("left_x", "left_y", "left_z", "left_roll", "left_pitch", "left_yaw", "left_gripper")
    assert ACTION_LAYOUT[7] == "right_x" and ACTION_LAYOUT[13] == "right_gripper"
    assert [ACTION_LAYOUT[i] for i in GRIPPER_DIMS] == ["left_gripper", "right_gripper"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(13), r"expected shape \(1, 14\).*got \(13,\)"),
        (np.zeros((2, 14)), r"expected shape \(1, 14\).*got \(2, 14\)"),
        (np.array(["a"] * 14), "real-valued"),
        (np.r_[np.zeros(5), np.nan, np.zeros(8)], r"NaN/Inf in dimensions \['left_yaw'\]"),
        (np.r_[np.zeros(13), np.inf], r"NaN/Inf in dimensions \['right_gripper'\]"),
        (np.r_[np.zeros(6), 1.5, np.zeros(7)], r"gripper values must be in \[-1, 1\]"),
    ],
)
def test_validate_action_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_action(bad, num_envs=1)


def test_validate_action_batches_single_vector():
    out = validate_action(np.arange(14, dtype=np.float32) / 100, num_envs=1)
    assert out.shape == (1, 14) and out.dtype == np.float64


def test_home_orientation_is_zero_rpy_and_points_down():
    for arm in ("left", "right"):
        assert np.allclose(rpy_to_tcp_matrix(np.zeros(3), arm)[0], R_HOME[arm])
        assert np.allclose(R_HOME[arm][:, 2], [0, 0, -1])  # TCP z axis (approach) points down
        assert np.isclose(np.linalg.det(R_HOME[arm]), 1.0)


def test_rpy_round_trip_and_yaw_is_about_vertical():
    rng = np.random.default_rng(0)
    rpy = rng.uniform([-0.5, -0.5, -3.0], [0.5, 0.5, 3.0], size=(50, 3))
    for arm in ("left", "right"):
        assert np.allclose(tcp_matrix_to_rpy(rpy_to_tcp_matrix(rpy, arm), arm), rpy, atol=1e-9)
    # Pure yaw rotates the home orientation about world z: the approach axis stays vertical.
    m = rpy_to_tcp_matrix(np.array([0.0, 0.0, 0.7]), "left")[0]
    assert np.allclose(m[:, 2], [0, 0, -1])
    assert np.allclose(m[:, 1], [np.cos(0.7), np.sin(0.7), 0.0])  # fingers close along rotated world x


def test_action_to_controller_expresses_targets_in_each_base_frame():
    # Bases as ManiSkill's TableSceneBuilder places them: left at y=-0.75 yawed +90 deg, right at +0.75 yawed -90.
    base_pos = {"left": np.array([[0.0, -0.75, 0.0]]), "right": np.array([[0.0, 0.75, 0.0]])}
    q = {"left": Rotation.from_euler("z", np.pi / 2), "right": Rotation.from_euler("z", -np.pi / 2)}
    base_quat = {arm: np.roll(r.as_quat(), 1)[None] for arm, r in q.items()}  # xyzw -> wxyz
    action = np.zeros((1, 14))
    action[0, :7] = [0.1, -0.2, 0.05, 0.0, 0.0, 0.3, -1.0]
    action[0, 7:] = [0.0, 0.1, 0.2, 0.1, 0.0, 0.0, 1.0]
    ctrl = action_to_controller(action, base_pos, base_quat)
    for arm, sl in (("left", slice(0, 7)), ("right", slice(7, 14))):
        c = ctrl[arm][0].astype(np.float64)
        world_p = q[arm].apply(c[:3]) + base_pos[arm][0]
        assert np.allclose(world_p, action[0, sl][:3], atol=1e-6)
        world_r = q[arm].as_matrix() @ Rotation.from_euler("XYZ", c[3:6]).as_matrix()
        assert np.allclose(world_r, rpy_to_tcp_matrix(action[0, sl][3:6], arm)[0], atol=1e-5)
        assert c[6] == action[0, sl][6]


def test_gripper_scale_matches_maniskill_range():
    assert np.allclose(gripper_from_joint(np.array([0.04, -0.01, 0.015])), [1.0, -1.0, 0.0])


def test_proprio_from_tcp_pose():
    rot = Rotation.from_matrix(rpy_to_tcp_matrix(np.array([0.1, -0.2, 0.5]), "right")[0])
    quat = np.roll(rot.as_quat(), 1)[None]
    home = np.roll(Rotation.from_matrix(R_HOME["left"]).as_quat(), 1)[None]
    proprio = tcp_pose_to_proprio(
        {"left": np.array([[0.0, -0.3, 0.2]]), "right": np.array([[0.1, 0.2, 0.3]])},
        {"left": home, "right": quat},
        {"left": np.array([0.04]), "right": np.array([0.0])},
    )
    assert proprio.shape == (1, 14) and proprio.dtype == np.float32
    assert np.allclose(proprio[0, :7], [0.0, -0.3, 0.2, 0, 0, 0, 1.0], atol=1e-6)
    assert np.allclose(proprio[0, 7:], [0.1, 0.2, 0.3, 0.1, -0.2, 0.5, -0.6], atol=1e-6)


def test_relative_actions_repeat_last_row():
    a = np.cumsum(np.ones((5, 14)), axis=0) * np.arange(14)
    rel = relative_actions(a)
    assert np.allclose(rel[:-1], a[1:] - a[:-1])
    assert np.allclose(rel[-1], rel[-2])
