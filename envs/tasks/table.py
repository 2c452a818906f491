"""Base class for our own dual-arm tasks: two ``panda_wristcam`` arms facing each other across ManiSkill's table.

The layout is exactly the stock TwoRobot* tasks' (``TableSceneBuilder`` places the arms at y = -/+0.75 m facing
each other, rest pose plus N(0, 0.02) joint noise), so every task shares cameras, frames and reach.
"""

from __future__ import annotations

import numpy as np
import sapien
import torch
from mani_skill.envs.sapien_env import BaseEnv
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import sapien_utils
from mani_skill.utils.scene_builder.table import TableSceneBuilder
from mani_skill.utils.structs.pose import Pose
from mani_skill.utils.structs.types import GPUMemoryConfig, SimConfig

from envs.tasks.common import DualArmCamerasMixin


class DualArmTableTask(DualArmCamerasMixin, BaseEnv):
    """Two Pandas at a table. Subclasses add objects (``_load_objects``) and randomize them (``_init_objects``)."""

    SUPPORTED_ROBOTS = [("panda_wristcam", "panda_wristcam")]

    def __init__(self, *args, robot_uids=("panda_wristcam", "panda_wristcam"), robot_init_qpos_noise=0.02, **kwargs):
        self.robot_init_qpos_noise = robot_init_qpos_noise
        super().__init__(*args, robot_uids=robot_uids, **kwargs)

    @property
    def _default_sim_config(self):
        return SimConfig(
            gpu_memory_config=GPUMemoryConfig(
                found_lost_pairs_capacity=2**25, max_rigid_patch_count=2**19, max_rigid_contact_count=2**21
            )
        )

    @property
    def _default_human_render_camera_configs(self):
        pose = sapien_utils.look_at([1.2, 0.7, 0.8], [0.0, 0.0, 0.1])
        return CameraConfig("render_camera", pose, 512, 512, 1, 0.01, 100)

    def _load_agent(self, options: dict):
        super()._load_agent(options, [sapien.Pose(p=[0, -1, 0]), sapien.Pose(p=[0, 1, 0])])

    def _load_scene(self, options: dict):
        self.table_scene = TableSceneBuilder(env=self, robot_init_qpos_noise=self.robot_init_qpos_noise)
        self.table_scene.build()
        self._load_objects(options)

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
        with torch.device(self.device):
            self.table_scene.initialize(env_idx)
            self._init_objects(env_idx)

    def _load_objects(self, options: dict) -> None:
        raise NotImplementedError

    def _init_objects(self, env_idx: torch.Tensor) -> None:
        raise NotImplementedError

    def _uniform(self, env_idx: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """(b,) float32 samples from U[low, high), one per reset sub-env, each from that sub-env's own seeded RNG
        (ManiSkill's ``_batched_episode_rng``), so a seed gives the same episode whatever the batch."""
        values = self._batched_episode_rng[env_idx].uniform(low, high)
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device).reshape(len(env_idx))

    def _get_obs_extra(self, info: dict):
        return dict(
            left_arm_tcp=self.left_agent.tcp.pose.raw_pose,
            right_arm_tcp=self.right_agent.tcp.pose.raw_pose,
        )

    def compute_normalized_dense_reward(self, obs, action, info):
        """Sparse stand-in: 1 on success, else 0 (our tasks are scored by success only)."""
        return info["success"].float()

    def compute_dense_reward(self, obs, action, info):
        return self.compute_normalized_dense_reward(obs, action, info)


def yaw_quat(yaw: torch.Tensor) -> torch.Tensor:
    """(n, 4) quaternions (w, x, y, z) of rotations by ``yaw`` (rad) about world z."""
    return torch.stack([torch.cos(yaw / 2), torch.zeros_like(yaw), torch.zeros_like(yaw), torch.sin(yaw / 2)], -1)


def pose_from(xyz: torch.Tensor, yaw: torch.Tensor) -> Pose:
    """ManiSkill Pose from positions (n, 3) and yaws (n,)."""
    return Pose.create_from_pq(p=xyz, q=yaw_quat(yaw))


def color(rgb: tuple[int, int, int]) -> np.ndarray:
    """RGBA in [0, 1] from 0-255 RGB."""
    return np.array([*rgb, 255], dtype=np.float64) / 255.0
