"""Helpers of the harness tests: a BenchConfig builder and a runner using the fake env (tests/harness/fakes.py)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import make_fake_env, make_goal_policy

from harness.bench import run_bench
from harness.config import BenchConfig

FAKE_TASKS = ("DualArmLiftBar-v1", "TwoRobotPickCube-v1")


def fake_config(out: Path, **overrides: Any) -> BenchConfig:
    """A BenchConfig for the fake env: two tasks x seeds 0..7, 40 steps, no video, no progress bar."""
    kw: dict[str, Any] = dict(policy="goal", out=out, tasks=FAKE_TASKS, seeds="0:8", video="none", progress=False,
                              max_episode_steps=40)
    kw.update(overrides)
    return BenchConfig(**kw)


def load_run(out: Path) -> tuple[list[dict], dict]:
    """(episodes.jsonl records, results.json) of an output folder."""
    lines = (out / "episodes.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], json.loads((out / "results.json").read_text())


@pytest.fixture
def run_fake() -> Callable[..., tuple[int, list[dict], dict]]:
    """``run_fake(out, env_kw={...}, policy_kw={...}, **config_overrides) -> (exit code, records, results)``."""

    def _run(out: Path, env_kw: dict | None = None, policy_kw: dict | None = None, policy_factory=None,
             **overrides: Any) -> tuple[int, list[dict], dict]:
        cfg = fake_config(out, **overrides)
        env_factory = functools.partial(make_fake_env, **(env_kw or {}))
        policy_factory = policy_factory or functools.partial(make_goal_policy, **(policy_kw or {}))
        code = run_bench(cfg, env_factory=env_factory, policy_factory=policy_factory)
        records, results = load_run(out)
        return code, records, results

    return _run
