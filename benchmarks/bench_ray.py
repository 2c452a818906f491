"""The cost of running `vla bench` on Ray, and a scale-out table -> benchmarks/results/ray.json.

    .venv/bin/python -m benchmarks.bench_ray [--seeds 24] [--scale-seeds 24]

1. **Overhead**: the same episodes (scripted policy, DualArmLiftBar-v1, head camera 128 px, a video of every
   episode, every episode its full 150 steps via ``--no-end-on-success``) with ``--workers 2`` (local worker
   processes), with ``--executor ray --workers 2`` (two Ray actors on a local Ray instance the run starts), and
   with ``--executor ray --ray-address auto`` joining a running cluster (``ray start --head --num-cpus 2`` before,
   ``ray stop`` after: how a cluster user runs), one fresh ``vla bench`` process each, one after the other, with
   nothing else running. Episodes/hour are each run's results.json throughput
   (start-up included: worker spawn vs Ray start + actor start, as a user's run of that size has);
   ``steady_episodes_per_hour`` leaves start-up out (episodes x workers / summed episode wall time). Overhead =
   1 - ray / local. Outcomes of the two runs are compared episode by episode.
2. **Scale-out** (state only: ``--video none``, the scripted policy reads no camera, so nothing is rendered): Ray
   with 1 and 2 actors, measured, run in this process so that the driver's own CPU time per episode is measured
   (``time.process_time``; actors are other processes). The table for more actors is **extrapolated, not
   measured**: n actors x the 1-actor rate x the efficiency measured at 2 actors, capped by the driver's capacity
   (1 / its CPU seconds per episode). It assumes one core per actor (nodes like this one) and the measured
   per-episode driver cost; it ignores the network and the object store's transfer of videos.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import result_header, vla_command, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "ray.json"
TASK = "DualArmLiftBar-v1"
SEED0 = 100000
VOLATILE = ("timing_ms", "wall_s", "finished_at", "worker")


@dataclasses.dataclass
class RayBenchConfig:
    """Ray overhead and scale-out benchmark settings."""

    seeds: int = 32
    """Episodes per overhead run (seeds 100000..)."""
    scale_seeds: int = 24
    """Episodes per scale-out run (state only)."""
    out: Path = RESULTS
    """Output JSON."""

    def __post_init__(self) -> None:
        if self.seeds < 2 or self.scale_seeds < 2:
            raise ValueError(f"seeds and scale_seeds must be >= 2, got {self.seeds} and {self.scale_seeds}")


def _bench_args(seeds: int, out: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "--policy",
        "scripted",
        "--tasks",
        TASK,
        "--seeds",
        f"{SEED0}:{SEED0 + seeds}",
        "--out",
        str(out),
        "--no-end-on-success",
        "--no-progress",
        *extra,
    ]


def _summary(out: Path, workers: int, command: list[str]) -> dict:
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return {
        "command": "vla " + " ".join(command),
        "episodes": len(records),
        "episodes_per_hour": results["throughput"]["episodes_per_hour"],
        "wall_s": results["throughput"]["wall_s"],
        "steady_episodes_per_hour": round(len(records) * workers / sum(r["wall_s"] for r in records) * 3600, 1),
        "success_rate": results["overall"]["success_rate"],
        "statuses": sorted({r["status"] for r in records}),
        "_outcomes": {(r["task"], r["seed"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in records},
    }


def _ray_cli(*args: str) -> None:
    ray = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray), *args], check=True, capture_output=True)


def overhead(cfg: RayBenchConfig, root: Path) -> dict:
    """Part 1: --workers 2 vs Ray with 2 actors (started by the run; joining a running cluster), videos on."""
    runs = {}
    for name, extra in {
        "local_workers_2": ["--workers", "2"],
        "ray_actors_2": ["--executor", "ray", "--workers", "2"],
        "ray_actors_2_running_cluster": ["--executor", "ray", "--workers", "2", "--ray-address", "auto"],
    }.items():
        args = _bench_args(cfg.seeds, root / name, "--image-size", "128", "--video", "all", *extra)
        if "--ray-address" in extra:
            _ray_cli("start", "--head", "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats")
        try:
            subprocess.run(vla_command(*args), check=True, capture_output=True)
        finally:
            if "--ray-address" in extra:
                _ray_cli("stop", "--force")
        runs[name] = _summary(root / name, 2, args)
        row = runs[name]
        print(f"{name:30s} {row['episodes_per_hour']:8.1f} ep/h (steady {row['steady_episodes_per_hour']})")
    local = runs["local_workers_2"]
    outcomes = local.pop("_outcomes")
    for name in ("ray_actors_2", "ray_actors_2_running_cluster"):
        ray = runs[name]
        ray["identical_outcomes_to_local"] = ray.pop("_outcomes") == outcomes
        ray["overhead"] = round(1 - ray["episodes_per_hour"] / local["episodes_per_hour"], 3)
        ray["overhead_steady"] = round(1 - ray["steady_episodes_per_hour"] / local["steady_episodes_per_hour"], 3)
    return {**runs, "target_overhead": 0.10}


def scale_run(cfg: RayBenchConfig, root: Path, actors: int) -> dict:
    """One state-only Ray run in this process; returns throughput and the driver's CPU seconds per episode."""
    import tyro

    from harness.bench import run_bench
    from harness.config import BenchConfig

    args = _bench_args(cfg.scale_seeds, root / f"scale-{actors}", "--video", "none", "--executor", "ray")
    bench_cfg = tyro.cli(BenchConfig, args=[*args[1:], "--workers", str(actors)])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run_bench(bench_cfg)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    row = _summary(bench_cfg.out, actors, [*args, "--workers", str(actors)])
    row.pop("_outcomes")
    row["driver_cpu_s_per_episode"] = round(cpu / row["episodes"], 4)
    row["driver_wall_s"] = round(wall, 2)
    return row


