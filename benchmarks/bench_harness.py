"""Harness overhead over raw env stepping, and CPU episodes/hour at 1 and 2 workers.

Overhead: the same scripted-expert episodes (same tasks, seeds, cameras, image size, episode-end rule) are run
(a) by a bare loop ``expert.act`` + ``env.step`` and (b) by the harness (``EpisodeRunner``: read-only policy
observation, chunk executor, timing, records; ``--video none`` and, separately, ``--video all`` whose encoding
runs in a background thread). Both use an env built beforehand (construction is not timed) and step the same
number of times; ``overhead = (harness s/step) / (raw s/step) - 1``. Rounds alternate raw/harness to share
machine noise; the median over rounds is reported along with every round. Target: <= 3 %.

Throughput: ``harness.dispatch.run_items`` over every task x ``--throughput-seeds`` seeds with the scripted expert
and the cameras of ``--throughput-cameras``, with 1 worker (in-process) and 2 worker processes; wall time
includes env construction and worker start-up, as a real run of that size would.

    python benchmarks/bench_harness.py          # writes benchmarks/results/harness.json (~10 min on 2 cores)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tyro

RESULTS = Path(__file__).resolve().parent / "results" / "harness.json"


@dataclasses.dataclass
class HarnessBenchConfig:
    """Harness benchmark settings."""

    overhead_tasks: tuple[str, ...] = ("DualArmLiftBar-v1", "DualArmPlaceShoe-v1")
    """Tasks of the overhead comparison (one episode per seed each)."""
    overhead_seeds: tuple[int, ...] = (0,)
    """Seeds of the overhead comparison."""
    rounds: int = 4
    """Rounds; each runs every overhead episode raw then through the harness."""
    image_size: int = 128
    """Rendered image side (px)."""
    throughput_seeds: int = 2
    """Seeds per task in the throughput runs."""
    throughput_cameras: tuple[str, ...] = ("head",)
    """Cameras rendered in the throughput runs (() for state-only)."""
    out: Path = RESULTS
    """Output JSON."""


def _end(first: int | None, t: int, max_steps: int, post: int = 10) -> bool:
    return (first is not None and t >= first + post) or t >= max_steps


def raw_rollouts(env, task: str, seeds, max_steps: int, read: tuple = ()) -> tuple[float, int]:
    """Bare loop: expert + env.step with the harness's episode-end rule, reading the images of ``read`` after
    every reset/step (images are rendered when read, as the harness's videos read them); returns (wall s, steps)."""
    from envs.experts import make_expert

    steps, start = 0, time.perf_counter()
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        for camera in read:
            obs["images"][camera]
        expert = make_expert(task)
        expert.reset()
        first = None
        for t in range(1, max_steps + 1):
            a = expert.act(
                {"privileged": {k: v[0] for k, v in obs["privileged"].items()}, "proprio": obs["proprio"][0]}
            )
            obs, _, _, _, info = env.step(a)
            for camera in read:
                obs["images"][camera]
            steps += 1
            if first is None and bool(info["success"][0]):
                first = t
            if _end(first, t, max_steps):
                break
    return time.perf_counter() - start, steps


def _settings(task_steps: dict, cameras: tuple, image_size: int, video: str, out: Path):
    from envs.wrapper import make_env
    from harness.rollout import RunSettings
    from policies.base import make_policy

    return RunSettings(
        policy_factory=functools.partial(make_policy, "scripted"),
        env_factory=make_env,
        out=out,
        max_episode_steps=task_steps,
        cameras=cameras,
        policy_cameras=(),
        video_cameras=cameras if video != "none" else (),
        image_size=image_size,
        video=video,
    )


def harness_rollouts(runner, task: str, seeds) -> tuple[float, int, float]:
    """The harness on the same episodes; returns (wall s incl. pending videos, steps, accounted s)."""
    start = time.perf_counter()
    records = []
    for seed in seeds:
        records += runner.run_item(task, (seed,))
    records += runner.flush()
    wall = time.perf_counter() - start
    steps = sum(r["episode_len"] for r in records)
    accounted = sum(r["timing_ms"][k]["mean"] * r["timing_ms"][k]["n"] for r in records for k in r["timing_ms"]) / 1e3
    return wall, steps, accounted


def measure_overhead(cfg: HarnessBenchConfig, cameras: tuple, video: str) -> dict:
    """Raw vs harness, interleaved per episode; ``overhead_min`` uses each episode's fastest run of each kind
    (background load only ever adds time), ``overhead_median`` the median of per-round ratios."""
    from envs.specs import get_task
    from harness.runner import EpisodeRunner

    episodes = [(t, s) for t in cfg.overhead_tasks for s in cfg.overhead_seeds]
    raw = {e: [] for e in episodes}
    har = {e: [] for e in episodes}
    steps: dict = {}
    unaccounted = []
    with tempfile.TemporaryDirectory() as tmp:
        steps_by_task = {t: get_task(t).max_episode_steps for t in cfg.overhead_tasks}
        runner = EpisodeRunner(_settings(steps_by_task, cameras, cfg.image_size, video, Path(tmp)))
        for task in cfg.overhead_tasks:
            runner.env_for(task).reset(seed=0)  # build + warm up
        for _ in range(cfg.rounds):
            for task, seed in episodes:
                read = cameras if video != "none" else ()  # what the harness renders: the video's cameras
                w_raw, n_raw = raw_rollouts(runner.envs[task], task, (seed,), steps_by_task[task], read)
                w_har, n_har, acc = harness_rollouts(runner, task, (seed,))
                if n_raw != n_har:
                    raise RuntimeError(f"{task} seed {seed}: raw loop ran {n_raw} steps, harness {n_har}")
                raw[(task, seed)].append(w_raw)
                har[(task, seed)].append(w_har)
                steps[(task, seed)] = n_raw
                unaccounted.append((w_har - acc) / n_har)
        runner.close()
    n = sum(steps.values())
    per_round = [sum(har[e][r] for e in episodes) / sum(raw[e][r] for e in episodes) - 1 for r in range(cfg.rounds)]
    raw_min, har_min = sum(min(v) for v in raw.values()), sum(min(v) for v in har.values())
    return {
        "cameras": list(cameras),
        "image_size": cfg.image_size,
        "video": video,
        "steps_per_round": n,
        "raw_ms_per_step_min": round(1e3 * raw_min / n, 4),
        "harness_ms_per_step_min": round(1e3 * har_min / n, 4),
        "overhead_min": round(har_min / raw_min - 1, 5),
        "overhead_per_round": [round(x, 5) for x in per_round],
        "overhead_median": round(statistics.median(per_round), 5),
        "harness_unaccounted_ms_per_step": round(1e3 * statistics.median(unaccounted), 4),
    }


class _NullEnv:
    """An env whose reset/step cost ~nothing (state-only, constant observation): isolates the harness's cost."""

    def __init__(self, task: str, **kwargs):
        import numpy as np

        self.task, self.cameras, self.image_size, self.num_envs = task, (), 128, 1
        self.last_timing = {"simulation": 0.0, "observation": 0.0}
        self._obs = {
            "images": {},
            "proprio": np.zeros((1, 14), np.float32),
            "instruction": ["x"],
            "privileged": {"task": np.array([task], object)},
        }
        self._info = {"success": np.zeros(1, bool)}
        self._trunc = np.zeros(1, bool)

    def reset(self, *, seed=None, options=None):
        return self._obs, self._info

    def step(self, action):
        return self._obs, None, self._trunc, self._trunc, self._info

    def close(self):
        pass


class _NullPolicy:
    def __init__(self):
        import numpy as np

        from policies.base import PolicyMetadata

        self.metadata = PolicyMetadata(name="null")
        self._chunk = np.zeros((1, 1, 14), np.float32)

    def reset(self):
        pass

    def predict_action_chunk(self, obs):
        return self._chunk


def measure_harness_cost(steps: int = 20000) -> dict:
    """Per-step cost of the harness itself (policy view, chunk executor, timing, bookkeeping), in microseconds:
    the runner's rollout on a null env + null policy minus a bare loop over the same calls."""
    from harness.chunking import ChunkExecutor
    from harness.rollout import RunSettings, rollout

    env, policy = _NullEnv("null"), _NullPolicy()
    settings = RunSettings(
        policy_factory=_NullPolicy,
        env_factory=_NullEnv,
        out=Path("."),
        max_episode_steps={"null": steps},
        cameras=(),
        policy_cameras=(),
        video_cameras=(),
        image_size=128,
        video="none",
    )
    best_h = best_b = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        rollout(env, policy, ChunkExecutor(1), "null", (0,), settings)
        best_h = min(best_h, time.perf_counter() - t0)
        t0 = time.perf_counter()
        env.reset(seed=0)
        for _ in range(steps):
            env.step(policy.predict_action_chunk(None)[:, 0])
        best_b = min(best_b, time.perf_counter() - t0)
    return {
        "steps": steps,
        "harness_us_per_step": round(1e6 * best_h / steps, 2),
        "bare_loop_us_per_step": round(1e6 * best_b / steps, 2),
        "harness_cost_us_per_step": round(1e6 * (best_h - best_b) / steps, 2),
    }


def measure_throughput(cfg: HarnessBenchConfig, workers: int) -> dict:
    from envs.specs import TASKS
    from harness.dispatch import plan_items, run_items

    seeds = {t: list(range(100000, 100000 + cfg.throughput_seeds)) for t in TASKS}
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(
            {t: s.max_episode_steps for t, s in TASKS.items()},
            tuple(cfg.throughput_cameras),
            cfg.image_size,
            "none",
            Path(tmp),
        )
        start = time.perf_counter()
        run_items(settings, plan_items(seeds), records.append, workers=workers)
        wall = time.perf_counter() - start
    ok = sum(r["status"] == "ok" and r["success_once"] for r in records)
    return {
        "workers": workers,
        "episodes": len(records),
        "successes": ok,
        "wall_s": round(wall, 2),
        "episodes_per_hour": round(len(records) / wall * 3600, 1),
        "steps": sum(r["episode_len"] for r in records),
    }


def main(cfg: HarnessBenchConfig) -> None:
    import torch

    load_before = os.getloadavg()
    cost = measure_harness_cost()
    overhead = [
        measure_overhead(cfg, (), "none"),
        measure_overhead(cfg, ("head",), "none"),
        measure_overhead(cfg, ("head",), "all"),
    ]
    for o in overhead:  # the harness's own cost relative to the raw step time
        o["overhead_from_harness_cost"] = round(cost["harness_cost_us_per_step"] / (1e3 * o["raw_ms_per_step_min"]), 5)
    throughput = [measure_throughput(cfg, 1), measure_throughput(cfg, 2)]
    gpu = torch.cuda.is_available()
    result = {
        "benchmark": "harness",
        "command": shlex.join([sys.executable, *sys.argv]),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_5_15min": {
                "start": [round(x, 2) for x in load_before],
                "end": [round(x, 2) for x in os.getloadavg()],
            },
            "note": "CPU cores shared with other jobs (load average above the core count means the "
            "numbers include contention); rendering through lavapipe (CPU Vulkan)",
        },
        "gpu": {
            "available": gpu,
            "measured": False,
            "note": "No GPU in this session: the GPU path (--num-envs > 1, ManiSkill GPU sim + batched inference) "
            "was not measured here.",
        },
        "target_overhead": 0.03,
        "harness_cost": cost,
        "overhead": overhead,
        "throughput_cpu": {
            "cameras": list(cfg.throughput_cameras),
            "image_size": cfg.image_size,
            "policy": "scripted",
            "video": "none",
            "runs": throughput,
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
    }
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, cfg.out)
    print(
        json.dumps(
            {
                "harness_cost_us_per_step": cost["harness_cost_us_per_step"],
                "overhead": [
                    (o["cameras"], o["video"], o["overhead_min"], o["overhead_median"], o["overhead_from_harness_cost"])
                    for o in overhead
                ],
                "throughput": [(t["workers"], t["episodes_per_hour"]) for t in throughput],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(tyro.cli(HarnessBenchConfig))
