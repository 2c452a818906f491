"""The one observation/action contract every dual-arm task speaks, and the seed HDF5 layout.

Pure numpy/scipy: importing this module never imports ManiSkill, so train/ and policies/ can use the constants.

World frame
    ManiSkill's scene frame for the dual-arm table: z up (m), the table top at z = 0, x toward the head camera,
    the left arm's base at (0, -0.75, 0) facing +y and the right arm's base at (0, +0.75, 0) facing -y.

Action (14,) float, per arm ``[x, y, z, roll, pitch, yaw, gripper]``, left arm first (indices 0-6, then 7-13):
    * x, y, z: absolute target position of the arm's tool centre point (TCP, ManiSkill link ``panda_hand_tcp``)
      in the world frame, metres.
    * roll, pitch, yaw: absolute target orientation in radians, as extrinsic x-y-z Euler angles (scipy
      ``"xyz"``: R = Rz(yaw) @ Ry(pitch) @ Rx(roll)) of the rotation that takes the arm's *home* orientation to the
      target TCP orientation, both in the world frame: ``R_tcp = R_rpy @ R_HOME[arm]``. The home orientation is
      the TCP pointing straight down with the fingers closing along world x, so a top-down grasp has roll =
      pitch = 0 and yaw is the rotation about the vertical (no Euler wrap-around near the working poses).
    * gripper: in [-1, 1]; +1 = fully open (each finger at 0.04 m), -1 = closed (finger target -0.01 m, which
      squeezes thin objects). Linear in between, exactly ManiSkill's normalised ``gripper_pd_joint_pos``.
    These map onto ManiSkill's per-agent ``pd_ee_pose`` controller (absolute TCP pose in the arm's base frame,
    intrinsic "XYZ" Euler angles) plus ``pd_joint_pos`` gripper by :func:`action_to_controller`.

Proprio (14,) float32: the measured TCP pose and gripper opening in the same layout, frame and units as the
    action, so that ``action[t] ~= proprio[t + k]`` once the controller settles.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

CAMERAS: tuple[str, ...] = ("head", "left_wrist", "right_wrist", "low")
"""Camera names every task offers, in canonical order."""

CAMERA_TO_HDF5_KEY: dict[str, str] = {
    "head": "head_camera_image",
    "left_wrist": "left_wrist_image",
    "right_wrist": "right_wrist_image",
    "low": "low_cam_image",
}
"""Camera name -> dataset key in an episode file (the RoboTwin 2.0 export names used by the seeds)."""

ARMS: tuple[str, str] = ("left", "right")
ACTION_DIM = 14
ARM_DIM = 7
ACTION_LAYOUT: tuple[str, ...] = tuple(
    f"{arm}_{name}" for arm in ARMS for name in ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
)
"""Names of the 14 action / proprio dimensions, left arm first."""
GRIPPER_DIMS: tuple[int, int] = (6, 13)
"""Indices of the two gripper dimensions (not normalised by default: they are already in [-1, 1])."""
CONTROL_MODE = "pd_ee_pose"
"""ManiSkill controller every arm runs under (absolute end-effector pose + absolute gripper position)."""
ACTION_FRAME = "world; rpy = extrinsic xyz Euler of R_tcp @ R_home^T; gripper +1 open / -1 closed"
"""Short description of the action convention, stored with recorded episodes and checkpoints."""

VALUE_RANGES: dict[str, tuple[float, float]] = {
    "position": (-3.0, 3.0),
    "angle": (-2 * np.pi, 2 * np.pi),
    "gripper": (-1.0, 1.0),
}
"""Plausible ranges of absolute action / proprio values, by kind: TCP position (m, world frame; both arms reach
well within 1.5 m of the table centre), Euler angle (rad) and gripper ([-1, 1] exactly). ``vla data check`` and
``vla train`` warn about values outside them (``train.episodes``; a warning, since simulators and robots differ):
such a value is usually a unit or export error."""


def value_range(dim: int) -> tuple[float, float]:
    """The :data:`VALUE_RANGES` entry of action/proprio dimension ``dim`` (0-13)."""
    name = ACTION_LAYOUT[dim].split("_", 1)[1]
    kind = "gripper" if name == "gripper" else "position" if name in ("x", "y", "z") else "angle"
    return VALUE_RANGES[kind]


GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, -1.0
GRIPPER_JOINT_LOW, GRIPPER_JOINT_HIGH = -0.01, 0.04
"""Finger joint range (m) that ManiSkill's Panda gripper controller maps [-1, 1] onto (panda.py)."""

R_HOME: dict[str, np.ndarray] = {
    # Columns are the TCP's x, y, z axes in the world frame at the arm's rest keyframe (read off ManiSkill's
    # TableSceneBuilder two-Panda layout, rounded to the exact axis-aligned rotation).
    "left": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
    "right": np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
}


