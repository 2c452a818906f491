"""Experts for our own tasks (DualArmLiftBar-v1, DualArmPlaceShoe-v1, DualArmPickColorCube-v1 and
DualArmPickSideCube-v1, which share PickColorCubeExpert: both put the instructed cube in the privileged state)."""

from __future__ import annotations

import numpy as np

from envs.experts.base import CLOSED, OPEN, Phase, ScriptedExpert, Waypoint, grasp_yaw, home, quat_yaw, wp
from envs.layout import wrap_angle


def _keep(arm: str, grip: float):
    return lambda ctx: Waypoint(ctx["target"][arm].pos, ctx["target"][arm].rpy, grip)


def _raise(arm: str, z: float, grip: float):
    return lambda ctx: Waypoint(np.r_[ctx["target"][arm].pos[:2], z], ctx["target"][arm].rpy, grip)


def _rot2(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


class LiftBarExpert(ScriptedExpert):
    """Both arms grasp the bar ``grasp_offset`` from its centre, close together, then lift in lock-step."""

    lift_z = 0.20
    """TCP height (m) at the end of the lift (bar rests with its centre at 0.02 m)."""

    def plan(self, state, proprio):
        def grasp(ctx, arm):
            pose = np.asarray(ctx["state"]["bar_pose"], dtype=np.float64)
            yaw = quat_yaw(pose)
            axis = np.array([-np.sin(yaw), np.cos(yaw)])  # the bar's long (local y) axis in the world
            sign = -1.0 if arm == "left" else 1.0
            xy = pose[:2] + sign * float(ctx["state"]["grasp_offset"][0]) * axis
            return xy, pose[2], grasp_yaw(yaw, symmetry=np.pi)

        phases = {}
        for arm, other in (("left", "right"), ("right", "left")):
            phases[arm] = [
                Phase("above", lambda c, a=arm: wp([*grasp(c, a)[0], 0.10], grasp(c, a)[2]), steps=16),
                Phase(
                    "descend", lambda c, a=arm: wp([*grasp(c, a)[0], grasp(c, a)[1]], grasp(c, a)[2]), steps=10, hold=1
                ),
                Phase("close", _keep(arm, CLOSED), steps=1, hold=6),
                Phase("lift", _raise(arm, self.lift_z, CLOSED), steps=28, after=(other, "close")),
                Phase("hold", _keep(arm, CLOSED), steps=1, hold=10),
            ]
        return phases


class PlaceShoeExpert(ScriptedExpert):
    """The arm on the shoe's side grasps it across the upper, turns it along the box and lowers it in."""

    carry_z = 0.15

    def plan(self, state, proprio):
        arm = "left" if float(np.asarray(state["side"]).reshape(-1)[0]) < 0 else "right"
        gp = np.asarray(state["grasp_point"], dtype=np.float64)

        def shoe(ctx):
            pose = np.asarray(ctx["state"]["shoe_pose"], dtype=np.float64)
            return pose, quat_yaw(pose)

        def pick(ctx, z=None):
            pose, yaw = shoe(ctx)
            xy = pose[:2] + _rot2(yaw) @ gp[:2]
            return wp([*xy, pose[2] + gp[2] if z is None else z], grasp_yaw(yaw + np.pi / 2, symmetry=np.pi))

        def place(ctx, z):
            # Turn the shoe so its heel-to-toe axis lies along world y (the nearer of +/-y), centred in the box.
            _, yaw_now = shoe(ctx)
            target_yaw = np.pi / 2 if abs(wrap_angle(yaw_now - np.pi / 2)) <= np.pi / 2 else -np.pi / 2
            turn = float(wrap_angle(target_yaw - yaw_now))
            box = np.asarray(ctx["state"]["box_pos"], dtype=np.float64)
            xy = box[:2] + _rot2(target_yaw) @ gp[:2]
            return wp([*xy, z], ctx["target"][arm].rpy[2] + turn, CLOSED)

        place_z = 0.005 + 0.035 + gp[2] + 0.012  # floor + half shoe height + grasp height + 12 mm drop
        phases = [
            Phase("above", lambda c: pick(c, z=0.12), steps=16),
            Phase("descend", lambda c: pick(c), steps=10, hold=1),
            Phase("close", _keep(arm, CLOSED), steps=1, hold=6),
            Phase("lift", _raise(arm, self.carry_z, CLOSED), steps=10),
            Phase("carry", lambda c: place(c, self.carry_z), steps=22),
            Phase("lower", lambda c: place(c, place_z), steps=12, hold=2),
            Phase("release", _keep(arm, OPEN), steps=1, hold=5),
            Phase("retreat", _raise(arm, 0.16, OPEN), steps=8),
            Phase("home", lambda c: home(arm), steps=12),
        ]
        return {arm: phases}


class PickColorCubeExpert(ScriptedExpert):
    """The arm on the instructed cube's side grasps it from above and lifts it; the other arm stays put."""

    lift_z = 0.20

    def plan(self, state, proprio):
        arm = "left" if float(np.asarray(state["side"]).reshape(-1)[0]) < 0 else "right"

        def cube(ctx, z=None):
            pose = np.asarray(ctx["state"]["target_pose"], dtype=np.float64)
            return wp([*pose[:2], pose[2] if z is None else z], grasp_yaw(quat_yaw(pose)))

        phases = [
            Phase("above", lambda c: cube(c, z=0.10), steps=16),
            Phase("descend", lambda c: cube(c), steps=10, hold=1),
            Phase("close", _keep(arm, CLOSED), steps=1, hold=6),
            Phase("lift", _raise(arm, self.lift_z, CLOSED), steps=20),
            Phase("hold", _keep(arm, CLOSED), steps=1, hold=10),
        ]
        return {arm: phases}
