"""Named benchmark specs: ``harness/specs/NAME.yaml`` (package data), loaded by name (``vla bench --benchmark
NAME``) or from a YAML path; and the seed syntax every command uses (:func:`parse_seeds`).

A spec file holds:

    name: str                     # must equal the file name without .yaml
    description: str
    tasks: all | [task, ...]      # names from envs.specs.TASKS
    seeds: "A:B" | [int, ...]     # A <= seed < B; every task runs every seed
    max_episode_steps: {task: int}  # optional per-task override of the task's own limit
    image_size: int               # optional (default 128): render size when the policy does not fix one
    video_cameras: [camera, ...]  # optional: cameras in the videos when the CLI does not say

Light (PyYAML + envs.specs only): no torch or ManiSkill import.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from common.config_files import load_yaml
from common.names import did_you_mean
from envs.config import parse_cameras
from envs.specs import TASKS, get_task

SPECS_DIR = Path(__file__).resolve().parent / "specs"
_KEYS = {"name", "description", "tasks", "seeds", "max_episode_steps", "image_size", "video_cameras"}
MAX_SEED = 2**32 - 1
"""Largest seed: ManiSkill seeds numpy's RandomState, which takes 32-bit seeds."""


def parse_seeds(text: str) -> list[int]:
    """Parse ``"A:B"`` (A <= seed < B), ``"3,7,9"`` or ``"5"`` into a sorted list of distinct seeds in [0, 2^32).

    Raises:
        ValueError: malformed text, an empty range, a negative, too large or repeated seed.
    """
    text = str(text).strip()
    try:
        if ":" in text:
            a, b = (int(x) for x in text.split(":"))
            if b <= a:
                raise ValueError(f"seeds: empty range {text!r} (A:B means A <= seed < B)")
            if a < 0 or b - 1 > MAX_SEED:
                raise ValueError(f"seeds: {text!r} must lie in [0, 2^32) (ManiSkill's RNG takes 32-bit seeds)")
            seeds = list(range(a, b))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        if "seeds:" in str(err):
            raise
        raise ValueError(f"seeds: expected 'A:B', 'a,b,c' or one integer, got {text!r}") from err
    if not seeds:
        raise ValueError(f"seeds: no seed in {text!r}")
    if min(seeds) < 0:
        raise ValueError(f"seeds: must be >= 0, got {min(seeds)}")
    if max(seeds) > MAX_SEED:
        raise ValueError(f"seeds: must be < 2^32 (ManiSkill's RNG takes 32-bit seeds), got {max(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {text!r} lists a seed twice")
    return sorted(seeds)


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """A named set of (task, seed) episodes and their settings.

    Attributes:
        name: the spec's name.
        description: one sentence.
        tasks: task names (envs.specs.TASKS).
        seeds: sorted distinct seeds >= 0, run for every task.
        max_episode_steps: task -> episode length limit (control steps) for every task in ``tasks``.
        image_size: rendered image side (px) when the policy does not fix one.
        video_cameras: cameras tiled in episode videos (empty: the harness's default).
        path: the YAML file it came from.
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    max_episode_steps: dict[str, int]
    image_size: int = 128
    video_cameras: tuple[str, ...] = ()
    path: Path | None = None


def available_benchmarks() -> list[str]:
    """Names of every spec in harness/specs/."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def _parse_seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    try:
        return tuple(parse_seeds(str(value)))
    except ValueError as err:
        raise ValueError(f"{where}: key 'seeds': {err}") from err


def _from_dict(data: dict, path: Path) -> BenchmarkSpec:
    where = str(path)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    missing = [k for k in ("name", "tasks", "seeds") if k not in data]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    if data["name"] != path.stem:
        raise ValueError(f"{where}: key 'name' is {data['name']!r} but the file is {path.name}")
    tasks = data["tasks"]
    tasks = tuple(TASKS) if tasks == "all" else tuple(tasks if isinstance(tasks, list) else [tasks])
    for t in tasks:
        try:
            get_task(str(t))
        except ValueError as err:
            raise ValueError(f"{where}: key 'tasks': {err}") from err
    steps = dict(data.get("max_episode_steps") or {})
    extra = sorted(set(steps) - set(tasks))
    if extra:
        raise ValueError(f"{where}: max_episode_steps names tasks not in the spec: {extra}")
    bad = {t: v for t, v in steps.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{where}: max_episode_steps must be integers >= 1, got {bad}")
    image_size = data.get("image_size", 128)
    if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
        raise ValueError(f"{where}: image_size must be an integer in [16, 1024], got {image_size!r}")
    try:
        cams = parse_cameras(tuple(data.get("video_cameras") or ()), "video_cameras")
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    return BenchmarkSpec(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        tasks=tasks,
        seeds=_parse_seeds(data["seeds"], where),
        max_episode_steps={t: int(steps.get(t, get_task(t).max_episode_steps)) for t in tasks},
        image_size=image_size,
        video_cameras=cams,
        path=path,
    )


def load_benchmark(name: str) -> BenchmarkSpec:
    """Load a benchmark spec by name (or from a path to a .yaml file).

    Raises:
        FileNotFoundError: a path ending in .yaml/.yml that does not exist.
        ValueError: unknown name (the message lists the known ones and the closest match), invalid YAML, or an
            invalid spec (the message names the file and key).
    """
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        known = available_benchmarks()
        if name not in known:
            raise ValueError(f"unknown benchmark {name!r}; known: {known}{did_you_mean(name, known)}")
        path = SPECS_DIR / f"{name}.yaml"
    return _from_dict(load_yaml(path, "benchmark spec file"), path)
