"""Render cost and fidelity of the low-poly arm visuals vs the stock meshes -> benchmarks/results/render.json.

    .venv/bin/python -m benchmarks.bench_render [--states 20] [--repeats 3] [--image-size 128]

Per task, in one process and one run: two envs (``visual_quality`` full and fast) are put into the same ``states``
simulator states (the scripted expert's episodes on seeds 0.., sampled evenly over each episode, copied with
``set_state``; physics is identical, so the states are the same in both). Each state's head-camera frame is
rendered ``repeats`` times in each env, alternating full/fast so both see the same machine noise; the reported
cost is the median ms per frame. Fidelity: PSNR and mean absolute pixel difference (0-255) between the full and
fast frame of every state. Scene triangle counts come from the render bodies of each env. The JSON records the CPU
model and SIMD flags (lavapipe's speed differs ~2.5x between the AVX-512 and AVX2-only kinds; compare the ratio).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import result_header, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "render.json"


@dataclasses.dataclass
class RenderBenchConfig:
    """Render benchmark settings."""

    tasks: tuple[str, ...] = ()
    """Tasks (default: every task)."""
    states: int = 20
    """Simulator states per task (spread over expert episodes)."""
    repeats: int = 3
    """Timed renders per state and quality (after one untimed warm-up render)."""
    image_size: int = 128
    """Camera image side (px)."""
    camera: str = "head"
    """The camera rendered."""
    states_per_episode: int = 5
    """States taken from each expert episode (evenly spaced over it)."""
    out: Path = RESULTS
    """Output JSON."""


def expert_states(env, task: str, count: int, per_episode: int) -> list:
    """``count`` flat simulator states (``env.unwrapped.get_state()``) from scripted-expert episodes."""
    from envs.experts import make_expert

    states, seed = [], 0
    while len(states) < count:
        obs, _ = env.reset(seed=seed)
        expert = make_expert(task)
        expert.reset()
        trace = []
        for _ in range(env.max_episode_steps):
            single = {"privileged": {k: v[0] for k, v in obs["privileged"].items()}, "proprio": obs["proprio"][0]}
            obs, *_ = env.step(expert.act(single))
            trace.append(env.unwrapped.get_state().clone())
            if expert.done:
                break
        picks = np.linspace(0, len(trace) - 1, per_episode).round().astype(int)
        states += [trace[i] for i in picks][: count - len(states)]
        seed += 1
    return states


def _render(env, state, camera: str) -> tuple[np.ndarray, float]:
    env.unwrapped.set_state(state)
    t0 = time.perf_counter()
    frame = env.render_cameras((camera,))[camera][0]
    return frame, time.perf_counter() - t0


def measure_task(cfg: RenderBenchConfig, task: str) -> dict:
    """Costs, triangle counts and fidelity of one task (see the module docstring)."""
    from envs.visuals import scene_triangles
    from envs.wrapper import make_env

    envs = {
        q: make_env(task, cameras=(cfg.camera,), image_size=cfg.image_size, visual_quality=q) for q in ("full", "fast")
    }
    try:
        states = expert_states(envs["full"], task, cfg.states, cfg.states_per_episode)
        times: dict[str, list[float]] = {"full": [], "fast": []}
        psnr, mad = [], []
        for state in states:
            frames = {}
            for q, env in envs.items():
                frames[q], _ = _render(env, state, cfg.camera)  # warm-up (uploads poses, first-use allocations)
            for _ in range(cfg.repeats):
                for q, env in envs.items():
                    times[q].append(_render(env, state, cfg.camera)[1])
            diff = frames["full"].astype(np.float64) - frames["fast"].astype(np.float64)
            mse = float(np.mean(diff**2))
            psnr.append(10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf"))
            mad.append(float(np.mean(np.abs(diff))))
        ms = {q: 1e3 * statistics.median(t) for q, t in times.items()}
        triangles = {q: scene_triangles(env) for q, env in envs.items()}
    finally:
        for env in envs.values():
            env.close()
    return {
        "task": task,
        "camera": cfg.camera,
        "image_size": cfg.image_size,
        "states": len(states),
        "ms_per_frame": {q: round(v, 3) for q, v in ms.items()},
        "speedup": round(ms["full"] / ms["fast"], 2),
        "scene_triangles": triangles,
        "psnr_db": {"mean": round(float(np.mean(psnr)), 2), "min": round(float(np.min(psnr)), 2)},
        "mean_abs_diff": {"mean": round(float(np.mean(mad)), 3), "max": round(float(np.max(mad)), 3)},
    }


def main(argv: list[str] | None = None) -> int:
    import tyro

    from envs.specs import TASKS
    from envs.visuals import lowpoly_manifest

    cfg = tyro.cli(RenderBenchConfig, args=argv)
    rows = []
    for task in cfg.tasks or tuple(TASKS):
        row = measure_task(cfg, task)
        rows.append(row)
        print(
            f"{task:24s} full {row['ms_per_frame']['full']:7.1f} ms  fast {row['ms_per_frame']['fast']:6.1f} ms  "
            f"{row['speedup']:5.1f}x  triangles {row['scene_triangles']['full']} -> {row['scene_triangles']['fast']}"
            f"  PSNR {row['psnr_db']['mean']:.1f} dB  MAD {row['mean_abs_diff']['mean']:.2f}"
        )
    payload = {
        **result_header(
            "render cost of one camera frame, stock vs low-poly arm visuals, on identical states",
            "benchmarks.bench_render",
            argv,
        ),
        "targets": {"speedup_min": 5.0, "speedup_goal": 10.0},
        "lowpoly": {"faces_per_arm": lowpoly_manifest()["faces_per_arm"], "params": lowpoly_manifest()["params"]},
        "tasks": rows,
        "speedup_min_over_tasks": min(r["speedup"] for r in rows),
    }
    write_result(cfg.out, payload)
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
