"""Experts for ManiSkill's stock cube tasks (TwoRobotPickCube-v1, TwoRobotStackCube-v1)."""

from __future__ import annotations

import numpy as np

from envs.experts.base import CLOSED, OPEN, Phase, ScriptedExpert, Waypoint, grasp_yaw, home, quat_yaw, wp

APPROACH_Z = 0.10
"""Height (m) of the TCP above the table before descending onto an object."""
HANDOVER_XY = (0.0, 0.0)
"""Where the left arm sets the cube down for the right arm in TwoRobotPickCube (world m): reachable by both."""


def _cube(state, key: str) -> tuple[np.ndarray, float]:
    pose = np.asarray(state[key], dtype=np.float64)
    return pose[:3], grasp_yaw(quat_yaw(pose))


def _above(pos, z: float, yaw: float, grip: float = OPEN, **tilt) -> Waypoint:
    return wp([pos[0], pos[1], z], yaw, grip, **tilt)


class PickCubeExpert(ScriptedExpert):
    """TwoRobotPickCube-v1: left picks the cube and sets it down mid-table; right picks it and holds it at the goal."""

    def plan(self, state, proprio):
        def cube(ctx):
            return _cube(ctx["state"], "cube_pose")

        def keep(arm, grip):
            return lambda ctx: Waypoint(ctx["target"][arm].pos, ctx["target"][arm].rpy, grip)

        hx, hy = HANDOVER_XY
        left = [
            Phase("above", lambda c: _above(cube(c)[0], APPROACH_Z, cube(c)[1]), steps=16),
            Phase("descend", lambda c: _above(cube(c)[0], cube(c)[0][2], cube(c)[1]), steps=10, hold=1),
            Phase("close", keep("left", CLOSED), steps=1, hold=5),
            Phase(
                "lift",
                lambda c: wp(
                    [c["target"]["left"].pos[0], c["target"]["left"].pos[1], 0.08], c["target"]["left"].rpy[2], CLOSED
                ),
                steps=8,
            ),
            Phase("carry", lambda c: wp([hx, hy, 0.08], 0.0, CLOSED), steps=16),
            Phase("lower", lambda c: wp([hx, hy, 0.022], 0.0, CLOSED), steps=8, hold=1),
            Phase("release", keep("left", OPEN), steps=1, hold=4),
            Phase("retreat", lambda c: wp([hx, hy - 0.08, 0.16], 0.0, OPEN), steps=10),
            Phase("home", lambda c: home("left"), steps=12),
        ]
        right = [
            Phase("above", lambda c: _above([hx, hy + 0.02], 0.14, 0.0), steps=12, after=("left", "lower")),
            Phase("over", lambda c: _above(cube(c)[0], APPROACH_Z, cube(c)[1]), steps=10, after=("left", "retreat")),
            Phase("descend", lambda c: _above(cube(c)[0], cube(c)[0][2], cube(c)[1]), steps=10, hold=1),
            Phase("close", keep("right", CLOSED), steps=1, hold=5),
            Phase(
                "lift",
                lambda c: wp(
                    [c["target"]["right"].pos[0], c["target"]["right"].pos[1], 0.10],
                    c["target"]["right"].rpy[2],
                    CLOSED,
                ),
                steps=8,
            ),
            Phase("to_goal", lambda c: wp(np.asarray(c["state"]["goal_pos"], dtype=np.float64), 0.0, CLOSED), steps=22),
            Phase("hold", keep("right", CLOSED), steps=1, hold=12),
        ]
        return {"left": left, "right": right}


class StackCubeExpert(ScriptedExpert):
    """TwoRobotStackCube-v1: left lifts cube A out of the way, right places cube B on the target, left stacks A.

    The target sits at y = -0.1 m, at the edge of the right arm's reach: the right arm tilts its gripper
    (roll -0.4 rad) to set B down on the target's near half (within the 6 cm success radius).
    """

    place_dy = 0.015
    """Offset (m, +y) of B's drop point from the target centre, toward the right arm."""

    def plan(self, state, proprio):
        def a(ctx):
            return _cube(ctx["state"], "cubeA_pose")

        def b(ctx):
            return _cube(ctx["state"], "cubeB_pose")

        def keep(arm, grip):
            return lambda ctx: Waypoint(ctx["target"][arm].pos, ctx["target"][arm].rpy, grip)

        def goal_xy(ctx):
            g = np.asarray(ctx["state"]["goal_pos"], dtype=np.float64)
            return np.array([g[0], g[1] + self.place_dy])

        left = [
            Phase("above", lambda c: _above(a(c)[0], APPROACH_Z, a(c)[1]), steps=16),
            Phase("descend", lambda c: _above(a(c)[0], a(c)[0][2], a(c)[1]), steps=10, hold=1),
            Phase("close", keep("left", CLOSED), steps=1, hold=5),
            Phase("park", lambda c: wp([0.0, -0.26, 0.16], 0.0, CLOSED), steps=16),
            Phase("over_b", lambda c: _above(b(c)[0], 0.14, b(c)[1], CLOSED), steps=16, after=("right", "retreat")),
            Phase("lower", lambda c: _above(b(c)[0], b(c)[0][2] + 0.043, b(c)[1], CLOSED), steps=12, hold=2),
            Phase("release", keep("left", OPEN), steps=1, hold=4),
            Phase(
                "retreat",
                lambda c: wp(c["target"]["left"].pos + [0.0, 0.0, 0.08], c["target"]["left"].rpy[2], OPEN),
                steps=8,
            ),
            Phase("home", lambda c: home("left"), steps=10),
        ]
        right = [
            Phase("above", lambda c: _above(b(c)[0], APPROACH_Z, b(c)[1]), steps=16),
            Phase("descend", lambda c: _above(b(c)[0], b(c)[0][2], b(c)[1]), steps=10, hold=1),
            Phase("close", keep("right", CLOSED), steps=1, hold=5),
            Phase(
                "lift",
                lambda c: wp(c["target"]["right"].pos + [0.0, 0.0, 0.08], c["target"]["right"].rpy[2], CLOSED),
                steps=8,
                after=("left", "park"),
            ),
            Phase("carry", lambda c: _above(goal_xy(c), 0.10, 0.0, CLOSED, roll=-0.4), steps=20),
            Phase("lower", lambda c: _above(goal_xy(c), 0.024, 0.0, CLOSED, roll=-0.4), steps=10, hold=1),
            Phase("release", keep("right", OPEN), steps=1, hold=4),
            Phase("retreat", lambda c: wp(c["target"]["right"].pos + [0.0, 0.06, 0.10], 0.0, OPEN), steps=10),
            Phase("home", lambda c: home("right"), steps=10),
        ]
        return {"left": left, "right": right}
