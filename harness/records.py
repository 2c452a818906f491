"""The benchmark's files: ``OUT/episodes.jsonl`` (one record per finished episode) and ``OUT/results.json``.

episodes.jsonl -- one JSON object per line, appended (flush + fsync) as each episode finishes:

    {"schema_version": 1, "task": str, "seed": int, "status": "ok" | "error" | "timeout",
     "success_once": bool | null, "success_at_end": bool | null, "episode_len": int, "policy_calls": int,
     "instruction": str, "error": str | null, "video": "videos/<name>.mp4" | null,
     "timing_ms": {"observation" | "inference" | "simulation": {"mean", "p50", "p90", "p99", "n"}},
     "wall_s": float, "worker": int, "finished_at": ISO-8601 str}

    success_once: the task's success signal was true at some step; success_at_end: true at the last step;
    both null unless status is ok. Episode identity is (task, seed): a file never holds a key twice.
    A SIGKILL can at worst leave a truncated last line; readers ignore it and a resumed run redoes that episode.

results.json -- written atomically (temp + rename) by :func:`aggregate` + :func:`write_json_atomic`; keys in
:func:`aggregate`'s docstring. Success rates count only status-ok episodes: errors and timeouts are reported
separately and are never failures.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.metrics import pool_timing_summaries, wilson_interval

SCHEMA_VERSION = 1
EPISODES_FILE = "episodes.jsonl"
RESULTS_FILE = "results.json"
STATUSES = ("ok", "error", "timeout")
TIMING_KINDS = ("observation", "inference", "simulation")


class RecordsError(ValueError):
    """A malformed episodes.jsonl; the message names the file and line."""


def episode_key(record: Mapping[str, Any]) -> tuple[str, int]:
    """(task, seed): the identity of an episode."""
    return str(record["task"]), int(record["seed"])


def read_records(path: Path) -> list[dict]:
    """Read episodes.jsonl; a missing file gives [].

    A last line without its trailing newline (the process was killed mid-write) is ignored. Any other unreadable line, or a (task, seed) key appearing twice, raises :class:`RecordsError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    # Every record is written with its "\n": a last line without one is a write cut short by a kill (it is
    # ignored here and cut by repair_tail, so the episode is redone).
    lines = lines[:-1]
    records, seen = [], set()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordsError(f"{path}:{i}: not valid JSON ({err.msg}); repair or delete the line") from err
        missing = [k for k in ("task", "seed", "status") if k not in rec]
        if missing:
            raise RecordsError(f"{path}:{i}: record lacks keys {missing}")
        key = episode_key(rec)
        if key in seen:
            raise RecordsError(f"{path}:{i}: episode (task={key[0]!r}, seed={key[1]}) recorded twice")
        seen.add(key)
        records.append(rec)
    return records


def repair_tail(path: Path) -> bool:
    """Truncate a partial last line (left by a kill mid-write) so later appends start on a fresh line.

    Returns True when something was cut.
    """
    path = Path(path)
    if not path.exists():
        return False
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return False
        cut = data.rfind(b"\n") + 1  # 0 when the only line is partial
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return True


def rewrite_records(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Replace episodes.jsonl by ``records`` atomically (used to drop error records before retrying them)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    _atomic_write_text(Path(path), text)


class RecordSink:
    """Appends finished-episode records to episodes.jsonl, one line each, flushed and fsynced.

    A key already in the file (or written earlier through this sink) is dropped, so a record that arrives twice
    -- e.g. from a worker that was restarted after its result was already sent -- is never double-counted.
    """

    def __init__(self, path: Path, existing: Iterable[tuple[str, int]] = ()):
        self.path = Path(path)
        self.written: set[tuple[str, int]] = set(existing)
        self.new_records: list[dict] = []

    def write(self, record: Mapping[str, Any]) -> bool:
        """Append ``record``; returns False (and writes nothing) when its key was already written."""
        key = episode_key(record)
        if key in self.written:
            return False
        line = json.dumps(dict(record), sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.written.add(key)
        self.new_records.append(dict(record))
        return True


def _rate_block(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == "ok"]
    n = len(ok)
    k = sum(bool(r["success_once"]) for r in ok)
    k_end = sum(bool(r["success_at_end"]) for r in ok)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else None,
        "ci95": list(wilson_interval(k, n)),
        "success_at_end_rate": k_end / n if n else None,
        "ci95_at_end": list(wilson_interval(k_end, n)),
        "errors": sum(r["status"] == "error" for r in records),
        "timeouts": sum(r["status"] == "timeout" for r in records),
        "mean_episode_len": (sum(int(r["episode_len"]) for r in ok) / n) if n else None,
    }


def aggregate(records: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    """Success statistics and timings of a set of episode records (the data part of results.json).

    Returns:
        {"per_task": {task: block}, "overall": block (pooled over tasks), "timing_ms": {kind: summary}} where
        block = {"episodes": n_ok, "successes": k, "success_rate": k / n_ok (None if n_ok == 0),
        "ci95": [lo, hi] (Wilson 95 %), "success_at_end_rate", "ci95_at_end", "errors", "timeouts",
        "mean_episode_len" (ok episodes)}; success counts use success_once.
    """
    per_task = {t: _rate_block([r for r in records if r["task"] == t]) for t in tasks}
    timing = {
        kind: pool_timing_summaries([r.get("timing_ms", {}).get(kind, {}) for r in records]) for kind in TIMING_KINDS
    }
    return {"per_task": per_task, "overall": _rate_block(list(records)), "timing_ms": timing}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` via a temp file + rename (never half-written)."""
    _atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