def scale_out(cfg: RayBenchConfig, root: Path) -> dict:
    """Part 2: measured 1 and 2 actors, then the extrapolated table."""
    one, two = scale_run(cfg, root, 1), scale_run(cfg, root, 2)
    per_actor = one["steady_episodes_per_hour"]
    efficiency = two["steady_episodes_per_hour"] / (2 * per_actor)
    driver_cpu = max(one["driver_cpu_s_per_episode"], two["driver_cpu_s_per_episode"])
    ceiling = 3600.0 / driver_cpu if driver_cpu > 0 else float("inf")
    table = [
        {"actors": n, "episodes_per_hour": round(min(n * per_actor * efficiency, ceiling), 1)}
        for n in (1, 2, 4, 8, 16, 32, 64, 128)
    ]
    return {
        "measured": {"actors_1": one, "actors_2": two},
        "efficiency_at_2_actors": round(efficiency, 3),
        "driver_ceiling_episodes_per_hour": round(ceiling, 1),
        "extrapolated": table,
        "extrapolation": (
            "EXTRAPOLATED, not measured: n x (1-actor steady rate) x (efficiency measured at 2 actors), capped by "
            "the driver's capacity (3600 / its CPU seconds per episode); assumes one core per actor and the "
            "measured per-episode driver cost, ignores network and video transfer"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    import tyro

    cfg = tyro.cli(RayBenchConfig, args=argv)
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        root = Path(tmp)
        part1 = overhead(cfg, root)
        part2 = scale_out(cfg, root)
    payload = {
        **result_header("vla bench on Ray: overhead vs local workers, and scale-out", "benchmarks.bench_ray", argv),
        "task": TASK,
        "policy": "scripted",
        "overhead": part1,
        "scale_out": part2,
    }
    write_result(cfg.out, payload)
    for name in ("ray_actors_2", "ray_actors_2_running_cluster"):
        row = part1[name]
        print(f"{name}: overhead {row['overhead']:.1%} (steady {row['overhead_steady']:.1%})")
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
