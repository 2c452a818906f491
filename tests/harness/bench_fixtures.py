"""Builders shared by the harness tests (importable by name, unlike conftest.py, which pytest may shadow with
another directory's conftest module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.config import BenchConfig

FAKE_TASKS = ("DualArmLiftBar-v1", "TwoRobotPickCube-v1")


def fake_config(out: Path, **overrides: Any) -> BenchConfig:
    """A BenchConfig for the fake env: two tasks x seeds 0..7, 40 steps, no video, no progress bar."""
    kw: dict[str, Any] = dict(
        policy="goal", out=out, tasks=FAKE_TASKS, seeds="0:8", video="none", progress=False, max_episode_steps=40
    )
    kw.update(overrides)
    return BenchConfig(**kw)


def load_run(out: Path) -> tuple[list[dict], dict]:
    """(episodes.jsonl records, results.json) of an output folder."""
    lines = (out / "episodes.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], json.loads((out / "results.json").read_text())
