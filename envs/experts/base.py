"""Scripted experts: per-arm timelines of waypoint phases, planned from privileged simulator state.

An expert sees exactly what the env wrapper returns (``obs["privileged"]`` and ``obs["proprio"]``) and emits the
same 14-D absolute actions a learned policy would (``envs.layout``), so its episodes are valid training data.

Each arm runs its own list of :class:`Phase` objects. A phase computes its goal waypoint when it starts (so later
phases react to where objects really are), moves there along a smoothstep-interpolated straight line over
``steps`` control steps, then holds for ``hold`` steps. A phase may wait for a phase of the other arm to finish
(``after``), which is how the two arms coordinate hand-overs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from envs.layout import ACTION_DIM, ARMS, GRIPPER_CLOSED, GRIPPER_OPEN, arm_slice, wrap_angle

OPEN, CLOSED = GRIPPER_OPEN, GRIPPER_CLOSED
HOME = {
    "left": np.array([0.0, -0.32, 0.22, 0.0, 0.0, 0.0]),
    "right": np.array([0.0, 0.32, 0.22, 0.0, 0.0, 0.0]),
}
"""Parking poses (world xyz m + rpy rad) that keep each arm out of the other's way."""


@dataclasses.dataclass
class Waypoint:
    """A target for one arm: TCP position (3,) m and rpy (3,) rad in the world frame, gripper in [-1, 1]."""

    pos: np.ndarray
    rpy: np.ndarray
    grip: float

    def vector(self) -> np.ndarray:
        """(7,) [x, y, z, roll, pitch, yaw, gripper]."""
        return np.concatenate([self.pos, self.rpy, [self.grip]])


Context = Mapping[str, Any]
"""What a phase's planner sees: ``state`` (privileged, one env), ``proprio`` (14,), ``target`` (arm -> Waypoint)."""


@dataclasses.dataclass
class Phase:
    """One segment of an arm's timeline.

    Attributes:
        name: unique within the arm's timeline (used by ``after``).
        goal: ``goal(ctx) -> Waypoint`` evaluated once when the phase starts.
        steps: control steps spent interpolating from the previous target to the goal (>= 1).
        hold: extra control steps holding the goal (e.g. to let the gripper close).
        after: ``(arm, phase_name)`` that must have finished before this phase may start.
    """

    name: str
    goal: Callable[[Context], Waypoint]
    steps: int
    hold: int = 0
    after: tuple[str, str] | None = None


def smoothstep(t: float) -> float:
    """3t^2 - 2t^3: zero velocity at both ends of a segment (t in [0, 1])."""
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


class _ArmTimeline:
    def __init__(self, phases: Sequence[Phase], start: Waypoint):
        self.phases = list(phases)
        self.index = 0
        self.k = 0
        self.start = start
        self.goal: Waypoint | None = None
        self.current = start
        self.finished: set[str] = set()

    @property
    def done(self) -> bool:
        return self.index >= len(self.phases)

    def advance(self, ctx: Context, other_finished: Mapping[str, set[str]]) -> Waypoint:
        if self.done:
            return self.current
        phase = self.phases[self.index]
        if self.goal is None:
            if phase.after is not None and phase.after[1] not in other_finished[phase.after[0]]:
                return self.current  # wait for the other arm
            self.start = self.current
            self.goal = phase.goal(ctx)
            self.k = 0
        self.k += 1
        s = smoothstep(self.k / phase.steps)
        g = self.goal
        drpy = wrap_angle(g.rpy - self.start.rpy)
        self.current = Waypoint(
            pos=self.start.pos + s * (g.pos - self.start.pos),
            rpy=self.start.rpy + s * drpy,
            grip=g.grip,
        )
        if self.k >= phase.steps + phase.hold:
            self.finished.add(phase.name)
            self.index += 1
            self.goal = None
        return self.current


class ScriptedExpert:
    """Base class: subclasses implement :meth:`plan`, returning each arm's phases for the episode.

    Use: ``expert.reset()`` at the start of an episode, then ``expert.act(obs_single)`` every step, where
    ``obs_single`` holds ``privileged`` (name -> array without batch dim) and ``proprio`` (14,).
    """

    task: str = ""

    def __init__(self) -> None:
        self._arms: dict[str, _ArmTimeline] | None = None

    def reset(self) -> None:
        """Forget the current plan; the next :meth:`act` plans afresh."""
        self._arms = None

    def plan(self, state: Mapping[str, np.ndarray], proprio: np.ndarray) -> dict[str, list[Phase]]:
        """Return ``{"left": [...], "right": [...]}`` phases for an episode starting in ``state``."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        """True once both arms have finished every phase (the expert then holds its last targets)."""
        return self._arms is not None and all(t.done for t in self._arms.values())

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The next (14,) float64 absolute action for one env."""
        state, proprio = obs["privileged"], np.asarray(obs["proprio"], dtype=np.float64)
        if self._arms is None:
            phases = self.plan(state, proprio)
            self._arms = {}
            for arm in ARMS:
                p = proprio[arm_slice(arm)]
                start = Waypoint(p[:3].copy(), p[3:6].copy(), OPEN)
                self._arms[arm] = _ArmTimeline(phases.get(arm, []), start)
        ctx = {"state": state, "proprio": proprio, "target": {a: t.current for a, t in self._arms.items()}}
        finished = {a: t.finished for a, t in self._arms.items()}
        action = np.zeros(ACTION_DIM)
        for arm in ARMS:
            action[arm_slice(arm)] = self._arms[arm].advance(ctx, finished).vector()
        return action


def grasp_yaw(object_yaw: float, symmetry: float = np.pi / 2) -> float:
    """Gripper yaw (rad) closest to 0 that is equivalent to ``object_yaw`` under the object's symmetry."""
    return float(wrap_angle(object_yaw * (2 * np.pi / symmetry)) / (2 * np.pi / symmetry))


def quat_yaw(pose: np.ndarray) -> float:
    """Yaw (rad) about world z of a pose [x, y, z, qw, qx, qy, qz] of a z-up object."""
    w, x, y, z = pose[3:7]
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def wp(pos: Sequence[float], yaw: float = 0.0, grip: float = OPEN, roll: float = 0.0, pitch: float = 0.0) -> Waypoint:
    """Shorthand for a waypoint with the gripper pointing down (plus optional tilt)."""
    return Waypoint(np.asarray(pos, dtype=np.float64), np.array([roll, pitch, yaw], dtype=np.float64), float(grip))


def home(arm: str, grip: float = OPEN) -> Waypoint:
    """The arm's parking waypoint."""
    return Waypoint(HOME[arm][:3].copy(), HOME[arm][3:].copy(), grip)
