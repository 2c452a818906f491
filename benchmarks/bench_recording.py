"""Demo recording speed on this machine -> benchmarks/results/recording.json.

    .venv/bin/python -m benchmarks.bench_recording [--task DualArmPlaceShoe-v1] [--episodes 1]
    .venv/bin/python -m benchmarks.bench_recording --task DualArmLiftBar-v1 --only "demo settings"

Each configuration records real episodes with `vla demos` in a fresh subprocess (so renderer settings such as
``LP_NUM_THREADS`` take effect) and reports seconds per episode and per step, demos/hour, and the file size.
Rendering dominates on a CPU (Mesa lavapipe): the configurations compare camera counts, image sizes, lavapipe's
thread count and the arm visuals (stock ``full`` vs low-poly ``fast``). The "demo settings" rows record
``--worker-episodes`` episodes as `make demo` does (head camera, 128 px) with 1 and with 2 worker processes, so
their demos/hour include process start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import result_header, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "recording.json"

CONFIGS = [
    {"name": "4 cameras 256px (seed layout)", "cameras": "head,left_wrist,right_wrist,low", "size": 256, "env": {}},
    {"name": "2 views 256px (head + left wrist)", "cameras": "head,left_wrist", "size": 256, "env": {}},
    {"name": "2 views 128px", "cameras": "head,left_wrist", "size": 128, "env": {}},
    {"name": "2 views 64px", "cameras": "head,left_wrist", "size": 64, "env": {}},
    {
        "name": "2 views 128px, LP_NUM_THREADS=1",
        "cameras": "head,left_wrist",
        "size": 128,
        "env": {"LP_NUM_THREADS": "1"},
    },
    {
        "name": "2 views 128px, LP_NUM_THREADS=4",
        "cameras": "head,left_wrist",
        "size": 128,
        "env": {"LP_NUM_THREADS": "4"},
    },
    {"name": "1 view 128px (head)", "cameras": "head", "size": 128, "env": {}},
    {"name": "1 view 128px (head), full visuals", "cameras": "head", "size": 128, "env": {}, "visual_quality": "full"},
    {"name": "demo settings, 1 worker", "cameras": "head", "size": 128, "env": {}, "workers": 1, "long": True},
    {"name": "demo settings, 2 workers", "cameras": "head", "size": 128, "env": {}, "workers": 2, "long": True},
]


def run_config(cfg: dict, task: str, episodes: int) -> dict:
    """Record ``episodes`` episodes with one configuration; return timings and sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demos"
        cmd = [
            sys.executable,
            "-m",
            "scripts.cli",
            "demos",
            "--task",
            task,
            "--episodes",
            str(episodes),
            "--out",
            str(out),
            "--image-size",
            str(cfg["size"]),
            "--cameras",
            cfg["cameras"],
            "--no-progress",
            "--visual-quality",
            cfg.get("visual_quality", "fast"),
            "--workers",
            str(cfg.get("workers", 1)),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, **cfg["env"]}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        manifest = json.loads((out / "dataset.json").read_text())
        steps = sum(e["num_steps"] for e in manifest["episodes"])
        size = sum(p.stat().st_size for p in out.glob("*.hdf5"))
    return {
        **{k: cfg[k] for k in ("name", "cameras", "size", "env")},
        "visual_quality": cfg.get("visual_quality", "fast"),
        "workers": cfg.get("workers", 1),
        "command": " ".join(cmd[1:]),
        "episodes": episodes,
        "steps": steps,
        "wall_s": wall,
        "seconds_per_episode": wall / episodes,
        "ms_per_step": 1000 * wall / steps,
        "demos_per_hour": round(episodes / wall * 3600, 1),
        "mb_per_episode": size / episodes / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="DualArmPlaceShoe-v1")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--worker-episodes", type=int, default=30, help="episodes of the 'demo settings' rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", help="run only configurations whose name contains one of these")
    args = parser.parse_args(argv)
    rows = []
    for cfg in CONFIGS:
        if args.only and not any(s in cfg["name"] for s in args.only):
            continue
        row = run_config(cfg, args.task, args.worker_episodes if cfg.get("long") else args.episodes)
        rows.append(row)
        print(
            f"{row['name']:40s} {row['seconds_per_episode']:7.1f} s/episode  {row['ms_per_step']:6.0f} ms/step  "
            f"{row['mb_per_episode']:6.1f} MB/episode"
        )
    payload = {
        **result_header(
            f"`vla demos` recording speed, {args.task}, includes process start-up and HDF5 writing",
            "benchmarks.bench_recording",
            argv,
        ),
        "configs": rows,
    }
    write_result(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
