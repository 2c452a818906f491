"""episodes.jsonl: the EpisodeRecord type, the one reading rule (torn last lines, duplicates), and aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.files import write_json_atomic
from harness.records import EpisodeRecord, RecordsError, RecordSink, aggregate, read_records, repair_tail


def _rec(
    task: str, seed: int, status: str = "ok", once: bool | None = True, end: bool | None = True, length: int = 10
) -> EpisodeRecord:
    return EpisodeRecord(
        task=task,
        seed=seed,
        status=status,
        success_once=once,
        success_at_end=end,
        episode_len=length,
        timing_ms={"inference": {"mean": 2.0, "p50": 2.0, "p90": 2.0, "p99": 2.0, "n": 4}},
    )


def _seeds(path: Path) -> list[int]:
    return [r.seed for r in read_records(path).records]


def test_record_round_trips_through_json() -> None:
    rec = _rec("a", 3, once=False, end=False)
    again = EpisodeRecord.from_json(json.loads(rec.to_line()), "here")
    assert again == rec and again.key == ("a", 3) and again.outcome() == "failure"
    assert _rec("a", 1, status="error", once=None, end=None).outcome() == "error"


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"task": "a", "seed": 1, "status": "ok", "episode_len": 3}, "missing key 'success_once'"),
        (
            {"task": "a", "seed": True, "status": "ok", "success_once": True, "success_at_end": True, "episode_len": 3},
            "key 'seed' must be int, got bool True",
        ),
        ({"task": "a", "seed": 1, "status": "done", "episode_len": 3}, r"key 'status' must be one of \['ok'"),
        ({"task": "a", "seed": 1, "status": "error", "episode_len": -1}, "'episode_len' must be >= 0"),
        ({"schema_version": 9, "task": "a", "seed": 1, "status": "error", "episode_len": 0}, "schema_version 9"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_malformed_records_name_the_key(obj, message) -> None:
    with pytest.raises(RecordsError, match=f"^f.jsonl:4: .*{message}"):
        EpisodeRecord.from_json(obj, "f.jsonl:4")


def test_sink_appends_lines_and_drops_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    sink = RecordSink(path)
    assert sink.write(_rec("a", 1)) and sink.write(_rec("a", 2))
    assert not sink.write(_rec("a", 1, status="error")), "a key written twice must be dropped"
    assert _seeds(path) == [1, 2]
    assert path.read_text().endswith("\n")
    resumed = RecordSink(path, existing={("a", 2)})
    assert not resumed.write(_rec("a", 2))


def test_torn_last_line_is_ignored_then_repaired(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    RecordSink(path).write(_rec("a", 1))
    full = _rec("a", 2).to_line()
    with open(path, "a") as f:
        f.write(full[:25])  # killed mid-write
    assert _seeds(path) == [1] and read_records(path).torn_line == 2
    with open(path, "a") as f:  # even a complete object without its newline counts as unfinished
        f.write(full[25:-1])
    assert _seeds(path) == [1]
    assert repair_tail(path) and path.read_text().count("\n") == 1
    assert not repair_tail(path) and read_records(path).torn_line is None
    RecordSink(path).write(_rec("a", 2))
    assert _seeds(path) == [1, 2]


def test_torn_last_line_with_a_newline_follows_the_same_rule(tmp_path: Path) -> None:
    """A partial line that did get its newline (the gallery used to skip it while --resume refused the folder)."""
    path = tmp_path / "episodes.jsonl"
    RecordSink(path).write(_rec("a", 1))
    with open(path, "a") as f:
        f.write('{"task": "a", "seed": 2, "sta\n')
    assert _seeds(path) == [1] and read_records(path).torn_line == 2
    assert repair_tail(path) and path.read_text() == _rec("a", 1).to_line()


def test_corrupt_middle_line_and_duplicates_raise(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_text(_rec("a", 1).to_line() + "{oops\n" + _rec("a", 2).to_line())
    with pytest.raises(RecordsError, match="episodes.jsonl:2: not valid JSON"):
        read_records(path)
    path.write_text(_rec("a", 1).to_line() + _rec("b", 1).to_line() + _rec("a", 1).to_line())
    with pytest.raises(RecordsError, match=r"episodes.jsonl:3: .*seed=1\) was already recorded at line 1"):
        read_records(path)
    assert read_records(tmp_path / "missing.jsonl").records == []


def test_aggregate_excludes_errors_and_timeouts() -> None:
    records = [
        _rec("a", 0),
        _rec("a", 1, once=True, end=False, length=20),
        _rec("a", 2, once=False, end=False, length=40),
        _rec("a", 3, status="error", once=None, end=None, length=3),
        _rec("b", 0, status="timeout", once=None, end=None, length=0),
        _rec("b", 1, once=False, end=False),
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
    by_end = aggregate(records, ["a"], metric="success_at_end")["per_task"]["a"]
    assert by_end["successes"] == 1


def test_write_json_atomic_leaves_no_temp(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "r.json", {"x": 1})
    write_json_atomic(tmp_path / "r.json", {"x": 2})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
