"""benchmarks/bench_quality.py: training minutes of a resumed run, per-task tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_quality import table, training_minutes


def _write_metrics(run: Path, rows: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_training_minutes_of_an_uninterrupted_run(tmp_path: Path) -> None:
    # log every 10 steps, 2 s per step; the first row (startup) counts as the median interval (20 s)
    rows = [{"step": s, "time": 1000.0 + 2.0 * s + 30.0, "train/loss": 1.0 / s} for s in range(10, 101, 10)]
    rows.insert(3, {"step": 30, "time": 1100.0, "val/loss": 0.5})  # val rows are ignored
    _write_metrics(tmp_path, rows)
    got = training_minutes(tmp_path)
    assert got["steps"] == 100 and not got["resumed"]
    assert got["minutes"] == pytest.approx(200.0 / 60.0, abs=0.05)
    assert got["final_train_loss"] == pytest.approx(0.01)


def test_training_minutes_skips_the_pause_before_a_resume_marker(tmp_path: Path) -> None:
    # killed after step 60 (last checkpoint 40); the logger truncated rows > 40 and wrote a resume marker
    first = [{"step": s, "time": 2.0 * s, "train/loss": 1.0} for s in range(10, 41, 10)]
    marker = [{"step": 40, "time": 3600.0, "event": "resume"}]
    second = [{"step": s, "time": 3600.0 + 3.0 * (s - 40), "train/loss": 0.5} for s in range(50, 101, 10)]
    _write_metrics(tmp_path, first + marker + second)
    got = training_minutes(tmp_path)
    assert got["resumed"] and got["steps"] == 100 and got["pauses_excluded"] == 0
    # first row: median interval; 10-40 at 20 s; 50-100 at 30 s each from the marker
    median = sorted([20.0] * 3 + [30.0] * 6)[4]
    assert got["minutes"] == pytest.approx((median + 3 * 20.0 + 6 * 30.0) / 60.0, abs=0.05)


def test_training_minutes_counts_a_pause_without_marker_as_one_interval(tmp_path: Path) -> None:
    rows = [{"step": s, "time": 2.0 * s, "train/loss": 1.0} for s in range(10, 51, 10)]
    rows += [{"step": s, "time": 5000.0 + 2.0 * s, "train/loss": 1.0} for s in range(60, 101, 10)]
    _write_metrics(tmp_path, rows)
    got = training_minutes(tmp_path)
    assert got["pauses_excluded"] == 1 and got["resumed"]
    assert got["minutes"] == pytest.approx(200.0 / 60.0, abs=0.05)


def test_training_minutes_without_train_rows_is_an_error(tmp_path: Path) -> None:
    _write_metrics(tmp_path, [{"step": 10, "time": 1.0, "val/loss": 0.3}])
    with pytest.raises(ValueError, match="metrics.jsonl has no train/loss rows"):
        training_minutes(tmp_path)


def test_table_keeps_per_task_and_overall_rows() -> None:
    row = {
        "episodes": 4,
        "successes": 2,
        "success_rate": 0.5,
        "ci95": [0.15, 0.85],
        "success_at_end_rate": 0.25,
        "errors": 0,
        "timeouts": 0,
        "mean_episode_len": 12.0,
        "extra": "dropped",
    }
    got = table({"per_task": {"A": row}, "overall": row})
    assert set(got) == {"A", "overall"} and "extra" not in got["A"] and got["A"]["ci95"] == [0.15, 0.85]


@pytest.fixture
def no_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if bench_quality would start a `vla bench` run."""
    import benchmarks.bench_quality as bq

    def _refuse(*args, **kwargs):
        raise AssertionError("a benchmark ran although the input was invalid")

    monkeypatch.setattr(bq, "bench", _refuse)


def _run_folder(tmp_path: Path, steps: tuple[int, ...] = (500, 1000), metrics: bool = True) -> Path:
    run = tmp_path / "run"
    for step in steps:
        (run / "checkpoints" / f"step_{step}").mkdir(parents=True)
    if metrics:
        _write_metrics(
            run, [{"step": 10, "time": 1.0, "train/loss": 1.0}, {"step": 20, "time": 2.0, "train/loss": 0.5}]
        )
    run.mkdir(exist_ok=True)
    return run


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("no checkpoints", [], "no step_N checkpoints under"),
        ("missing curve step", ["--curve-steps", "500", "750"], r"--curve-steps \[750\]: no such checkpoints"),
        ("unknown task", ["--task", "NoSuchTask-v1"], "--task 'NoSuchTask-v1': unknown task"),
    ],
)
def test_bad_arguments_fail_before_any_benchmark_and_write_nothing(
    tmp_path: Path, no_bench, kind, extra, message
) -> None:
    from benchmarks.bench_quality import main

    run = _run_folder(tmp_path, steps=() if kind == "no checkpoints" else (500, 1000))
    out = tmp_path / "quality.json"
    with pytest.raises(SystemExit, match=message):
        main(["--run", str(run), "--results", str(tmp_path / "res"), "--out", str(out), *extra])
    assert not out.exists() and not (tmp_path / "res").exists()


def test_a_run_without_metrics_fails_before_any_benchmark(tmp_path: Path, no_bench) -> None:
    from benchmarks.bench_quality import main

    run = _run_folder(tmp_path, metrics=False)
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found"):
        main(["--run", str(run), "--results", str(tmp_path / "res"), "--out", str(tmp_path / "q.json")])
    assert not (tmp_path / "q.json").exists()
