"""One tiny VLA for several tasks, and does it follow its instruction? -> benchmarks/results/multitask.json + .png

    python -m benchmarks.bench_multitask --run runs/demo-multitask --blind runs/demo-multitask-blind \
        --data data/multitask/DualArmLiftBar-v1 data/multitask/DualArmPlaceShoe-v1 \
        data/multitask/DualArmPickSideCube-v1 \
        [--seeds 100000:100050] [--curve-seeds 100000:100020] [--curve-steps 1000 2000 3000 4000] [--workers 2]

What it runs (every number comes from `vla bench` folders under --results, resumable, commands recorded):
  * the final checkpoint of --run on every task it was trained on, --seeds, ``--instruction-split both``:
    success per task with seen and with unseen phrasings (same seeds, paired McNemar seen vs unseen);
  * the grounding task(s) with ``--counterfactual`` for the final checkpoint of --run (did-as-told vs
    did-the-other-goal rates), and for --run and --blind (the same recipe trained with ``--constant-instruction``)
    at the same step (``--compare-step``, default their last) on ``--compare-seeds``, with the paired McNemar test
    between the two checkpoints over the same (seed, goal) pairs (``harness.compare``);
  * the success-vs-steps curve: each --curve-steps checkpoint on every task, --curve-seeds, seen phrasings;
  * ``--single RUN ...``: single-task control runs, each on its own task on --seeds (counterfactual if grounding).
``unseen_token_coverage``: per task, the share of its unseen phrasings' tokens that no seen phrasing has.
Training minutes come from each run's metrics.jsonl (``bench_quality.training_minutes``), recording minutes from
each --data folder's dataset.json (created_at -> updated_at).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from benchmarks.bench_quality import bench, checkpoint_step, table, training_minutes
from benchmarks.common import result_header, write_result
from envs.specs import get_task
from harness.compare import compare_runs, comparison_to_dict
from harness.metrics import mcnemar_exact
from harness.review_data import load_run

RESULTS = Path(__file__).resolve().parent / "results"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the multi-task `vla train` run folder")
    p.add_argument("--blind", type=Path, required=True, help="the same recipe with --constant-instruction")
    p.add_argument("--data", type=Path, nargs="+", default=[], help="the demo folders (recording time)")
    p.add_argument("--results", type=Path, default=Path("results/multitask"))
    p.add_argument("--seeds", default="100000:100050")
    p.add_argument("--curve-seeds", default="100000:100020")
    p.add_argument("--curve-steps", type=int, nargs="*", default=[1000, 2000, 3000, 4000])
    p.add_argument(
        "--compare-step",
        type=int,
        default=None,
        help="compare instructed vs blind at this checkpoint step of both runs (default: their last, equal steps)",
    )
    p.add_argument(
        "--compare-seeds",
        default=None,
        help="seeds of that comparison (default: --seeds, where a --final-steps counterfactual run is reused)",
    )
    p.add_argument(
        "--final-steps",
        type=int,
        nargs="*",
        default=None,
        help="checkpoints benchmarked in full (both splits + counterfactual on --seeds; default: the last one)",
    )
    p.add_argument(
        "--single",
        type=Path,
        nargs="*",
        default=[],
        help="single-task control runs (same recipe, one task): each benchmarked on its task on --seeds",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "multitask.json")
    return p.parse_args(argv)


def trained_tasks(run: Path) -> list[str]:
    """The tasks a run's last checkpoint was trained on (config.json ``data.tasks``), in task-table order.

    Raises:
        SystemExit: no checkpoint, or a task that is not in the task table.
    """
    config = run / "checkpoints" / "last" / "config.json"
    if not config.is_file():
        raise SystemExit(f"{run}: no checkpoints/last/config.json: is it a finished `vla train` run?")
    tasks = json.loads(config.read_text())["data"]["tasks"]
    for task in tasks:
        get_task(task)
    return tasks


def recording_minutes(folders: list[Path]) -> dict:
    """{folder task: minutes from dataset.json created_at to updated_at} (wall clock of `vla demos`)."""
    out = {}
    for folder in folders:
        meta = json.loads((folder / "dataset.json").read_text())
        span = datetime.datetime.fromisoformat(meta["updated_at"]) - datetime.datetime.fromisoformat(meta["created_at"])
        out[meta["task"]] = {
            "minutes": round(span.total_seconds() / 60, 1),
            "episodes": len(meta["episodes"]),
            "attempts": meta.get("attempts"),
            "failures": meta.get("failures"),
        }
    return out


def unseen_token_coverage(ckpt: Path, folders: list[Path]) -> dict:
    """Per task: how many tokens of its unseen phrasings (the checkpoint's ``tokenizer.json``) occur in no seen
    phrasing of any task in ``folders`` (the episode files' ``seen`` / ``unseen`` datasets; the instructed run
    trains on seen phrasings only). With the tokenizer and the LLM trained from scratch, those tokens' embeddings
    never received a gradient: the unseen split feeds the model inputs it has never seen.

    Returns {task: {"unseen_phrasings", "tokens", "never_in_seen", "share", "examples"}} ({} without folders).
    """
    import h5py
    from tokenizers import Tokenizer

    from train.episode_checks import read_instructions

    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    pools: dict[str, dict[str, set[str]]] = {}
    for folder in folders:
        for path in sorted(folder.glob("episode_*.hdf5")):
            with h5py.File(path, "r") as f:
                pool = pools.setdefault(str(f.attrs["task"]), {"seen": set(), "unseen": set()})
                for split in ("seen", "unseen"):
                    pool[split].update(read_instructions(f[split]) if split in f else [])
    seen_ids = {i for pool in pools.values() for text in pool["seen"] for i in tok.encode(text).ids}
    out = {}
    for task, pool in sorted(pools.items()):
        encoded = [tok.encode(text) for text in sorted(pool["unseen"])]
        new = [t for e in encoded for t, i in zip(e.tokens, e.ids) if i not in seen_ids]
        total = sum(len(e.ids) for e in encoded)
        out[task] = {
            "unseen_phrasings": len(encoded),
            "tokens": total,
            "never_in_seen": len(new),
            "share": round(len(new) / total, 3) if total else None,
            "examples": sorted(set(new))[:12],
        }
    return out


def split_rows(results: dict, tasks: list[str]) -> dict:
    """{task: {"seen": row, "unseen": row, "mcnemar_seen_vs_unseen": p}} of a --instruction-split both run."""
    from harness.metrics import mcnemar_exact
    from harness.records import EPISODES_FILE, read_records

    records = read_records(Path(results["_folder"]) / EPISODES_FILE).records  # the one reading rule
    rows = {}
    for task in tasks:
        by = {
            s: {r.seed: bool(r.success_once) for r in records if r.task == f"{task}@{s}" and r.status == "ok"}
            for s in ("seen", "unseen")
        }
        shared = sorted(by["seen"].keys() & by["unseen"].keys())
        b = sum(by["seen"][s] and not by["unseen"][s] for s in shared)
        c = sum(by["unseen"][s] and not by["seen"][s] for s in shared)
        rows[task] = {s: table(results)[f"{task}@{s}"] for s in ("seen", "unseen")}
        rows[task]["mcnemar_seen_vs_unseen"] = {"pairs": len(shared), "b": b, "c": c, "p_value": mcnemar_exact(b, c)}
    return rows


def _bench(policy: str, tasks: list[str], seeds: str, out: Path, extra: list[str], commands: list[str]) -> dict:
    res, cmd = bench(policy, tasks, seeds, out, extra)
    commands.append(cmd)
    return {**res, "_folder": str(out)}


def curve_points(args: argparse.Namespace, tasks: list[str], commands: list[str]) -> list[dict]:
    """Per-task success at each --curve-steps checkpoint on --curve-seeds (seen phrasings)."""
    points = []
    for step in args.curve_steps:
        ckpt = args.run / "checkpoints" / f"step_{step}"
        if not ckpt.is_dir():
            raise SystemExit(f"--curve-steps {step}: {ckpt} does not exist")
        res = _bench(
            f"checkpoint:{ckpt}",
            tasks,
            args.curve_seeds,
            args.results / f"curve-{ckpt.name}",
            ["--workers", str(args.workers)],
            commands,
        )
        points.append({"step": checkpoint_step(ckpt), "seeds": args.curve_seeds, "per_task": table(res)})
    return points


def plot(path: Path, curve: list[dict], finals: list[dict], tasks: list[str]) -> None:
    """Success vs training steps per task (Wilson whiskers): the curve points (--curve-seeds) and the fully
    benchmarked checkpoints (--seeds, seen phrasings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for task in tasks:
        pts = [(c["step"], c["per_task"][task]) for c in curve] + [(f["step"], f["rows"][task]["seen"]) for f in finals]
        pts.sort(key=lambda p: p[0])
        rates = [r["success_rate"] for _, r in pts]
        err = [[v - r["ci95"][0] for v, (_, r) in zip(rates, pts)], [r["ci95"][1] - v for v, (_, r) in zip(rates, pts)]]
        ax.errorbar([s for s, _ in pts], rates, yerr=err, marker="o", capsize=3, label=task.replace("-v1", ""))
    ax.set(
        title="one tiny VLA, three tasks: success vs training steps",
        xlabel="training step",
        ylabel="success rate (seen phrasings)",
        ylim=(-0.02, 1.02),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _step_of(run: Path, step: int | None) -> tuple[Path, int]:
    """(checkpoint folder, its step): ``step_N`` for ``step``, else ``last``. SystemExit when it is missing."""
    ckpt = run / "checkpoints" / (f"step_{step}" if step is not None else "last")
    config = ckpt / "config.json"
    if not config.is_file():
        raise SystemExit(f"{ckpt}: no such checkpoint (config.json missing)")
    return ckpt, int(json.loads(config.read_text())["step"])


def grounding_comparison(
    args: argparse.Namespace, grounding: list[str], commands: list[str], told: dict[int, Path]
) -> dict:
    """Counterfactual runs of the instructed and the blind checkpoint at the same step, and their paired test.
    ``told``: the final steps' counterfactual folders of --run; on --seeds the comparison reuses them (resumed:
    nothing reruns) instead of running the same (seed, goal) episodes again."""
    (ckpt_a, step_a), (ckpt_b, step_b) = _step_of(args.run, args.compare_step), _step_of(args.blind, args.compare_step)
    if step_a != step_b:
        raise SystemExit(f"--run is at step {step_a}, --blind at {step_b}: compare equal steps (--compare-step N)")
    seeds = args.compare_seeds or args.seeds
    flags = ["--counterfactual", "--workers", str(args.workers)]
    out: dict = {"step": step_a, "seeds": seeds}
    folders = {name: args.results / f"compare-{name}-step_{step_a}" for name in ("instructed", "instruction_blind")}
    if seeds == args.seeds and step_a in told:
        folders["instructed"] = told[step_a]
    for name, ckpt in (("instructed", ckpt_a), ("instruction_blind", ckpt_b)):
        out[name] = _bench(f"checkpoint:{ckpt}", grounding, seeds, folders[name], flags, commands)["grounding"]
    comp = compare_runs(load_run(folders["instructed"]), load_run(folders["instruction_blind"]))
    out["paired"] = comparison_to_dict(comp)
    out["paired_per_task"] = pool_goals(out["paired"].get("per_task", {}))
    return out


def pool_goals(per_task: dict[str, dict]) -> dict[str, dict]:
    """Pool a counterfactual comparison's ``TASK@goal-G`` rows per task: {task: {n_pairs, success_rate_a,
    success_rate_b, b, c, p_value}}, p the exact McNemar on the summed discordant counts (``harness.metrics``).
    Rows are ``vla compare`` per_task rows (keys n_pairs, success_rate_a/b, b, c); labels without ``@`` pool on
    their own.

    Raises:
        KeyError: a row without one of those keys."""
    pooled: dict[str, dict] = {}
    for label, row in per_task.items():
        acc = pooled.setdefault(label.split("@")[0], {"n_pairs": 0, "a": 0.0, "b_succ": 0.0, "b": 0, "c": 0})
        acc["n_pairs"] += row["n_pairs"]
        acc["a"] += row["success_rate_a"] * row["n_pairs"]
        acc["b_succ"] += row["success_rate_b"] * row["n_pairs"]
        acc["b"], acc["c"] = acc["b"] + row["b"], acc["c"] + row["c"]
    return {
        task: {
            "n_pairs": acc["n_pairs"],
            "success_rate_a": round(acc["a"] / acc["n_pairs"], 4),
            "success_rate_b": round(acc["b_succ"] / acc["n_pairs"], 4),
            "b": acc["b"],
            "c": acc["c"],
            "p_value": mcnemar_exact(acc["b"], acc["c"]),
        }
        for task, acc in sorted(pooled.items())
    }


def single_task_controls(args: argparse.Namespace, commands: list[str]) -> list[dict]:
    """Each --single run's last checkpoint on the task(s) it was trained on, --seeds (counterfactual for a
    grounding task): does a task fail in the multi-task run only, or alone too?"""
    rows = []
    for run in args.single:
        ckpt, step = _step_of(run, None)
        tasks = trained_tasks(run)
        extra = ["--counterfactual"] if any(get_task(t).goals for t in tasks) else []
        res = _bench(
            f"checkpoint:{ckpt}",
            tasks,
            args.seeds,
            args.results / f"single-{run.name}",
            [*extra, "--workers", str(args.workers)],
            commands,
        )
        row = {"run": str(run), "step": step, **training_minutes(run), "per_task": table(res)}
        rows.append({**row, "grounding": res["grounding"]} if extra else row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every benchmark, then write --out and its .png; returns 0.

    Raises:
        SystemExit: a run without a finished checkpoint, a missing curve / comparison checkpoint, no grounding
            task (all before any benchmark runs, except a missing curve checkpoint).
        subprocess.CalledProcessError: a `vla bench` run failed (--out is only written at the end).
    """
    args = _parse_args(argv)
    tasks = trained_tasks(args.run)
    grounding = [t for t in tasks if get_task(t).goals]
    if not grounding:
        raise SystemExit(f"{args.run} was trained on {tasks}: none of them is a grounding task")
    _, last_step = _step_of(args.run, None)
    steps = sorted(args.final_steps or [last_step])
    ckpts = [_step_of(args.run, step)[0] for step in steps]
    _step_of(args.run, args.compare_step), _step_of(args.blind, args.compare_step)
    for run in args.single:  # every control run has a finished checkpoint before anything runs
        _step_of(run, None)
    workers, commands = ["--workers", str(args.workers)], []
    by_step, told_folders = {}, {}
    for step, ckpt in zip(steps, ckpts):
        res = _bench(
            f"checkpoint:{ckpt}",
            tasks,
            args.seeds,
            args.results / f"step_{step}-both-splits",
            ["--instruction-split", "both", *workers],
            commands,
        )
        told = _bench(
            f"checkpoint:{ckpt}",
            grounding,
            args.seeds,
            args.results / f"counterfactual-instructed-step_{step}",
            ["--counterfactual", *workers],
            commands,
        )
        told_folders[step] = Path(told["_folder"])
        by_step[step] = {
            "step": step,
            "seeds": args.seeds,
            "rows": split_rows(res, tasks),
            "counterfactual": told["grounding"],
        }
    curve = curve_points(args, tasks, commands)
    comparison = grounding_comparison(args, grounding, commands, told_folders)
    final = by_step[steps[-1]]
    blind_run = {**training_minutes(args.blind), "run": str(args.blind), "compared_step": comparison["step"]}
    payload = {
        **result_header(
            "one tiny VLA for several tasks: per task x instruction split, counterfactual "
            "grounding vs an instruction-blind baseline, success vs steps",
            "benchmarks.bench_multitask",
            argv,
        ),
        "tasks": tasks,
        "seeds": args.seeds,
        "training": {
            "instructed": {**training_minutes(args.run), "run": str(args.run)},
            "instruction_blind": blind_run,
        },
        "recording": recording_minutes(args.data),
        "final": final,
        "by_step": list(by_step.values()),
        "instructed_vs_blind": comparison,
        "unseen_token_coverage": unseen_token_coverage(ckpts[-1], args.data),
        "single_task_controls": single_task_controls(args, commands),
        "curve": curve,
        "commands": commands,
    }
    write_result(args.out, payload)
    plot(args.out.with_suffix(".png"), curve, list(by_step.values()), tasks)
    for task, row in final["rows"].items():
        print(
            f"{task}: seen {row['seen']['successes']}/{row['seen']['episodes']}, "
            f"unseen {row['unseen']['successes']}/{row['unseen']['episodes']}"
        )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
