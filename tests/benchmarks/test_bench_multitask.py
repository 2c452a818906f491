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
    weights = cfg.data.weights_by_task  # the grounding task needs the most samples (tiny-multitask.yaml's header)
    assert max(weights, key=weights.get) == "DualArmPickSideCube-v1"


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


def test_unseen_token_coverage_counts_tokens_no_seen_phrasing_has(tmp_path: Path) -> None:
    import h5py
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["[UNK]", "lift", "the", "bar", "red", "cube", "raise", "grab"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    tok.save(str(ckpt / "tokenizer.json"))
    folders = []
    for task, seen, unseen in [
        ("DualArmLiftBar-v1", ["lift the bar"], ["raise the bar"]),
        ("DualArmPickColorCube-v1", ["lift the red cube"], ["grab the red cube", "raise the cube"]),
    ]:
        folder = tmp_path / task
        folder.mkdir()
        with h5py.File(folder / "episode_0.hdf5", "w") as f:
            f.attrs["task"] = task
            f.create_dataset("seen", data=seen, dtype=h5py.string_dtype())
            f.create_dataset("unseen", data=unseen, dtype=h5py.string_dtype())
        folders.append(folder)
    cover = bench_multitask.unseen_token_coverage(ckpt, folders)
    assert cover["DualArmLiftBar-v1"] == {
        "unseen_phrasings": 1,
        "tokens": 3,
        "never_in_seen": 1,
        "share": 0.333,
        "examples": ["raise"],
    }
    pick = cover["DualArmPickColorCube-v1"]  # "raise" counts: no task's seen phrasing has it
    assert (pick["tokens"], pick["never_in_seen"], pick["examples"]) == (7, 2, ["grab", "raise"])


def test_single_task_controls_bench_each_run_on_its_own_task(tmp_path: Path, monkeypatch) -> None:
    runs = {"pick": "DualArmPickColorCube-v1", "lift": "DualArmLiftBar-v1"}
    for name in runs:
        ckpt = tmp_path / name / "checkpoints" / "last"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text(json.dumps({"step": 30}))
    calls = []

    def fake_bench(policy, tasks, seeds, out, extra, commands):
        calls.append((policy, tasks, out.name, extra))
        block = {"episodes": 4, "successes": 1, "success_rate": 0.25, "ci95": [0.0, 0.7], "success_at_end_rate": 0.25}
        block |= {"errors": 0, "timeouts": 0, "mean_episode_len": 9.0}
        return {"per_task": {tasks[0]: block}, "overall": block, "grounding": {"told": 1}}

    monkeypatch.setattr(bench_multitask, "_bench", fake_bench)
    monkeypatch.setattr(bench_multitask, "trained_tasks", lambda run: [runs[run.name]])
    monkeypatch.setattr(bench_multitask, "training_minutes", lambda run: {"minutes": 1.5})
    args = bench_multitask._parse_args(
        ["--run", "r", "--blind", "b", "--single", str(tmp_path / "pick"), str(tmp_path / "lift"), "--workers", "1"]
    )
    args.results = tmp_path / "results"
    rows = bench_multitask.single_task_controls(args, [])
    assert [c[2] for c in calls] == ["single-pick", "single-lift"]
    assert calls[0][0] == f"checkpoint:{tmp_path / 'pick' / 'checkpoints' / 'last'}"
    assert calls[0][3] == ["--counterfactual", "--workers", "1"] and calls[1][3] == ["--workers", "1"]
    assert rows[0]["grounding"] == {"told": 1} and "grounding" not in rows[1]
    assert (
        rows[1]["step"] == 30
        and rows[1]["minutes"] == 1.5
        and rows[1]["per_task"]["DualArmLiftBar-v1"]["successes"] == 1
    )


def test_goal_rows_pool_per_task_with_summed_discordant_pairs() -> None:
    rows = {  # the step-16000 comparison's rows (benchmarks/results/multitask4.json)
        "DualArmPickSideCube-v1@goal-left": {
            "n_pairs": 50,
            "success_rate_a": 0.36,
            "success_rate_b": 0.2,
            "b": 13,
            "c": 5,
        },
        "DualArmPickSideCube-v1@goal-right": {
            "n_pairs": 50,
            "success_rate_a": 0.26,
            "success_rate_b": 0.28,
            "b": 6,
            "c": 7,
        },
        "DualArmPickColorCube-v1@goal-red": {
            "n_pairs": 50,
            "success_rate_a": 0.16,
            "success_rate_b": 0.24,
            "b": 4,
            "c": 8,
        },
    }
    pooled = bench_multitask.pool_goals(rows)
    assert list(pooled) == ["DualArmPickColorCube-v1", "DualArmPickSideCube-v1"]
    side = pooled["DualArmPickSideCube-v1"]
    assert (side["n_pairs"], side["b"], side["c"]) == (100, 19, 12)
    assert side["success_rate_a"] == pytest.approx(0.31) and side["success_rate_b"] == pytest.approx(0.24)
    assert side["p_value"] == pytest.approx(0.28104, abs=1e-5)  # statsmodels mcnemar(exact=True) on 19 vs 12
    assert pooled["DualArmPickColorCube-v1"]["n_pairs"] == 50