def arm_slice(arm: str) -> slice:
    """Slice of the 14-D vector that belongs to ``arm`` ("left" -> 0:7, "right" -> 7:14)."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    start = ARMS.index(arm) * ARM_DIM
    return slice(start, start + ARM_DIM)


def validate_action(action: np.ndarray, num_envs: int) -> np.ndarray:
    """Check a 14-D action (or a batch) and return it as float64 of shape (num_envs, 14).

    Args:
        action: (14,) (only when ``num_envs == 1``) or (num_envs, 14), any real dtype.
        num_envs: the number of parallel sub-environments.

    Raises:
        ValueError: wrong shape, non-numeric dtype, NaN/Inf entries, or a gripper value outside [-1, 1] by more
            than 1e-6; the message gives expected vs actual and the offending indices.
    """
    arr = np.asarray(action)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"action: expected a real-valued array, got dtype {arr.dtype}")
    if arr.ndim == 1 and num_envs == 1:
        arr = arr[None]
    if arr.shape != (num_envs, ACTION_DIM):
        raise ValueError(
            f"action: expected shape ({num_envs}, {ACTION_DIM}) (per arm [x, y, z, roll, pitch, yaw, gripper], "
            f"left first), got {tuple(np.shape(action))}"
        )
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = [ACTION_LAYOUT[j] for j in sorted(set(np.nonzero(bad)[1].tolist()))]
        raise ValueError(f"action: contains NaN/Inf in dimensions {idx}")
    grip = arr[:, list(GRIPPER_DIMS)]
    if (np.abs(grip) > 1.0 + 1e-6).any():
        raise ValueError(f"action: gripper values must be in [-1, 1], got {grip.tolist()}")
    return arr


def rpy_to_tcp_matrix(rpy: np.ndarray, arm: str) -> np.ndarray:
    """World-frame TCP rotation matrices (B, 3, 3) from action Euler angles (B, 3) in rad for ``arm``."""
    return Rotation.from_euler("xyz", np.asarray(rpy, dtype=np.float64).reshape(-1, 3)).as_matrix() @ R_HOME[arm]


def tcp_matrix_to_rpy(rot: np.ndarray, arm: str) -> np.ndarray:
    """Action Euler angles (B, 3) in rad from world-frame TCP rotation matrices (B, 3, 3) of ``arm``."""
    rel = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3) @ R_HOME[arm].T
    return Rotation.from_matrix(rel).as_euler("xyz")


def gripper_from_joint(finger_pos: np.ndarray) -> np.ndarray:
    """Map a Panda finger joint position (m) to the [-1, 1] gripper scale of the action (+1 open)."""
    span = GRIPPER_JOINT_HIGH - GRIPPER_JOINT_LOW
    return 2.0 * (np.asarray(finger_pos, dtype=np.float64) - GRIPPER_JOINT_LOW) / span - 1.0


def _quat_wxyz_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    q = np.asarray(quat_wxyz, dtype=np.float64).reshape(-1, 4)
    return Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()


def action_to_controller(action: np.ndarray, base_pos: dict, base_quat_wxyz: dict) -> dict[str, np.ndarray]:
    """Convert world-frame 14-D actions to per-arm ``pd_ee_pose`` + gripper controller actions.

    Args:
        action: (B, 14) float, validated by :func:`validate_action`.
        base_pos: arm name -> (B, 3) base (root link) position in the world frame (m).
        base_quat_wxyz: arm name -> (B, 4) base orientation quaternion (w, x, y, z), ManiSkill's convention.

    Returns:
        arm name -> (B, 7) float32 ``[x, y, z, ex, ey, ez, gripper]``: position in the arm's base frame (m),
        intrinsic "XYZ" Euler angles of the TCP orientation in the base frame (what ManiSkill's
        ``PDEEPoseController`` decodes with ``euler_angles_to_matrix(..., "XYZ")``), gripper unchanged.
    """
    out = {}
    for arm in ARMS:
        a = action[:, arm_slice(arm)]
        rb = _quat_wxyz_to_matrix(base_quat_wxyz[arm])  # (B, 3, 3) base axes in world
        p_base = np.einsum("bji,bj->bi", rb, a[:, :3] - np.asarray(base_pos[arm]).reshape(-1, 3))
        r_base = np.transpose(rb, (0, 2, 1)) @ rpy_to_tcp_matrix(a[:, 3:6], arm)
        euler = Rotation.from_matrix(r_base).as_euler("XYZ")
        out[arm] = np.concatenate([p_base, euler, a[:, 6:7]], axis=1).astype(np.float32)
    return out


def tcp_pose_to_proprio(tcp_pos: dict, tcp_quat_wxyz: dict, finger_pos: dict) -> np.ndarray:
    """Build (B, 14) float32 proprio from world-frame TCP poses and finger joint positions of both arms.

    Args:
        tcp_pos: arm name -> (B, 3) TCP position, world frame (m).
        tcp_quat_wxyz: arm name -> (B, 4) TCP orientation quaternion (w, x, y, z), world frame.
        finger_pos: arm name -> (B,) finger joint position (m), the mean of the two fingers.
    """
    parts = []
    for arm in ARMS:
        rpy = tcp_matrix_to_rpy(_quat_wxyz_to_matrix(tcp_quat_wxyz[arm]), arm)
        grip = gripper_from_joint(finger_pos[arm]).reshape(-1, 1)
        parts.append(np.concatenate([np.asarray(tcp_pos[arm]).reshape(-1, 3), rpy, grip], axis=1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def wrap_angle(x: np.ndarray) -> np.ndarray:
    """Wrap angles (rad) to [-pi, pi)."""
    return (np.asarray(x) + np.pi) % (2 * np.pi) - np.pi
