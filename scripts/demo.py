"""`make demo`: the main job end to end on this machine, with the same `vla` commands a user would type.

    record expert demos -> train the tiny VLA -> benchmark the checkpoint across seeds -> gallery -> results table

``--multitask`` (``make demo MULTITASK=1``): the same for three tasks at once (one folder per task, one
checkpoint), benchmarked per task with seen and unseen instructions, plus a counterfactual run of the grounding
task (each seed once per goal).

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

from envs.specs import get_task

RECIPES = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes"
RECIPE = RECIPES / "tiny-liftbar.yaml"
MULTITASK_RECIPE = RECIPES / "tiny-multitask.yaml"
MULTITASK_DEMOS = {"DualArmLiftBar-v1": 200, "DualArmPlaceShoe-v1": 300, "DualArmPickSideCube-v1": 1500}
"""Demos per task of ``--multitask`` (tiny-multitask.yaml's data; recorded in 2.8 / 6.0 / 22.1 min with 2 workers on
a 2-core AMD EPYC, README): the grounding task must locate a 5 cm cube and needed 10x the demos of the others."""
MULTITASK_TASKS = tuple(MULTITASK_DEMOS)
"""The tasks of ``--multitask``: two single-goal tasks and the language-grounding task (PickSideCube)."""


@dataclasses.dataclass
class DemoConfig:
    """Record demos, train the tiny VLA, benchmark it and build the gallery."""

    quick: bool = False
    """A few-minute version: fewer demos, training steps and evaluation seeds (a smoke run, not a good policy)."""
    multitask: bool = False
    """One VLA for LiftBar, PlaceShoe and PickSideCube (tiny-multitask.yaml, MULTITASK_DEMOS demos); seen/unseen
    and counterfactual benchmarks (`make demo MULTITASK=1`)."""
    task: str = "DualArmLiftBar-v1"
    """Task to record, train on and evaluate (`vla envs` lists them)."""
    recipe: Path | None = None
    """Training recipe (a `vla train --config` YAML; default tiny-liftbar.yaml, multitask: tiny-multitask.yaml)."""
    episodes: int | None = None
    """Expert demos to record per task (default: 200, multitask: MULTITASK_DEMOS, quick: 6)."""
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
        self.recipe = Path(self.recipe or (MULTITASK_RECIPE if self.multitask else RECIPE))
        self.episodes = self.episodes or (6 if self.quick else None if self.multitask else 200)
        self.eval_seeds = self.eval_seeds or ("100000:100004" if self.quick else "100000:100050")
        if (self.episodes is not None and self.episodes < 1) or self.workers < 1:
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


def _episodes(cfg: DemoConfig, task: str) -> int:
    """Demos to record of ``task``: --episodes, else the multitask table's count (KeyError: a task not in it)."""
    return cfg.episodes if cfg.episodes is not None else MULTITASK_DEMOS[task]


def _record(cfg: DemoConfig, task: str, data: Path, cameras: list[str]) -> None:
    run(
        [
            *VLA,
            "demos",
            "--task",
            task,
            "--episodes",
            str(_episodes(cfg, task)),
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


def _train(cfg: DemoConfig, folders: list[Path], run_dir: Path, steps: int) -> None:
    done = _trained_step(run_dir)
    if done is not None and done >= steps:
        print(f"   {run_dir} is already trained to step {done}")
        return
    more = ["--more-data", *map(str, folders[1:])] if len(folders) > 1 else []
    cmd = [*VLA, "train", "--config", str(cfg.recipe), "--data", str(folders[0]), *more, "--out", str(run_dir)]
    run(cmd + ["--steps", str(steps)] + (["--resume"] if done is not None else []))


def _bench(cfg: DemoConfig, run_dir: Path, tasks: list[str], results: Path, *extra: str) -> dict:
    bench = [*VLA, "bench", "--policy", f"checkpoint:{run_dir / 'checkpoints' / 'last'}", "--tasks", ",".join(tasks)]
    bench += ["--seeds", str(cfg.eval_seeds), "--out", str(results), "--video", "all", "--workers", str(cfg.workers)]
    run(bench + list(extra) + (["--resume"] if (results / "episodes.jsonl").exists() else []))
    run([*VLA, "gallery", str(results)])
    return json.loads((results / "results.json").read_text())


def _line(name: str, block: dict) -> str:
    lo, hi = block["ci95"]
    return f"{name}: success {block['success_rate']:.0%} (95 % CI {lo:.0%}-{hi:.0%}) over {block['episodes']} seeds"


def main(cfg: DemoConfig) -> int:
    recipe = _recipe(cfg.recipe)
    steps = cfg.steps or (150 if cfg.quick else int(recipe.get("steps", 3000)))
    tag = ("demo-multitask" if cfg.multitask else "demo") + ("-quick" if cfg.quick else "")
    tasks = list(MULTITASK_TASKS if cfg.multitask else (cfg.task,))
    root = cfg.root / "data" / ("multitask" if cfg.multitask else "")
    folders = [root / f"{t}{'-quick' if cfg.quick else ''}" for t in tasks]
    run_dir, results = cfg.root / "runs" / tag, cfg.root / "results" / tag
    t0 = time.perf_counter()

    counts = ", ".join(f"{_episodes(cfg, t)} of {t}" for t in tasks)
    print(f"1/4 record scripted-expert demos: {counts}")
    for task, folder in zip(tasks, folders):
        _record(cfg, task, folder, recipe.get("cameras", ["head"]))
    print(f"2/4 train the tiny VLA for {steps} steps ({cfg.recipe.name})")
    _train(cfg, folders, run_dir, steps)
    print(f"3/4 benchmark the checkpoint on {', '.join(tasks)}, seeds {cfg.eval_seeds} (videos of every episode)")
    split = ["--instruction-split", "both"] if cfg.multitask else []
    out = _bench(cfg, run_dir, tasks, results, *split)
    lines = [_line(t, b) for t, b in out["per_task"].items()]
    if cfg.multitask:  # the grounding task once per goal on the same seeds: did it do what it was told?
        grounding = [t for t in tasks if get_task(t).goals]
        cf = _bench(cfg, run_dir, grounding, Path(f"{results}-counterfactual"), "--counterfactual")
        for task, g in cf["grounding"].items():
            told, other = g["seen"]["instructed_goal"], g["seen"]["other_goal"]
            lines.append(f"{task} counterfactual: did as told {told['rate']:.0%}, the other goal {other['rate']:.0%}")
    print(f"4/4 galleries built\n\n\033[1mDone in {(time.perf_counter() - t0) / 60:.1f} min.\033[0m")
    print("\n".join(lines))
    print(f"Gallery: {(results / 'index.html').resolve()}")
    print(
        "Next: the same command pair on your data -- vla train --data DIR --out RUN ...; "
        "vla bench --policy checkpoint:RUN/checkpoints/last --benchmark dual-arm-v1 --out OUT"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(DemoConfig)))
