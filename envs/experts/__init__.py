"""Scripted experts, one per task, looked up by task name."""

from __future__ import annotations

import importlib

from envs.experts.base import ScriptedExpert


def make_expert(task: str) -> ScriptedExpert:
    """A fresh scripted expert for ``task`` (the class ``envs.specs.TASKS[task].expert`` names).

    Raises:
        ValueError: unknown task (with the closest known name).
    """
    from envs.specs import get_task

    module, _, name = get_task(task).expert.partition(":")
    return getattr(importlib.import_module(module), name)()
