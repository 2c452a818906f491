"""benchmarks/bench_multitask.py's pieces: per-split rows with the paired seen-vs-unseen test, recording minutes,
the refusal of unfinished runs; and the multi-task recipe names the demo's tasks."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))
from bench_fixtures import fake_config  # noqa: E402
from fakes import make_goal_policy, make_grounding_fake_env  # noqa: E402

from benchmarks import bench_multitask  # noqa: E402
from harness.bench import run_bench  # noqa: E402
from scripts.demo import MULTITASK_RECIPE, MULTITASK_TASKS  # noqa: E402
from train.train_config import TrainConfig  # noqa: E402

TASKS = ["DualArmLiftBar-v1", "DualArmPickColorCube-v1"]


def test_split_rows_pair_seen_and_unseen_on_the_same_seeds(tmp_path: Path) -> None:
    out = tmp_path / "both"
    cfg = fake_config(out, tasks=tuple(TASKS), seeds="0:9", instruction_split="both")
    run_bench(cfg, env_factory=make_grounding_fake_env, policy_factory=functools.partial(make_goal_policy))
    results = {**json.loads((out / "results.json").read_text()), "_folder": str(out)}
    rows = bench_multitask.split_rows(results, TASKS)
    lift = rows["DualArmLiftBar-v1"]
    assert lift["seen"]["episodes"] == lift["unseen"]["episodes"] == 9
    # the fake env ignores the split: same outcomes, so no discordant pair
    assert lift["mcnemar_seen_vs_unseen"] == {"pairs": 9, "b": 0, "c": 0, "p_value": 1.0}
    assert rows["DualArmPickColorCube-v1"]["seen"]["success_rate"] == 1.0


def test_recording_minutes_and_unfinished_runs(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    meta = {"task": "DualArmLiftBar-v1", "episodes": [{}] * 3, "attempts": 4, "failures": 1}
    meta |= {"created_at": "2026-12-02T13:29:47+00:00", "updated_at": "2026-12-02T13:32:29+00:00"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    assert bench_multitask.recording_minutes([folder]) == {
        "DualArmLiftBar-v1": {"minutes": 2.7, "episodes": 3, "attempts": 4, "failures": 1}
    }
    with pytest.raises(SystemExit, match="checkpoints/last/config.json"):
        bench_multitask.trained_tasks(tmp_path / "no-run")


def test_the_multitask_recipe_weights_the_demo_tasks(tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml(MULTITASK_RECIPE, data=tmp_path / "data", out=tmp_path / "run")
    assert set(cfg.data.weights_by_task) == set(MULTITASK_TASKS)
    assert len(set(cfg.data.weights_by_task.values())) == 1, "equal task weights"


def test_the_blind_comparison_reuses_the_final_counterfactual_run_on_the_same_seeds(
    tmp_path: Path, monkeypatch
) -> None:
    for run in ("run", "blind"):
        ckpt = tmp_path / run / "checkpoints" / "step_7"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text(json.dumps({"step": 7}))
    benched: list[Path] = []
    monkeypatch.setattr(bench_multitask, "_bench", lambda p, t, s, out, e, c: benched.append(out) or {"grounding": {}})
    monkeypatch.setattr(bench_multitask, "load_run", lambda folder: folder)
    monkeypatch.setattr(bench_multitask, "compare_runs", lambda a, b: (a, b))
    monkeypatch.setattr(bench_multitask, "comparison_to_dict", lambda comp: {"a": str(comp[0]), "b": str(comp[1])})
    told = {7: tmp_path / "results" / "counterfactual-instructed-step_7"}
    args = bench_multitask._parse_args(["--run", str(tmp_path / "run"), "--blind", str(tmp_path / "blind")])
    args.results, args.seeds, args.compare_step = tmp_path / "results", "0:50", 7
    out = bench_multitask.grounding_comparison(args, ["DualArmPickColorCube-v1"], [], told)
    assert benched == [told[7], tmp_path / "results" / "compare-instruction_blind-step_7"]
    assert out["paired"]["a"] == str(told[7]) and out["step"] == 7
    benched.clear()
    args.compare_seeds = "0:30"  # other seeds: a run of its own
    bench_multitask.grounding_comparison(args, ["DualArmPickColorCube-v1"], [], told)
    assert benched[0] == tmp_path / "results" / "compare-instructed-step_7"
