"""Scripted experts, one per task, looked up by task name."""

from __future__ import annotations

import difflib

from envs.experts.base import ScriptedExpert


def _registry() -> dict[str, type[ScriptedExpert]]:
    from envs.experts.cubes import PickCubeExpert, StackCubeExpert

    classes: list[type[ScriptedExpert]] = [PickCubeExpert, StackCubeExpert]
    try:
        from envs.experts.bimanual import LiftBarExpert, PlaceShoeExpert

        classes += [LiftBarExpert, PlaceShoeExpert]
    except ImportError as err:  # pragma: no cover - only while a task module is being written
        if err.name != "envs.experts.bimanual":
            raise
    return {cls.task: cls for cls in classes}


def make_expert(task: str) -> ScriptedExpert:
    """A fresh scripted expert for ``task``.

    Raises:
        ValueError: no expert for that task; the message lists the tasks that have one.
    """
    registry = _registry()
    if task not in registry:
        close = difflib.get_close_matches(task, list(registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for {sorted(registry)}{hint}")
    return registry[task]()
