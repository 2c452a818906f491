"""Helpers of the harness tests: a BenchConfig builder and a runner using the fake env (tests/harness/fakes.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench_fixtures import fake_config, load_run
from fakes import make_fake_env, make_goal_policy

from harness.bench import run_bench


@pytest.fixture
def run_fake() -> Callable[..., tuple[int, list[dict], dict]]:
    """``run_fake(out, env_kw={...}, policy_kw={...}, **config_overrides) -> (exit code, records, results)``."""

    def _run(
        out: Path, env_kw: dict | None = None, policy_kw: dict | None = None, policy_factory=None, **overrides: Any
    ) -> tuple[int, list[dict], dict]:
        cfg = fake_config(out, **overrides)
        env_factory = functools.partial(make_fake_env, **(env_kw or {}))
        policy_factory = policy_factory or functools.partial(make_goal_policy, **(policy_kw or {}))
        code = run_bench(cfg, env_factory=env_factory, policy_factory=policy_factory)
        records, results = load_run(out)
        return code, records, results

    return _run
