"""The benchmark's files: ``OUT/episodes.jsonl`` (one :class:`EpisodeRecord` per finished episode) and
``OUT/results.json`` (:func:`aggregate` + provenance).

episodes.jsonl -- one JSON object per line (keys sorted), appended, flushed and fsync-ed as each episode finishes:

    {"schema_version": 1, "task": str, "seed": int, "status": "ok" | "error" | "timeout",
     "success_once": bool | null, "success_at_end": bool | null, "episode_len": int, "policy_calls": int,
     "instruction": str, "other_goal": bool | null, "error": str | null, "video": "videos/<name>.mp4" | null,
     "video_error": str | null,
     "timing_ms": {"observation" | "inference" | "simulation": {"mean", "p50", "p90", "p99", "n"}},
     "wall_s": float, "worker": int, "finished_at": ISO-8601 str}

    success_once: the task's success signal was true at some step; success_at_end: true at the last step; both
    null unless status is ok. other_goal (grounding tasks only): a goal other than the instructed one was reached
    at some step. Episode identity is (task, seed); ``task`` is a task-variant label (``harness.variants``: e.g.
    ``TASK@unseen``, ``TASK@goal-red``) in runs with --instruction-split both or --counterfactual.

One reading rule, for every reader (resume, results, gallery, compare): every record is written with its newline,
so a LAST line that lacks it or does not parse is a write cut short by a kill -- it is ignored (and reported), and
``--resume`` cuts it off (:func:`repair_tail`) and runs that episode again. Any other unreadable line, a record
with a missing or mistyped key, or a (task, seed) recorded twice is a :class:`RecordsError` naming the file and
line.

results.json -- written atomically; keys in :func:`aggregate`'s docstring plus the run's config, policy,
throughput and provenance (``harness.bench``). Success rates count only status-ok episodes: errors and timeouts
are reported separately and are never failures.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from common.files import write_text_atomic
from harness.metrics import pool_timing_summaries, wilson_interval

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
EPISODES_FILE = "episodes.jsonl"
RESULTS_FILE = "results.json"
STATUSES = ("ok", "error", "timeout")
OUTCOMES = ("success", "failure", "error", "timeout")
TIMING_KINDS = ("observation", "inference", "simulation")
Status = Literal["ok", "error", "timeout"]
Key = tuple[str, int]


class RecordsError(ValueError):
    """A malformed episodes.jsonl or run folder; the message names the file and line."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode: one line of episodes.jsonl (see the module docstring for the meaning of each field).

    ``episode_len`` counts env steps; ``wall_s`` is seconds; ``timing_ms`` holds per-step summaries in ms.
    """

    task: str
    seed: int
    status: Status
    success_once: bool | None
    success_at_end: bool | None
    episode_len: int
    policy_calls: int = 0
    instruction: str = ""
    other_goal: bool | None = None
    error: str | None = None
    video: str | None = None
    video_error: str | None = None
    timing_ms: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    wall_s: float = 0.0
    worker: int = 0
    finished_at: str = dataclasses.field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> Key:
        """Episode identity (task, seed)."""
        return (self.task, self.seed)

    def succeeded(self, metric: str = "success_once") -> bool | None:
        """The flag named by ``metric`` (success_once | success_at_end); None unless status is ok."""
        if self.status != "ok":
            return None
        return bool(getattr(self, metric))

    def outcome(self, metric: str = "success_once") -> str:
        """One of OUTCOMES: success / failure for status ok (by ``metric``), else the status."""
        if self.status != "ok":
            return self.status
        return "success" if self.succeeded(metric) else "failure"

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this record (every field; mappings copied)."""
        out = dataclasses.asdict(self)
        out["timing_ms"] = {k: dict(v) for k, v in self.timing_ms.items()}
        return out

    def to_line(self) -> str:
        """One line of episodes.jsonl (sorted keys, trailing newline)."""
        return json.dumps(self.to_json(), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, obj: Any, where: str) -> EpisodeRecord:
        """Validate a decoded JSON object; ``where`` ("FILE:LINE") prefixes every error.

        Raises:
            RecordsError: not an object, an unsupported schema_version, a missing required key, or a key of the
                wrong type (bool is never accepted as an int); the message names the key and expected vs actual.
        """
        if not isinstance(obj, dict):
            raise RecordsError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        check_schema_version(obj, where)
        status = _expect(obj, "status", (str,), where)
        if status not in STATUSES:
            raise RecordsError(f"{where}: key 'status' must be one of {list(STATUSES)}, got {status!r}")
        ok = status == "ok"
        length = _expect(obj, "episode_len", (int,), where)
        if length < 0:
            raise RecordsError(f"{where}: key 'episode_len' must be >= 0, got {length}")
        timing = _expect(obj, "timing_ms", (dict,), where, required=False) or {}
        return cls(
            task=_expect(obj, "task", (str,), where),
            seed=_expect(obj, "seed", (int,), where),
            status=status,
            success_once=_expect(obj, "success_once", (bool,), where, required=ok),
            success_at_end=_expect(obj, "success_at_end", (bool,), where, required=ok),
            episode_len=length,
            policy_calls=_expect(obj, "policy_calls", (int,), where, required=False) or 0,
            instruction=_expect(obj, "instruction", (str,), where, required=False) or "",
            other_goal=_expect(obj, "other_goal", (bool,), where, required=False),
            error=_expect(obj, "error", (str,), where, required=False),
            video=_expect(obj, "video", (str,), where, required=False),
            video_error=_expect(obj, "video_error", (str,), where, required=False),
            timing_ms=timing,
            wall_s=float(_expect(obj, "wall_s", (int, float), where, required=False) or 0.0),
            worker=_expect(obj, "worker", (int,), where, required=False) or 0,
            finished_at=_expect(obj, "finished_at", (str,), where, required=False) or "",
            schema_version=int(obj.get("schema_version", SCHEMA_VERSION)),
        )


