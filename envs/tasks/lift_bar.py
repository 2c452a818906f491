"""DualArmLiftBar-v1: both arms grasp a long bar near its ends and lift it level.

In the spirit of RoboFactory's LiftBarrier: neither arm alone can succeed, because success needs both grippers
on the bar. Built from ManiSkill primitives (an ``ActorBuilder`` box).
"""

from __future__ import annotations

import numpy as np
import sapien
import torch

from envs.tasks.common import register_task
from envs.tasks.table import DualArmTableTask, color, pose_from


@register_task("DualArmLiftBar-v1")
class DualArmLiftBar(DualArmTableTask):
    """A 44 x 4 x 4 cm bar lies across the table between the arms (long axis along world y, +/-15 deg yaw).

    **Randomizations:** bar centre x in [-0.05, 0.05] m, y in [-0.03, 0.03] m, yaw in [-15, 15] deg.

    **Success:** bar centre at least ``lift_height`` above its resting height, long axis within ``max_tilt_deg``
    of horizontal, and both grippers grasping the bar (ManiSkill's ``Panda.is_grasping``).
    """

    half_size = (0.02, 0.22, 0.02)
    """Bar half extents (m): x (width), y (length), z (height)."""
    density = 400.0
    """kg/m^3 -> 0.28 kg."""
    grasp_offset = 0.16
    """Distance (m) from the centre to each arm's grasp point along the bar (used by the expert)."""
    lift_height = 0.10
    max_tilt_deg = 10.0

    def _load_objects(self, options: dict) -> None:
        builder = self.scene.create_actor_builder()
        builder.add_box_collision(half_size=self.half_size, density=self.density)
        builder.add_box_visual(
            half_size=self.half_size, material=sapien.render.RenderMaterial(base_color=color((230, 160, 30)))
        )
        # Dark end caps show which end is which in the images.
        for sign in (-1.0, 1.0):
            cap = sapien.Pose(p=[0.0, sign * (self.half_size[1] - 0.015), 0.0])
            builder.add_box_visual(
                pose=cap,
                half_size=(0.0205, 0.015, 0.0205),
                material=sapien.render.RenderMaterial(base_color=color((60, 60, 70))),
            )
        builder.initial_pose = sapien.Pose(p=[0, 0, self.half_size[2]])
        self.bar = builder.build(name="bar")

    def _init_objects(self, env_idx: torch.Tensor) -> None:
        b = len(env_idx)
        xyz = torch.zeros((b, 3))
        xyz[:, 0] = self._uniform(env_idx, -0.05, 0.05)
        xyz[:, 1] = self._uniform(env_idx, -0.03, 0.03)
        xyz[:, 2] = self.half_size[2]
        yaw = self._uniform(env_idx, -np.deg2rad(15), np.deg2rad(15))
        self.bar.set_pose(pose_from(xyz, yaw))

    def _bar_axis(self) -> torch.Tensor:
        q = self.bar.pose.q  # (B, 4) w, x, y, z: rotate the local +y axis into the world
        w, x, y, z = q.unbind(-1)
        return torch.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], -1)

    def evaluate(self):
        lifted = self.bar.pose.p[:, 2] >= self.half_size[2] + self.lift_height
        tilt = torch.rad2deg(torch.asin(self._bar_axis()[:, 2].abs().clamp(max=1.0)))
        level = tilt <= self.max_tilt_deg
        left = self.left_agent.is_grasping(self.bar)
        right = self.right_agent.is_grasping(self.bar)
        return {
            "success": lifted & level & left & right,
            "is_lifted": lifted,
            "is_level": level,
            "tilt_deg": tilt,
            "left_grasping": left,
            "right_grasping": right,
        }

    def privileged_state(self) -> dict[str, torch.Tensor]:
        return {
            "bar_pose": self.bar.pose.raw_pose,
            "bar_half_size": torch.tensor(self.half_size, device=self.device).expand(self.num_envs, 3),
            "grasp_offset": torch.full((self.num_envs, 1), self.grasp_offset, device=self.device),
        }

    def _get_obs_extra(self, info: dict):
        obs = super()._get_obs_extra(info)
        if "state" in self.obs_mode:
            obs["bar_pose"] = self.bar.pose.raw_pose
        return obs
