"""episodes.jsonl reading/appending (truncated tails, duplicates) and results aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.records import (
    RecordsError,
    RecordSink,
    aggregate,
    read_records,
    repair_tail,
    write_json_atomic,
)


def _rec(task: str, seed: int, status: str = "ok", once: bool | None = True, end: bool | None = True,
         length: int = 10) -> dict:
    return {"task": task, "seed": seed, "status": status, "success_once": once, "success_at_end": end,
            "episode_len": length, "timing_ms": {"inference": {"mean": 2.0, "p50": 2.0, "p90": 2.0, "p99": 2.0, "n": 4}}}


def test_sink_appends_lines_and_drops_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    sink = RecordSink(path)
    assert sink.write(_rec("a", 1)) and sink.write(_rec("a", 2))
    assert not sink.write(_rec("a", 1, status="error")), "a key written twice must be dropped"
    assert [r["seed"] for r in read_records(path)] == [1, 2]
    assert path.read_text().endswith("\n")
    resumed = RecordSink(path, existing={("a", 2)})
    assert not resumed.write(_rec("a", 2))


def test_truncated_last_line_is_ignored_then_repaired(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    RecordSink(path).write(_rec("a", 1))
    full = json.dumps(_rec("a", 2))
    with open(path, "a") as f:
        f.write(full[:25])  # killed mid-write
    assert [r["seed"] for r in read_records(path)] == [1]
    with open(path, "a") as f:  # even a complete object without its newline counts as unfinished
        f.write(full[25:])
    assert [r["seed"] for r in read_records(path)] == [1]
    assert repair_tail(path) and path.read_text().count("\n") == 1
    assert not repair_tail(path)
    RecordSink(path).write(_rec("a", 2))
    assert [r["seed"] for r in read_records(path)] == [1, 2]


def test_corrupt_middle_line_and_duplicates_raise(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_text(json.dumps(_rec("a", 1)) + "\n{oops\n" + json.dumps(_rec("a", 2)) + "\n")
    with pytest.raises(RecordsError, match="episodes.jsonl:2"):
        read_records(path)
    path.write_text(json.dumps(_rec("a", 1)) + "\n" + json.dumps(_rec("a", 1)) + "\n")
    with pytest.raises(RecordsError, match="recorded twice"):
        read_records(path)
    assert read_records(tmp_path / "missing.jsonl") == []


def test_aggregate_excludes_errors_and_timeouts() -> None:
    records = [
        _rec("a", 0), _rec("a", 1, once=True, end=False, length=20), _rec("a", 2, once=False, end=False, length=40),
        _rec("a", 3, status="error", once=None, end=None, length=3),
        _rec("b", 0, status="timeout", once=None, end=None, length=0), _rec("b", 1, once=False, end=False),
    ]
    agg = aggregate(records, ["a", "b"])
    a, b, overall = agg["per_task"]["a"], agg["per_task"]["b"], agg["overall"]
    assert (a["episodes"], a["successes"], a["errors"], a["timeouts"]) == (3, 2, 1, 0)
    assert a["success_rate"] == pytest.approx(2 / 3) and a["success_at_end_rate"] == pytest.approx(1 / 3)
    assert a["mean_episode_len"] == pytest.approx((10 + 20 + 40) / 3)
    assert (b["episodes"], b["successes"], b["timeouts"]) == (1, 0, 1)
    assert (overall["episodes"], overall["successes"], overall["errors"], overall["timeouts"]) == (4, 2, 1, 1)
    assert overall["ci95"][0] < 0.5 < overall["ci95"][1]
    assert agg["timing_ms"]["inference"]["n"] == 4 * len(records)
    empty = aggregate([], ["a"])["per_task"]["a"]
    assert empty["success_rate"] is None and empty["ci95"] == [0.0, 1.0]


def test_write_json_atomic_leaves_no_temp(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "r.json", {"x": 1})
    write_json_atomic(tmp_path / "r.json", {"x": 2})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
