"""Policy quality: success over seeds per task for scripted, random and a trained tiny VLA, plus the VLA's
success-vs-training-steps curve -> benchmarks/results/quality.json and quality.png.

    python -m benchmarks.bench_quality --run runs/quality --results results/quality [--seeds 100000:100050] \
        [--curve-seeds 100000:100020] [--curve-steps 500 1000 2000] [--other-seeds 100000:100010] [--workers 2]

Scripted and random run every task on --seeds. The VLA runs its training task (--task) at each curve checkpoint
on --curve-seeds, and its final checkpoint there on --seeds (that folder is extended from the curve seeds);
the tasks it was not trained on get --other-seeds. Every number comes from `vla bench` runs (their folders are
kept under --results and are resumable); training minutes come from the run's own metrics.jsonl (see
training_minutes). The exact commands are recorded in the JSON."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from benchmarks.common import result_header, write_result
from envs.specs import TASKS

RESULTS = Path(__file__).resolve().parent / "results"


def bench(policy: str, tasks: list[str], seeds: str, out: Path, extra: list[str] | None = None) -> tuple[dict, str]:
    """Run (or resume) one `vla bench` without videos; return its results.json and the command line.

    Raises:
        subprocess.CalledProcessError: the run failed.
    """
    cmd = [
        "vla",
        "bench",
        "--policy",
        policy,
        "--tasks",
        *tasks,
        "--seeds",
        seeds,
        "--out",
        str(out),
        "--video",
        "none",
        "--no-progress",
        *(extra or []),
    ]
    if (out / "episodes.jsonl").exists():
        cmd.append("--resume")
    subprocess.run([sys.executable, "-m", "scripts.cli", *cmd[1:]], check=True)
    return json.loads((out / "results.json").read_text()), shlex.join(cmd)


def table(results: dict) -> dict:
    """Per-task success (rate, Wilson 95 % CI, counts) of one results.json."""
    keep = (
        "episodes",
        "successes",
        "success_rate",
        "ci95",
        "success_at_end_rate",
        "errors",
        "timeouts",
        "mean_episode_len",
    )
    rows = {task: {k: row[k] for k in keep} for task, row in results["per_task"].items()}
    rows["overall"] = {k: results["overall"][k] for k in keep}
    return rows


PAUSE_FACTOR = 10.0
"""A log interval longer than this many times the median one is a pause (a run killed and resumed before the
trainer wrote resume markers), counted as a median interval."""


def training_minutes(run: Path) -> dict:
    """Wall-clock training time of the final weights' lineage, from RUN/metrics.jsonl.

    Each logged train row covers the steps since the previous train row. A resumed attempt starts at its
    ``"event": "resume"`` record (written by train.logging_utils.RunLogger), so the pause before it is not counted;
    rows re-logged for the same step replace earlier ones, so each step counts once. A run's first row counts from
    the first record's interval median (startup excluded); intervals over PAUSE_FACTOR x the median (pauses in logs
    without resume markers) count as the median and are reported in ``pauses_excluded``.
    """
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found: --run must be a `vla train` run folder")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if "train/loss" in r]
    if not train_rows:
        raise ValueError(f"{run / 'metrics.jsonl'} has no train/loss rows")
    spans: dict[int, float | None] = {}
    ref_time: float | None = None
    for row in rows:
        if row.get("event") == "resume":
            ref_time = row["time"]
        elif "train/loss" in row:
            spans[row["step"]] = None if ref_time is None else row["time"] - ref_time
            ref_time = row["time"]
    known = sorted(v for v in spans.values() if v is not None)
    median = known[len(known) // 2] if known else 0.0
    pauses = sum(1 for v in known if v > PAUSE_FACTOR * median)
    seconds = sum(median if v is None or v > PAUSE_FACTOR * median else v for v in spans.values())
    last = train_rows[-1]
    return {
        "minutes": round(seconds / 60.0, 1),
        "steps": last["step"],
        "seconds_per_step": round(seconds / max(1, last["step"]), 3),
        "final_train_loss": round(last["train/loss"], 4),
        "resumed": any(r.get("event") == "resume" for r in rows) or pauses > 0,
        "pauses_excluded": pauses,
    }


def plot(path: Path, curve: list[dict], per_policy: dict, task: str) -> None:
    """Success-vs-steps (with Wilson intervals) and a per-task bar chart, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    steps = [c["step"] for c in curve]
    rates = [c["success_rate"] for c in curve]
    err = [[r - c["ci95"][0] for r, c in zip(rates, curve)], [c["ci95"][1] - r for r, c in zip(rates, curve)]]
    ax1.errorbar(steps, rates, yerr=err, marker="o", capsize=3)
    ax1.set(
        title=f"tiny VLA on {task}: success vs training steps",
        xlabel="training step",
        ylabel="success rate",
        ylim=(-0.02, 1.02),
    )
    ax1.grid(alpha=0.3)
    tasks = list(TASKS)
    width = 0.8 / len(per_policy)
    for i, (name, rows) in enumerate(per_policy.items()):
        xs = [j + i * width for j in range(len(tasks))]
        vals = [rows[t]["success_rate"] if t in rows else 0.0 for t in tasks]
        lo = [v - rows[t]["ci95"][0] if t in rows else 0.0 for v, t in zip(vals, tasks)]
        hi = [rows[t]["ci95"][1] - v if t in rows else 0.0 for v, t in zip(vals, tasks)]
        ax2.bar(xs, vals, width, yerr=[lo, hi], capsize=2, label=name)
    ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], [t.replace("-v1", "") for t in tasks], fontsize=8)
    ax2.set(title="success per task (Wilson 95 % CI)", ylabel="success rate", ylim=(0, 1.05))
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="trained run folder (RUN/checkpoints/step_N)")
    parser.add_argument("--results", type=Path, default=Path("results/quality"))
    parser.add_argument("--task", default="DualArmLiftBar-v1", help="the task the VLA was trained on")
    parser.add_argument("--seeds", default="100000:100050")
    parser.add_argument("--curve-seeds", default="100000:100030")
    parser.add_argument(
        "--other-seeds",
        default="100000:100050",
        help="seeds for the VLA on the tasks it was not trained on (scripted/random use --seeds)",
    )
    parser.add_argument(
        "--curve-steps",
        type=int,
        nargs="*",
        default=None,
        help="checkpoint steps for the curve (default: every RUN/checkpoints/step_N)",
    )
    parser.add_argument("--workers", type=int, default=1, help="vla bench --workers for the VLA runs")
    parser.add_argument("--train-command", default="", help="the command that trained --run (recorded)")
    parser.add_argument("--demos-command", default="", help="the command that recorded the demos (recorded)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    return parser.parse_args(argv)


def checkpoint_step(ckpt: Path) -> int:
    """N of a ``step_N`` checkpoint folder."""
    return int(ckpt.name.removeprefix("step_"))


def run_checkpoints(args: argparse.Namespace) -> list[Path]:
    """The run's ``step_N`` checkpoints in step order, checked against --task and --curve-steps before any
    benchmark starts.

    Raises:
        SystemExit: unknown --task, no checkpoints under RUN/checkpoints, or --curve-steps naming a missing one.
    """
    if args.task not in TASKS:
        raise SystemExit(f"--task {args.task!r}: unknown task (known: {sorted(TASKS)})")
    folder = args.run / "checkpoints"
    ckpts = sorted((p for p in folder.glob("step_*") if p.is_dir()), key=checkpoint_step)
    if not ckpts:
        raise SystemExit(f"--run {args.run}: no step_N checkpoints under {folder}")
    missing = set(args.curve_steps or ()) - {checkpoint_step(p) for p in ckpts}
    if missing:
        raise SystemExit(f"--curve-steps {sorted(missing)}: no such checkpoints under {folder}")
    return ckpts


def vla_runs(
    args: argparse.Namespace, ckpts: list[Path], tasks: list[str], commands: list[str]
) -> tuple[list[dict], dict, Path]:
    """Benchmark the run's checkpoints: the curve on --task, the final checkpoint on --seeds there and on
    --other-seeds elsewhere. Returns (curve points, per-task rows, final checkpoint); appends the commands."""
    workers = ["--workers", str(args.workers)]
    final = ckpts[-1]
    curve = []
    for ckpt in ckpts:
        step = checkpoint_step(ckpt)
        if args.curve_steps and step not in args.curve_steps and ckpt != final:
            continue
        # the final checkpoint's folder is extended from --curve-seeds to --seeds (resume adds the seeds)
        seeds = args.seeds if ckpt == final else args.curve_seeds
        res, cmd = bench(f"checkpoint:{ckpt}", [args.task], seeds, args.results / f"vla-{ckpt.name}", workers)
        curve.append({"step": step, "seeds": seeds, **table(res)[args.task]})
        commands.append(cmd)
    rows = {args.task: {k: v for k, v in curve[-1].items() if k != "step"} | {"seeds": args.seeds}}
    others = [t for t in tasks if t != args.task]
    if others:
        res, cmd = bench(f"checkpoint:{final}", others, args.other_seeds, args.results / "vla-other-tasks", workers)
        rows.update({t: {**row, "seeds": args.other_seeds} for t, row in table(res).items() if t != "overall"})
        commands.append(cmd)
    return curve, rows, final


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every benchmark, then write --out (JSON) and its .png; returns 0.

    Raises:
        subprocess.CalledProcessError: a `vla bench` run failed. SystemExit: bad --task / --run / --curve-steps
            (see run_checkpoints). FileNotFoundError / ValueError: no RUN/metrics.jsonl, or no train rows in it.
            All but the first are raised before any benchmark runs; --out is written only at the end.
    """
    args = _parse_args(argv)
    ckpts = run_checkpoints(args)
    training = training_minutes(args.run)
    tasks = list(TASKS)
    commands: list[str] = [c for c in (args.demos_command, args.train_command) if c]
    per_policy: dict[str, dict] = {}
    for name in ("scripted", "random"):
        res, cmd = bench(name, tasks, args.seeds, args.results / name)
        per_policy[name] = table(res)
        commands.append(cmd)
    curve, vla_rows, final = vla_runs(args, ckpts, tasks, commands)
    per_policy[f"tiny VLA ({final.name})"] = vla_rows
    payload = {
        **result_header(
            "policy quality: success over seeds per task (scripted, random, trained tiny VLA)",
            "benchmarks.bench_quality",
            argv,
        ),
        "task_trained": args.task,
        "seeds": args.seeds,
        "curve_seeds": args.curve_seeds,
        "other_task_seeds": args.other_seeds,
        "training": {**training, "run": str(args.run), "checkpoint": str(final)},
        "per_policy": per_policy,
        "curve": curve,
        "commands": commands,
    }
    write_result(args.out, payload)
    plot(args.out.with_suffix(".png"), curve, per_policy, args.task)
    for name, rows in per_policy.items():
        print(name + ": " + ", ".join(f"{task} {row['successes']}/{row['episodes']}" for task, row in rows.items()))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
