"""`vla bench` episodes/hour before and after "Fast on any CPU", in one run -> benchmarks/results/fast_path.json.

    .venv/bin/python -m benchmarks.bench_fast_path [--policy checkpoint:runs/demo/checkpoints/last] [--seeds 16]

Two paths, same policy, same seeds, same settings (the demo's: DualArmLiftBar-v1, head camera 128 px, a video of
every episode, 2 workers), every episode run to its full 150 steps (``--no-end-on-success``, so episode lengths
do not depend on what the policy does with the pixels it sees):

* **before**: stock arm meshes (``--visual-quality full``) and every camera rendered at every reset and step, as
  the wrapper did before rendering on demand (``eager_env`` below, passed as ``--env-factory``);
* **after**: the defaults (low-poly visuals, cameras rendered only when a consumer reads them).

A second pair runs with ``--video none --n-action-steps 8``, where rendering on demand also skips 7 of 8 frames.
Episodes/hour come from each run's results.json (wall time of the episodes, including worker start-up and model
loading, as a user's run of that size has); ``steady_episodes_per_hour`` leaves start-up out (episodes x workers /
summed episode wall time). Without ``--policy`` a tiny VLA is trained for 2 steps on 2 freshly recorded demos (its
actions are poor, which does not matter here: every episode runs 150 steps).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import record_demo_data, result_header, vla_command, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "fast_path.json"
TASK = "DualArmLiftBar-v1"


def eager_env(task: str, **kwargs):
    """``envs.wrapper.make_env`` whose every reset/step renders all its cameras at once (the pre-lazy behaviour)."""
    from envs.wrapper import make_env

    env = make_env(task, **kwargs)
    reset, step = env.reset, env.step

    def eager(out):
        for camera in env.cameras:
            out[0]["images"][camera]
        return out

    env.reset = lambda **kw: eager(reset(**kw))
    env.step = lambda action: eager(step(action))
    return env


@dataclasses.dataclass
class FastPathBenchConfig:
    """Before/after throughput benchmark settings."""

    policy: str | None = None
    """Policy spec (default: a 2-step tiny VLA trained here on 2 recorded demos)."""
    seeds: int = 16
    """Episodes per run (seeds 100000..)."""
    workers: int = 2
    """Bench worker processes (the demo uses 2)."""
    image_size: int = 128
    """Head camera side (px)."""
    out: Path = RESULTS
    """Output JSON."""


def make_policy_checkpoint(root: Path) -> str:
    """Record 2 demos and train the recipe's tiny VLA for 2 steps; returns ``checkpoint:PATH``."""
    recipe = Path(__file__).resolve().parent / "recipes" / "tiny-liftbar.yaml"
    data, run = root / "data", root / "run"
    record_demo_data(data, 2, TASK)
    subprocess.run(
        vla_command(
            "train",
            "--config",
            str(recipe),
            "--data",
            str(data),
            "--out",
            str(run),
            "--steps",
            "2",
            "--warmup-steps",
            "1",
            "--val-fraction",
            "0",
            "--no-progress",
        ),
        check=True,
        capture_output=True,
    )
    return f"checkpoint:{run / 'checkpoints' / 'last'}"


def run_bench(cfg: FastPathBenchConfig, policy: str, out: Path, extra: list[str]) -> dict:
    """One `vla bench` run; returns its throughput numbers."""
    cmd = vla_command(
        "bench",
        "--policy",
        policy,
        "--tasks",
        TASK,
        "--seeds",
        f"100000:{100000 + cfg.seeds}",
        "--out",
        str(out),
        "--workers",
        str(cfg.workers),
        "--image-size",
        str(cfg.image_size),
        "--no-end-on-success",
        "--no-progress",
        *extra,
    )
    subprocess.run(cmd, check=True, capture_output=True)
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    steps = sum(r["episode_len"] for r in records)
    summed = sum(r["wall_s"] for r in records)
    return {
        "command": " ".join(cmd[3:]),
        "episodes": len(records),
        "steps": steps,
        "episodes_per_hour": results["throughput"]["episodes_per_hour"],
        "wall_s": results["throughput"]["wall_s"],
        "steady_episodes_per_hour": round(len(records) * cfg.workers / summed * 3600, 1),
        "statuses": sorted({r["status"] for r in records}),
    }


def main(argv: list[str] | None = None) -> int:
    import tyro

    cfg = tyro.cli(FastPathBenchConfig, args=argv)
    pairs = {"video_all": ["--video", "all"], "video_none_open_loop_8": ["--video", "none", "--n-action-steps", "8"]}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_fast_path_") as tmp:
        root = Path(tmp)
        policy = cfg.policy or make_policy_checkpoint(root)
        for name, extra in pairs.items():
            before = run_bench(
                cfg,
                policy,
                root / f"{name}-before",
                [*extra, "--visual-quality", "full", "--env-factory", "benchmarks.bench_fast_path:eager_env"],
            )
            after = run_bench(cfg, policy, root / f"{name}-after", extra)
            rows[name] = {
                "before": before,
                "after": after,
                "speedup": round(after["episodes_per_hour"] / before["episodes_per_hour"], 2),
                "steady_speedup": round(after["steady_episodes_per_hour"] / before["steady_episodes_per_hour"], 2),
            }
            print(
                f"{name:24s} before {before['episodes_per_hour']:7.1f} ep/h  after {after['episodes_per_hour']:7.1f} "
                f"ep/h  {rows[name]['speedup']:.1f}x (steady {rows[name]['steady_speedup']:.1f}x)"
            )
    payload = {
        **result_header(
            "vla bench episodes/hour: stock visuals + eager rendering vs low-poly + render on demand",
            "benchmarks.bench_fast_path",
            argv,
        ),
        "task": TASK,
        "policy": cfg.policy or "tiny VLA, 2 training steps (built here)",
        "target_speedup": 4.0,
        "runs": rows,
    }
    write_result(cfg.out, payload)
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