def _expect(obj: dict, key: str, types: tuple[type, ...], where: str, required: bool = True) -> Any:
    """obj[key] checked against ``types`` (None allowed when not required); RecordsError naming the key."""
    if key not in obj or (obj[key] is None and not required):
        if required:
            raise RecordsError(f"{where}: missing key {key!r}")
        return None
    value = obj[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise RecordsError(f"{where}: key {key!r} must be {expected}, got {type(value).__name__} {value!r}")
    return value


def check_schema_version(obj: Mapping[str, Any], where: str) -> None:
    """Raise RecordsError when obj's schema_version (default 1) is not one this reader knows."""
    version = obj.get("schema_version", 1)
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise RecordsError(
            f"{where}: schema_version {version!r} is not supported (this reader knows "
            f"{list(SUPPORTED_SCHEMA_VERSIONS)})"
        )


@dataclasses.dataclass(frozen=True)
class RecordsFile:
    """What :func:`read_records` found: the records in file order, the 1-based line of each, and the line of a
    torn last line that was ignored (None when the file ended cleanly)."""

    records: list[EpisodeRecord]
    lines: dict[Key, int]
    torn_line: int | None = None


def _lines(data: bytes) -> tuple[list[bytes], int | None]:
    """Complete lines, and the index of a torn last line (no newline, or not a JSON object) if any."""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    elif parts and parts[-1].strip():
        return parts, len(parts) - 1  # no trailing newline: cut short by a kill
    last = max((i for i, p in enumerate(parts) if p.strip()), default=None)
    if last is not None:
        try:
            if isinstance(json.loads(parts[last]), dict):
                return parts, None
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        return parts, last
    return parts, None


def read_records(path: str | os.PathLike) -> RecordsFile:
    """Read episodes.jsonl (module docstring: the one reading rule); a missing file gives no records.

    Raises:
        RecordsError: an unreadable line other than a torn last one, a malformed record, or a key recorded twice.
    """
    path = Path(path)
    if not path.exists():
        return RecordsFile([], {})
    parts, torn = _lines(path.read_bytes())
    records: list[EpisodeRecord] = []
    lines: dict[Key, int] = {}
    for index, raw in enumerate(parts):
        if index == torn or not raw.strip():
            continue
        where = f"{path}:{index + 1}"
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RecordsError(f"{where}: not valid JSON ({err}); repair or delete the line") from err
        record = EpisodeRecord.from_json(obj, where)
        if record.key in lines:
            raise RecordsError(
                f"{where}: episode (task={record.task!r}, seed={record.seed}) was already recorded at line "
                f"{lines[record.key]} (two runs wrote this folder at once?); delete one of the two lines"
            )
        lines[record.key] = index + 1
        records.append(record)
    return RecordsFile(records, lines, None if torn is None else torn + 1)


def repair_tail(path: str | os.PathLike) -> bool:
    """Cut a torn last line (the reading rule) so later appends start on a fresh line; True when something was cut."""
    path = Path(path)
    if not path.exists():
        return False
    data = path.read_bytes()
    parts, torn = _lines(data)
    if torn is None:
        return False
    keep = b"".join(p + b"\n" for p in parts[:torn])
    with open(path, "rb+") as handle:
        handle.truncate(len(keep))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def rewrite_records(path: str | os.PathLike, records: Sequence[EpisodeRecord]) -> None:
    """Replace episodes.jsonl by ``records`` atomically (used to drop error records before retrying them)."""
    write_text_atomic(path, "".join(r.to_line() for r in records))


class RecordSink:
    """Appends records to episodes.jsonl, one line each, flushed and fsync-ed.

    A key already in the file (or written earlier through this sink) is dropped, so a record that arrives twice
    -- e.g. from a worker that was restarted after its result was already sent -- is never double-counted.
    """

    def __init__(self, path: str | os.PathLike, existing: Iterable[Key] = ()):
        self.path = Path(path)
        self.written: set[Key] = set(existing)
        self.new_records: list[EpisodeRecord] = []

    def write(self, record: EpisodeRecord) -> bool:
        """Append ``record``; returns False (and writes nothing) when its key was already written."""
        if record.key in self.written:
            return False
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(record.to_line())
            handle.flush()
            os.fsync(handle.fileno())
        self.written.add(record.key)
        self.new_records.append(record)
        return True


def rate_block(records: Sequence[EpisodeRecord], metric: str = "success_once") -> dict[str, Any]:
    """Success of ``records`` (any statuses): {"episodes": n_ok, "successes": k, "success_rate": k / n_ok or None,
    "ci95": [lo, hi] (Wilson 95 %), "success_at_end_rate", "ci95_at_end", "errors", "timeouts",
    "mean_episode_len" (ok episodes, env steps)}; ``successes`` and ``success_rate`` use ``metric``."""
    ok = [r for r in records if r.status == "ok"]
    n = len(ok)
    k = sum(bool(r.succeeded(metric)) for r in ok)
    k_end = sum(bool(r.success_at_end) for r in ok)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else None,
        "ci95": list(wilson_interval(k, n)),
        "success_at_end_rate": k_end / n if n else None,
        "ci95_at_end": list(wilson_interval(k_end, n)),
        "errors": sum(r.status == "error" for r in records),
        "timeouts": sum(r.status == "timeout" for r in records),
        "mean_episode_len": (sum(r.episode_len for r in ok) / n) if n else None,
    }


def aggregate(records: Sequence[EpisodeRecord], tasks: Sequence[str], metric: str = "success_once") -> dict[str, Any]:
    """The data part of results.json: {"per_task": {task: rate_block}, "overall": rate_block (pooled over tasks),
    "timing_ms": {kind: pooled summary}}."""
    per_task = {t: rate_block([r for r in records if r.task == t], metric) for t in tasks}
    timing = {kind: pool_timing_summaries([r.timing_ms.get(kind, {}) for r in records]) for kind in TIMING_KINDS}
    return {"per_task": per_task, "overall": rate_block(list(records), metric), "timing_ms": timing}
