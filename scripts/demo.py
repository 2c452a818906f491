"""`make demo`: the main job end to end on this machine, with the same `vla` commands a user would type.

    record expert demos -> train the tiny VLA -> benchmark the checkpoint across seeds -> gallery -> results table

Every step prints its command first, shows progress, and is resumable: rerunning `make demo` continues an
interrupted recording, resumes training from the last checkpoint and skips finished episodes of the benchmark.
``--quick`` (``make demo QUICK=1``) is the same pipeline shrunk to a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import tyro

RECIPE = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes" / "tiny-liftbar.yaml"


@dataclasses.dataclass
class DemoConfig:
    """Record demos, train the tiny VLA, benchmark it and build the gallery."""

    quick: bool = False
    """A few-minute version: fewer demos, training steps and evaluation seeds (a smoke run, not a good policy)."""
    task: str = "DualArmLiftBar-v1"
    """Task to record, train on and evaluate (`vla envs` lists them)."""
    recipe: Path = RECIPE
    """Training recipe (a `vla train --config` YAML): cameras, proprio, steps, batch, lr, ..."""
    episodes: int | None = None
    """Expert demos to record (default: 200, quick: 6)."""
    steps: int | None = None
    """Training steps (default: the recipe's, quick: 150)."""
    eval_seeds: str | None = None
    """Benchmark seeds A:B, disjoint from the training seeds (default: 100000:100050, quick: 100000:100004)."""
    action_noise: float = 0.01
    """`vla demos --action-noise`: DART-style std (m) of a correlated offset on the executed targets, so the demos
    show recoveries (0: plain demos; 0.01 took the recipe from 33/50 to 47/50 on an Intel Xeon, README)."""
    workers: int = 2
    """Worker processes of the recording and of the benchmark, each with cores/workers math threads (recording:
    benchmarks/results/recording.json; benchmark: benchmarks/results/harness.json)."""
    root: Path = Path(".")
    """Folder that receives data/, runs/ and results/."""

    def __post_init__(self) -> None:
        self.episodes = self.episodes or (6 if self.quick else 200)
        self.eval_seeds = self.eval_seeds or ("100000:100004" if self.quick else "100000:100050")
        if self.episodes < 1 or self.workers < 1:
            raise ValueError(f"episodes and workers must be >= 1, got {self.episodes} and {self.workers}")
        if not self.recipe.is_file():
            raise FileNotFoundError(f"recipe {self.recipe} not found")


def _recipe(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


VLA = [sys.executable, "-m", "scripts.cli"]
"""How the demo runs `vla` (this interpreter, so it works before the venv is on PATH)."""


def run(cmd: list[str]) -> None:
    """Print one `vla` command as the user would type it, run it (output streams to the terminal); raise on
    failure."""
    shown = ["vla", *cmd[len(VLA) :]] if cmd[: len(VLA)] == VLA else cmd
    print(f"\n\033[1;34m$ {shlex.join(shown)}\033[0m", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"\033[2m({time.perf_counter() - start:.0f} s)\033[0m", flush=True)


def _trained_step(run_dir: Path) -> int | None:
    config = run_dir / "checkpoints" / "last" / "config.json"
    return json.loads(config.read_text())["step"] if config.exists() else None


def main(cfg: DemoConfig) -> int:
    vla = VLA
    recipe = _recipe(cfg.recipe)
    steps = cfg.steps or (150 if cfg.quick else int(recipe.get("steps", 3000)))
    tag = "demo-quick" if cfg.quick else "demo"
    data = cfg.root / "data" / f"{cfg.task}{'-quick' if cfg.quick else ''}"
    run_dir, results = cfg.root / "runs" / tag, cfg.root / "results" / tag
    cameras = recipe.get("cameras", ["head"])
    t0 = time.perf_counter()

    print(f"1/4 record {cfg.episodes} scripted-expert demos of {cfg.task}")
    run(
        [
            *vla,
            "demos",
            "--task",
            cfg.task,
            "--episodes",
            str(cfg.episodes),
            "--out",
            str(data),
            "--image-size",
            "128",
            "--cameras",
            ",".join(cameras),
            "--seed-start",
            "10000",
            "--workers",
            str(cfg.workers),
            "--action-noise",
            str(cfg.action_noise),
        ]
    )

    print(f"2/4 train the tiny VLA for {steps} steps ({cfg.recipe.name})")
    done = _trained_step(run_dir)
    if done is None or done < steps:
        cmd = [
            *vla,
            "train",
            "--config",
            str(cfg.recipe),
            "--data",
            str(data),
            "--out",
            str(run_dir),
            "--steps",
            str(steps),
        ]
        run(cmd + (["--resume"] if done is not None else []))
    else:
        print(f"   {run_dir} is already trained to step {done}")

    print(f"3/4 benchmark the checkpoint on {cfg.task}, seeds {cfg.eval_seeds} (videos of every episode)")
    bench = [
        *vla,
        "bench",
        "--policy",
        f"checkpoint:{run_dir / 'checkpoints' / 'last'}",
        "--tasks",
        cfg.task,
        "--seeds",
        cfg.eval_seeds,
        "--out",
        str(results),
        "--video",
        "all",
        "--workers",
        str(cfg.workers),
    ]
    run(bench + (["--resume"] if (results / "episodes.jsonl").exists() else []))

    print("4/4 build the gallery")
    run([*vla, "gallery", str(results)])
    summary = json.loads((results / "results.json").read_text())["overall"]
    rate = summary["success_rate"]
    lo, hi = summary["ci95"]
    print(
        f"\n\033[1mDone in {(time.perf_counter() - t0) / 60:.1f} min.\033[0m {cfg.task}: success "
        f"{rate:.0%} (95 % CI {lo:.0%}-{hi:.0%}) over {summary['episodes']} seeds."
    )
    print(f"Gallery: {(results / 'index.html').resolve()}")
    print(
        "Next: the same command pair on your data -- vla train --data DIR --out RUN ...; "
        "vla bench --policy checkpoint:RUN/checkpoints/last --benchmark dual-arm-v1 --out OUT"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(DemoConfig)))
