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


def vla_bench_argv(out: Path, policy: str, tasks: str, seeds: str, *extra: str) -> list[str]:
    """``vla bench`` as a subprocess argv (this interpreter, ``-m scripts.cli``): no video, no progress bar."""
    import sys

    return [
        sys.executable,
        "-m",
        "scripts.cli",
        "bench",
        "--policy",
        policy,
        "--tasks",
        tasks,
        "--seeds",
        seeds,
        "--out",
        str(out),
        "--video",
        "none",
        "--no-progress",
        *extra,
    ]


def episode_lines(path: Path) -> int:
    """Complete lines in an episodes.jsonl (0 when it does not exist yet)."""
    return path.read_text().count("\n") if path.exists() else 0


def run_and_sigkill(cmd: list[str], out: Path, min_episodes: int, env: dict, timeout_s: float = 120.0) -> int:
    """Start ``cmd`` (a ``vla bench`` writing to ``out``), SIGKILL it once ``out/episodes.jsonl`` holds at least
    ``min_episodes`` lines, and return how many it held then. Fails the test when the run ended before the kill."""
    import os
    import signal
    import subprocess
    import time

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    episodes, deadline = out / "episodes.jsonl", time.monotonic() + timeout_s
    while episode_lines(episodes) < min_episodes and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"bench ended before the kill: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return episode_lines(episodes)
