"""Scripted-expert success per task over seeds, state only (no rendering) -> benchmarks/results/experts.json.

    .venv/bin/python -m benchmarks.bench_experts [--seeds 0:100] [--tasks T ...] [--out PATH]

Success is ManiSkill's/our task's ``success`` at the expert's last step (the same criterion `vla demos` uses to
keep an episode); ``success_once`` counts any step. Failed seeds are listed so they can be replayed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.common import result_header, write_result
from envs.recording import run_expert_episode
from envs.specs import TASKS

RESULTS = Path(__file__).resolve().parent / "results" / "experts.json"


def parse_seeds(text: str) -> range:
    """``"A:B"`` -> range(A, B) (B exclusive)."""
    start, _, stop = text.partition(":")
    return range(int(start), int(stop))


def bench_task(task: str, seeds: range) -> dict:
    """Run the expert for every seed of ``task``; return counts, failed seeds, mean steps and wall time."""
    from envs.experts import make_expert
    from envs.wrapper import make_env

    env = make_env(task, cameras=())
    expert = make_expert(task)
    ok = once = 0
    failed, steps = [], []
    t0 = time.perf_counter()
    try:
        for seed in seeds:
            r = run_expert_episode(env, expert, seed, record=False)
            ok += r["success"]
            once += r["success_once"]
            steps.append(r["steps"])
            if not r["success"]:
                failed.append(seed)
    finally:
        env.close()
    wall = time.perf_counter() - t0
    n = len(seeds)
    return {
        "episodes": n,
        "successes": ok,
        "success_rate": ok / n,
        "success_once_rate": once / n,
        "failed_seeds": failed,
        "mean_steps": sum(steps) / n,
        "seconds_per_episode": wall / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0:100", help="seed range A:B (B exclusive)")
    parser.add_argument("--tasks", nargs="*", default=sorted(TASKS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--min-rate", type=float, default=0.95, help="exit 1 if any task is below this rate")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    per_task = {}
    for task in args.tasks:
        per_task[task] = bench_task(task, seeds)
        r = per_task[task]
        print(
            f"{task:24s} {r['successes']:3d}/{r['episodes']} ({r['success_rate']:.0%})  "
            f"{r['mean_steps']:.0f} steps  {r['seconds_per_episode']:.2f} s/episode  failed: {r['failed_seeds']}"
        )
    payload = {
        **result_header(
            "scripted expert success, state only (no rendering), CPU simulator", "benchmarks.bench_experts", argv
        ),
        "seeds": f"{seeds.start}:{seeds.stop}",
        "per_task": per_task,
    }
    write_result(args.out, payload)
    print(f"wrote {args.out}")
    return 0 if all(r["success_rate"] >= args.min_rate for r in per_task.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
