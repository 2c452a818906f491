"""The task table: every dual-arm task users can name, with its instructions and limits.

Light on purpose (no ManiSkill import): ``vla envs`` and config validation read it without starting a simulator.
"""

from __future__ import annotations

import dataclasses
import json

from common.names import unknown_name_error
from envs.layout import ACTION_LAYOUT, CAMERAS, CONTROL_MODE


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task as users see it.

    Attributes:
        name: the name users pass (``--task``); for stock ManiSkill tasks, ManiSkill's own id.
        env_id: the id registered with ManiSkill's ``register_env`` (what ``gym.make`` receives).
        max_episode_steps: episode length limit at the control frequency (20 Hz).
        description: one sentence: what success means.
        seen: instruction templates used for training data (``{field}`` placeholders are filled per episode).
        unseen: held-out paraphrases for language generalization tests.
        source: "maniskill" (stock scene and success) or "vla" (built here from ManiSkill primitives).
        expert: ``module:Class`` of the task's scripted expert (``envs.experts.make_expert`` builds it).
        goals: for language-grounding tasks, the goals an instruction can name; ``env.reset(options={"goal": g})``
            fixes one (counterfactual runs), and ``info["other_goal"]`` reports that a goal other than the
            instructed one was reached. Empty for tasks with one goal.

    This table is the one place a task is defined: the task classes register ``env_id`` with ManiSkill through
    ``envs.tasks.common.register_task``, which reads the id and the step limit from here.
    """

    name: str
    env_id: str
    max_episode_steps: int
    description: str
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    source: str
    expert: str
    goals: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.seen or not self.unseen:
            raise ValueError(f"task {self.name}: needs both seen and unseen instruction templates")
        if self.max_episode_steps < 1:
            raise ValueError(f"task {self.name}: max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if ":" not in self.expert:
            raise ValueError(f"task {self.name}: expert must be 'module:Class', got {self.expert!r}")


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="TwoRobotPickCube-v1",
            env_id="vla/TwoRobotPickCube-v1",
            max_episode_steps=200,
            description="The left arm hands the red cube over; the right arm brings it to the green goal and holds "
            "still.",
            seen=(
                "hand the red cube over and lift it to the green target",
                "pass the red cube to the right arm and raise it to the goal",
                "move the red cube to the green sphere using both arms",
                "pick up the red cube and bring it to the green marker",
            ),
            unseen=(
                "transfer the red block across and hold it at the green point",
                "give the red cube to the other arm and place it at the target",
                "carry the red cube over to the green ball",
            ),
            source="maniskill",
            expert="envs.experts.cubes:PickCubeExpert",
        ),
        TaskSpec(
            name="TwoRobotStackCube-v1",
            env_id="vla/TwoRobotStackCube-v1",
            max_episode_steps=250,
            description="The green cube goes onto the red/white target and the blue cube on top of it; both released.",
            seen=(
                "stack the blue cube on the green cube on the target",
                "put the green cube on the red target and the blue cube on top of it",
                "place the green cube on the target and stack the blue one on it",
            ),
            unseen=(
                "build a two-block tower on the target with blue above green",
                "set the green block on the bullseye and pile the blue block on it",
            ),
            source="maniskill",
            expert="envs.experts.cubes:StackCubeExpert",
        ),
        TaskSpec(
            name="DualArmLiftBar-v1",
            env_id="DualArmLiftBar-v1",
            max_episode_steps=150,
            description="Both arms grasp a 44 cm bar near its ends and lift it at least 10 cm, level within 10 "
            "degrees.",
            seen=(
                "lift the bar with both arms",
                "grasp both ends of the bar and raise it level",
                "pick up the long bar with two hands keeping it level",
            ),
            unseen=(
                "raise the beam evenly using both grippers",
                "hold the rod at both ends and lift it up",
            ),
            source="vla",
            expert="envs.experts.bimanual:LiftBarExpert",
        ),
        TaskSpec(
            name="DualArmPlaceShoe-v1",
            env_id="DualArmPlaceShoe-v1",
            max_episode_steps=150,
            description="A shoe appears on the left or right; the arm on that side puts it into the box and lets go.",
            seen=(
                "place the shoe in the box",
                "put the shoe into the box",
                "pick up the shoe on the {side} and put it in the box",
            ),
            unseen=(
                "move the shoe into the shoebox",
                "drop the sneaker inside the box",
                "store the {side} shoe in the box",
            ),
            source="vla",
            expert="envs.experts.bimanual:PlaceShoeExpert",
        ),
        TaskSpec(
            name="DualArmPickColorCube-v1",
            env_id="DualArmPickColorCube-v1",
            max_episode_steps=100,
            description="A red and a blue cube, one on each side; the arm on the side of the cube the instruction "
            "names lifts it 8 cm while the other stays on the table (only the instruction says which).",
            seen=(
                "lift the {color} cube",
                "pick up the {color} cube",
                "raise the {color} block off the table",
            ),
            unseen=(
                "grab the {color} box and hold it up",
                "take the {color} one and lift it",
            ),
            source="vla",
            expert="envs.experts.bimanual:PickColorCubeExpert",
            goals=("red", "blue"),
        ),
        TaskSpec(
            name="DualArmPickSideCube-v1",
            env_id="DualArmPickSideCube-v1",
            max_episode_steps=100,
            description="A red and a blue cube, one on each side; the arm on the side the instruction names lifts "
            "its cube 8 cm while the other stays on the table (only the instruction says which side).",
            seen=(
                "lift the cube on the {side}",
                "pick up the {side} cube",
                "raise the block on the {side} off the table",
            ),
            unseen=(
                "grab the {side} box and hold it up",
                "take the one on the {side} and lift it",
            ),
            source="vla",
            expert="envs.experts.bimanual:PickColorCubeExpert",
            goals=("left", "right"),
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name.

    Raises:
        ValueError: unknown name; the message lists the known tasks and the closest match.
    """
    if name in TASKS:
        return TASKS[name]
    raise unknown_name_error("task", name, TASKS)


def task_table() -> list[dict]:
    """Every task as a JSON-ready dict (name, cameras, action layout, control mode, max steps, instructions)."""
    return [
        {
            "name": s.name,
            "env_id": s.env_id,
            "source": s.source,
            "description": s.description,
            "cameras": list(CAMERAS),
            "action_layout": list(ACTION_LAYOUT),
            "control_mode": CONTROL_MODE,
            "control_freq_hz": 20,
            "max_episode_steps": s.max_episode_steps,
            "seen": list(s.seen),
            "unseen": list(s.unseen),
        }
        for s in TASKS.values()
    ]


def print_tasks(cfg) -> int:
    """Body of ``vla envs``: print the task table (rich) or JSON when ``cfg.json``."""
    rows = task_table()
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Dual-arm tasks (cameras: " + ", ".join(CAMERAS) + f"; control: {CONTROL_MODE} @ 20 Hz)")
    for col in ("task", "max steps", "success", "seen instructions", "unseen instructions"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["name"], str(r["max_episode_steps"]), r["description"], "\n".join(r["seen"]), "\n".join(r["unseen"])
        )
    console = Console()
    console.print(table)
    console.print("action (14): " + ", ".join(ACTION_LAYOUT))
    return 0
