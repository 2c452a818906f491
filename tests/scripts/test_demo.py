"""scripts/demo.py (`make demo`): the command sequence, resume decisions and argument checks, with `run` faked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import demo


def _fake_run(calls: list[list[str]]):
    """Record each command; leave behind what the real `vla bench` would (results.json)."""

    def run(cmd: list[str]) -> None:
        calls.append(cmd[2:])  # drop [python, -m]
        if cmd[3] == "bench":
            out = Path(cmd[cmd.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            tasks = cmd[cmd.index("--tasks") + 1].split(",")
            block = {"success_rate": 0.5, "ci95": [0.2, 0.8], "episodes": 4}
            rate = {"rate": 0.75}
            grounding = {t: {"seen": {"instructed_goal": rate, "other_goal": rate}} for t in tasks}
            results = {"overall": block, "per_task": {t: block for t in tasks}, "grounding": grounding}
            (out / "results.json").write_text(json.dumps(results))

    return run


def test_quick_demo_runs_record_train_bench_gallery(tmp_path: Path, monkeypatch, capsys) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "run", _fake_run(calls))
    assert demo.main(demo.DemoConfig(quick=True, root=tmp_path, workers=1)) == 0
    assert [c[1] for c in calls] == ["demos", "train", "bench", "gallery"]
    demos, train, bench, _ = calls
    assert demos[demos.index("--episodes") + 1] == "6" and demos[demos.index("--cameras") + 1] == "head"
    assert train[train.index("--steps") + 1] == "150" and "--resume" not in train
    assert train[train.index("--config") + 1] == str(demo.RECIPE)
    assert bench[bench.index("--seeds") + 1] == "100000:100004" and bench[bench.index("--workers") + 1] == "1"
    assert "--resume" not in bench
    assert "success 50%" in capsys.readouterr().out


def test_a_rerun_resumes_training_and_the_benchmark(tmp_path: Path, monkeypatch) -> None:
    last = tmp_path / "runs/demo/checkpoints/last"
    last.mkdir(parents=True)
    (last / "config.json").write_text(json.dumps({"step": 1000}))
    (tmp_path / "results/demo").mkdir(parents=True)
    (tmp_path / "results/demo/episodes.jsonl").write_text("")
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "run", _fake_run(calls))
    demo.main(demo.DemoConfig(root=tmp_path))
    train, bench = calls[1], calls[2]
    assert "--resume" in train and train[train.index("--steps") + 1] == "3000"
    assert "--resume" in bench and bench[bench.index("--workers") + 1] == "2"
    assert bench[bench.index("--seeds") + 1] == "100000:100050"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        demo.DemoConfig(workers=0)
    with pytest.raises(FileNotFoundError, match="recipe"):
        demo.DemoConfig(recipe=tmp_path / "missing.yaml")


def test_multitask_demo_trains_one_checkpoint_on_three_folders(tmp_path: Path, monkeypatch, capsys) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "run", _fake_run(calls))
    assert demo.main(demo.DemoConfig(multitask=True, quick=True, root=tmp_path, workers=1)) == 0
    assert [c[1] for c in calls] == ["demos"] * 3 + ["train", "bench", "gallery", "bench", "gallery"]
    folders = [c[c.index("--out") + 1] for c in calls[:3]]
    assert folders == [str(tmp_path / "data/multitask" / f"{t}-quick") for t in demo.MULTITASK_TASKS]
    assert [c[c.index("--episodes") + 1] for c in calls[:3]] == ["6"] * 3
    train, bench, cf = calls[3], calls[4], calls[6]
    assert train[train.index("--config") + 1] == str(demo.MULTITASK_RECIPE)
    assert train[train.index("--data") + 1] == folders[0] and train[train.index("--more-data") + 1 :][:2] == folders[1:]
    assert bench[bench.index("--instruction-split") + 1] == "both"
    assert bench[bench.index("--tasks") + 1] == ",".join(demo.MULTITASK_TASKS)
    assert "--counterfactual" in cf
    assert cf[cf.index("--tasks") + 1] == "DualArmPickSideCube-v1"
    assert cf[cf.index("--out") + 1].endswith("demo-multitask-quick-counterfactual")
    out = capsys.readouterr().out
    assert "DualArmPlaceShoe-v1: success 50%" in out and "did as told 75%" in out


def test_multitask_records_each_task_s_own_demo_count_unless_episodes_is_given(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "run", _fake_run(calls))
    demo.main(demo.DemoConfig(multitask=True, root=tmp_path, workers=1, steps=10))
    counts = {c[c.index("--task") + 1]: c[c.index("--episodes") + 1] for c in calls if c[1] == "demos"}
    assert counts == {"DualArmLiftBar-v1": "200", "DualArmPlaceShoe-v1": "300", "DualArmPickSideCube-v1": "1500"}
    calls.clear()
    demo.main(demo.DemoConfig(multitask=True, episodes=20, root=tmp_path / "b", workers=1, steps=10))
    assert [c[c.index("--episodes") + 1] for c in calls if c[1] == "demos"] == ["20"] * 3
