"""DualArmPlaceShoe-v1: a shoe appears on the left or the right; the arm on that side puts it into a box.

In the spirit of the seeds' RoboTwin ``place_shoe`` task. The shoe is a compound of ManiSkill boxes (sole, upper,
toe cap) the size of a child's shoe, its upper narrow enough (4 cm) that the Panda gripper (8 cm stroke) has
+/-2 cm of slack, as on DualArmLiftBar-v1's 4 cm bar; the box is a static tray.
"""

from __future__ import annotations

import numpy as np
import sapien
import torch

from envs.tasks.common import register_task
from envs.tasks.table import DualArmTableTask, color, pose_from

# Shoe parts in the shoe frame (x = heel-to-toe, y = width, z = up; origin at the bounding-box centre), metres.
SOLE = ((0.0, 0.0, -0.025), (0.10, 0.04, 0.01))
UPPER = ((-0.025, 0.0, 0.01), (0.075, 0.02, 0.025))
TOE = ((0.065, 0.0, 0.0), (0.035, 0.02, 0.015))
SHOE_HALF_HEIGHT = 0.035
GRASP_POINT = np.array([-0.025, 0.0, 0.01])
"""Where the expert grasps the shoe (shoe frame): the middle of the upper, across its 4 cm width (6 cm until the #13
trace: +/-1 cm of slack, less than the tiny VLA's 1-1.5 cm grasp error in the 128 px head view)."""
MAX_YAW_DEG = 15.0
"""Shoe yaw range about its +y heading (deg); 25 until the #13 trace (DualArmLiftBar-v1 uses 15)."""

BOX_INNER_HALF = (0.06, 0.13)
"""Half extents (m) of the box's inner floor: x (across the table), y (along the table, the shoe's direction)."""
BOX_WALL, BOX_HEIGHT, BOX_FLOOR = 0.01, 0.05, 0.005


@register_task("DualArmPlaceShoe-v1")
class DualArmPlaceShoe(DualArmTableTask):
    """**Randomizations:** side (left/right, p = 0.5), shoe x in [-0.06, 0.06] m, |y| in [0.27, 0.32] m on that
    side, heel-to-toe axis along world +y rotated by [-15, 15] deg (``MAX_YAW_DEG``); box centre x in
    [-0.04, 0.04] m, y = 0.

    **Success:** every corner of the sole lies inside the box's inner floor, the shoe's centre is below the rim,
    and neither gripper is holding it.
    """

    def _load_objects(self, options: dict) -> None:
        shoe = self.scene.create_actor_builder()
        colours = {"sole": (40, 40, 45), "upper": (30, 90, 200), "toe": (235, 235, 235)}
        for name, (pos, half) in zip(("sole", "upper", "toe"), (SOLE, UPPER, TOE)):
            pose = sapien.Pose(p=list(pos))
            shoe.add_box_collision(pose=pose, half_size=half, density=300.0)
            shoe.add_box_visual(
                pose=pose, half_size=half, material=sapien.render.RenderMaterial(base_color=color(colours[name]))
            )
        shoe.initial_pose = sapien.Pose(p=[0.0, 0.3, SHOE_HALF_HEIGHT])
        self.shoe = shoe.build(name="shoe")

        box = self.scene.create_actor_builder()
        mat = sapien.render.RenderMaterial(base_color=color((150, 110, 70)))
        hx, hy = BOX_INNER_HALF
        parts = [((0.0, 0.0, BOX_FLOOR / 2), (hx + BOX_WALL, hy + BOX_WALL, BOX_FLOOR / 2))]
        for sx in (-1, 1):
            parts.append(
                ((sx * (hx + BOX_WALL / 2), 0.0, BOX_HEIGHT / 2), (BOX_WALL / 2, hy + BOX_WALL, BOX_HEIGHT / 2))
            )
        for sy in (-1, 1):
            parts.append(((0.0, sy * (hy + BOX_WALL / 2), BOX_HEIGHT / 2), (hx, BOX_WALL / 2, BOX_HEIGHT / 2)))
        for pos, half in parts:
            box.add_box_collision(pose=sapien.Pose(p=list(pos)), half_size=half)
            box.add_box_visual(pose=sapien.Pose(p=list(pos)), half_size=half, material=mat)
        box.initial_pose = sapien.Pose(p=[0.0, 0.0, 0.0])
        self.box = box.build_kinematic(name="box")

    def _init_objects(self, env_idx: torch.Tensor) -> None:
        b = len(env_idx)
        side = torch.where(self._uniform(env_idx, 0.0, 1.0) < 0.5, -1.0, 1.0)
        if not hasattr(self, "side"):
            self.side = torch.ones(self.num_envs, device=self.device)
        self.side[env_idx] = side.to(self.device)
        xyz = torch.zeros((b, 3))
        xyz[:, 0] = self._uniform(env_idx, -0.06, 0.06)
        xyz[:, 1] = side * self._uniform(env_idx, 0.27, 0.32)
        xyz[:, 2] = SHOE_HALF_HEIGHT
        yaw = np.pi / 2 + self._uniform(env_idx, -np.deg2rad(MAX_YAW_DEG), np.deg2rad(MAX_YAW_DEG))
        self.shoe.set_pose(pose_from(xyz, yaw))
        box_xyz = torch.zeros((b, 3))
        box_xyz[:, 0] = self._uniform(env_idx, -0.04, 0.04)
        self.box.set_pose(pose_from(box_xyz, torch.zeros(b)))

    def _sole_corners_in_box(self) -> torch.Tensor:
        """(B, 4, 2) sole corner xy in the box frame (the box is never rotated)."""
        (cx, cy, _), (hx, hy, _) = SOLE
        local = torch.tensor([[cx + sx * hx, cy + sy * hy] for sx in (-1, 1) for sy in (-1, 1)], device=self.device)
        w, _, _, z = self.shoe.pose.q.unbind(-1)
        yaw = torch.atan2(2 * w * z, 1 - 2 * z * z)  # shoe stays z-up on the table; tilt is caught below
        c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
        x = self.shoe.pose.p[:, None, 0] + c * local[:, 0] - s * local[:, 1]
        y = self.shoe.pose.p[:, None, 1] + s * local[:, 0] + c * local[:, 1]
        return torch.stack([x - self.box.pose.p[:, None, 0], y - self.box.pose.p[:, None, 1]], -1)

    def evaluate(self):
        corners = self._sole_corners_in_box()
        hx, hy = BOX_INNER_HALF
        inside = ((corners[..., 0].abs() <= hx) & (corners[..., 1].abs() <= hy)).all(dim=1)
        below_rim = self.shoe.pose.p[:, 2] <= BOX_FLOOR + BOX_HEIGHT
        grasped = self.left_agent.is_grasping(self.shoe) | self.right_agent.is_grasping(self.shoe)
        return {
            "success": inside & below_rim & ~grasped,
            "shoe_in_box": inside & below_rim,
            "shoe_grasped": grasped,
        }

    def privileged_state(self) -> dict[str, torch.Tensor]:
        return {
            "shoe_pose": self.shoe.pose.raw_pose,
            "box_pos": self.box.pose.p,
            "side": self.side[:, None].clone(),
            "grasp_point": torch.tensor(GRASP_POINT, dtype=torch.float32, device=self.device).expand(self.num_envs, 3),
        }

    def instruction_fields(self) -> list[dict[str, str]]:
        return [{"side": "left" if s < 0 else "right"} for s in self.side.tolist()]
