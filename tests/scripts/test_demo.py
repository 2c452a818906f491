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
            (out / "results.json").write_text(
                json.dumps({"overall": {"success_rate": 0.5, "ci95": [0.2, 0.8], "episodes": 4}})
            )

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
