"""ManiSkill's stock dual-arm tasks, unchanged except for our named cameras and the privileged-state hook.

Scene, randomization, success condition and reward are ManiSkill's own (``mani_skill/envs/tasks/tabletop/
two_robot_pick_cube.py`` and ``two_robot_stack_cube.py``). They are registered under ``vla/<stock id>`` so the
stock ids keep their original meaning for anyone calling ``gym.make`` directly.
"""

from __future__ import annotations

import torch
from mani_skill.envs.tasks.tabletop.two_robot_pick_cube import TwoRobotPickCube
from mani_skill.envs.tasks.tabletop.two_robot_stack_cube import TwoRobotStackCube

from envs.tasks.common import DualArmCamerasMixin, register_task


@register_task("TwoRobotPickCube-v1")
class VLATwoRobotPickCube(DualArmCamerasMixin, TwoRobotPickCube):
    """TwoRobotPickCube-v1: the left arm hands a 4 cm cube over, the right arm lifts it to a goal sphere.

    Success (ManiSkill): cube within 2.5 cm of the goal and the right arm static.
    """

    def privileged_state(self) -> dict[str, torch.Tensor]:
        return {
            "cube_pose": self.cube.pose.raw_pose,
            "goal_pos": self.goal_site.pose.p,
            "cube_half_size": torch.full((self.num_envs, 1), self.cube_half_size, device=self.device),
        }


@register_task("TwoRobotStackCube-v1")
class VLATwoRobotStackCube(DualArmCamerasMixin, TwoRobotStackCube):
    """TwoRobotStackCube-v1: cube B goes onto the target region, cube A is stacked on it, both released.

    Success (ManiSkill): A on B within 5 mm, B within 6 cm of the target centre, neither grasped.
    """

    def privileged_state(self) -> dict[str, torch.Tensor]:
        return {
            "cubeA_pose": self.cubeA.pose.raw_pose,
            "cubeB_pose": self.cubeB.pose.raw_pose,
            "goal_pos": self.goal_region.pose.p,
            "cube_half_size": self.cube_half_size[None, :1].expand(self.num_envs, 1).to(self.device),
        }
