"""Read finished run folders for ``vla gallery`` and ``vla compare``: episodes.jsonl, results.json, summaries.

A run folder (written by ``vla bench``, schema version 1) holds::

    OUT/episodes.jsonl   one JSON record per finished episode, appended; a SIGKILL can leave a partial last line
    OUT/results.json     per-task aggregates and provenance, written at the end (may be missing or stale)
    OUT/videos/*.mp4     one video per episode, named in the record's "video" field (relative to OUT)

Reading rules: a truncated (unparseable) LAST line of episodes.jsonl is ignored with a warning; an unparseable
line anywhere else is an error naming the file and line; when a (task, seed) key appears more than once the last
record wins, with a warning. The per-task table is always computed from episodes.jsonl (the source of truth, with
the same formulas as results.json); results.json supplies the policy name and date and is cross-checked against
the records (disagreements are reported, e.g. a results.json left over from before a resume).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from harness.metrics import wilson_interval

log = logging.getLogger(__name__)

SUPPORTED_SCHEMA_VERSIONS = (1,)
STATUSES = ("ok", "error", "timeout")
OUTCOMES = ("success", "failure", "error", "timeout")
EPISODES_FILE = "episodes.jsonl"
RESULTS_FILE = "results.json"

Key = tuple[str, int]


class RunFolderError(ValueError):
    """A run folder is missing, has no episodes, or holds a malformed record; the message names the path."""


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode record of episodes.jsonl (the fields the gallery and compare use).

    ``success_once`` / ``success_at_end`` are bools for status ``ok`` and may be None otherwise;
    ``episode_len`` is in env steps; ``video`` is a path relative to the run folder (or None);
    ``line`` is the 1-based line number in episodes.jsonl the record came from.
    """

    task: str
    seed: int
    status: str
    success_once: bool | None
    success_at_end: bool | None
    episode_len: int
    instruction: str
    error: str | None
    video: str | None
    finished_at: str | None
    line: int

    @property
    def key(self) -> Key:
        """Episode identity (task, seed)."""
        return (self.task, self.seed)

    def succeeded(self, metric: str = "success_once") -> bool | None:
        """The success flag named by ``metric`` (success_once | success_at_end); None unless status is ok."""
        if self.status != "ok":
            return None
        return bool(getattr(self, metric))

    def outcome(self, metric: str = "success_once") -> str:
        """One of OUTCOMES: success / failure for status ok (by ``metric``), else the status (error | timeout)."""
        if self.status != "ok":
            return self.status
        return "success" if self.succeeded(metric) else "failure"


@dataclasses.dataclass
class Run:
    """A loaded run folder: episodes keyed by (task, seed) in file order, and results.json when present."""

    path: Path
    episodes: dict[Key, Episode]
    results: dict[str, Any] | None
    duplicates: dict[Key, list[int]]
    """Keys seen more than once -> the line numbers of all their records (the last one is used)."""
    truncated_last_line: bool = False

    @property
    def tasks(self) -> list[str]:
        """Task names present, sorted."""
        return sorted({task for task, _ in self.episodes})

    @property
    def policy_name(self) -> str:
        """results.json policy.name, else the folder name."""
        policy = (self.results or {}).get("policy")
        if isinstance(policy, dict) and isinstance(policy.get("name"), str) and policy["name"]:
            return policy["name"]
        return self.path.name or str(self.path)

    @property
    def created_at(self) -> str | None:
        """results.json created_at, else the latest finished_at of the episodes (ISO-8601), else None."""
        created = (self.results or {}).get("created_at")
        if isinstance(created, str) and created:
            return created
        finished = [e.finished_at for e in self.episodes.values() if e.finished_at]
        return max(finished) if finished else None


@dataclasses.dataclass(frozen=True)
class TaskSummary:
    """Per-task (or overall, task "overall") numbers of the gallery table.

    ``episodes`` counts status-ok episodes only (errors and timeouts are excluded from success rates and
    counted separately); ``ci95`` is the Wilson 95 % interval of successes/episodes (None when episodes is 0);
    ``mean_episode_len`` is over status-ok episodes, in env steps.
    """

    task: str
    episodes: int
    successes: int
    success_rate: float | None
    ci95: tuple[float, float] | None
    errors: int
    timeouts: int
    mean_episode_len: float | None


def load_run(path: str | Path) -> Run:
    """Load a run folder.

    Raises:
        RunFolderError: the folder does not exist or is not a folder, episodes.jsonl is missing or holds no
            episode, a line other than the last is not JSON, a record lacks a key or has a wrong type, or
            results.json is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"run folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise RunFolderError(f"run folder {str(path)!r} is not a folder")
    episodes_file = path / EPISODES_FILE
    if not episodes_file.is_file():
        raise RunFolderError(f"run folder {str(path)!r} has no {EPISODES_FILE} (expected {str(episodes_file)!r})")
    episodes, duplicates, truncated = read_episodes(episodes_file)
    if not episodes:
        raise RunFolderError(f"run folder {str(path)!r} has no episodes: {str(episodes_file)!r} holds no record")
    return Run(path, episodes, _read_results(path / RESULTS_FILE), duplicates, truncated)


def read_episodes(file: Path) -> tuple[dict[Key, Episode], dict[Key, list[int]], bool]:
    """Parse episodes.jsonl -> (episodes by key in first-seen order, duplicate key -> line numbers, truncated).

    The last record of a duplicated key wins (logged as a warning); an unparseable last line is ignored
    (truncated = True, logged). Raises RunFolderError for any other unparseable line or malformed record.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RunFolderError(f"{file}: not UTF-8 text ({err})") from err
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    episodes: dict[Key, Episode] = {}
    seen: dict[Key, list[int]] = {}
    truncated = False
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if index == last:
                log.warning("%s: ignoring truncated last line %d (%s)", file, index + 1, err.msg)
                truncated = True
                continue
            raise RunFolderError(f"{file}: line {index + 1} is not valid JSON ({err.msg}, column {err.colno})") \
                from err
        episode = _parse_record(obj, file, index + 1)
        seen.setdefault(episode.key, []).append(episode.line)
        episodes[episode.key] = episode
    duplicates = {key: lines_ for key, lines_ in seen.items() if len(lines_) > 1}
    for (task, seed), lines_ in duplicates.items():
        log.warning("%s: (task, seed) = (%r, %d) appears %d times (lines %s); using the last record (line %d)",
                    file, task, seed, len(lines_), ", ".join(map(str, lines_)), lines_[-1])
    return episodes, duplicates, truncated


def _expect(obj: dict, key: str, types: tuple[type, ...], where: str, required: bool = True) -> Any:
    """obj[key] checked against ``types`` (bool is never accepted as int); RunFolderError naming the key."""
    if key not in obj:
        if required:
            raise RunFolderError(f"{where}: missing key {key!r}")
        return None
    value = obj[key]
    if value is None and not required:
        return None
    is_bool_for_int = isinstance(value, bool) and bool not in types
    if is_bool_for_int or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise RunFolderError(f"{where}: key {key!r} must be {expected}, got {type(value).__name__} {value!r}")
    return value


def _check_schema_version(obj: dict[str, Any], where: str) -> None:
    """Raise RunFolderError when obj's schema_version (default 1) is not one this reader knows."""
    version = obj.get("schema_version", 1)
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise RunFolderError(f"{where}: schema_version {version!r} is not supported "
                             f"(this reader knows {list(SUPPORTED_SCHEMA_VERSIONS)})")


def _parse_record(obj: Any, file: Path, line: int) -> Episode:
    """Validate one decoded JSON line into an Episode (raises RunFolderError naming file, line and key)."""
    where = f"{file}: line {line}"
    if not isinstance(obj, dict):
        raise RunFolderError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    _check_schema_version(obj, where)
    task = _expect(obj, "task", (str,), where)
    seed = _expect(obj, "seed", (int,), where)
    status = _expect(obj, "status", (str,), where)
    if status not in STATUSES:
        raise RunFolderError(f"{where}: key 'status' must be one of {list(STATUSES)}, got {status!r}")
    is_ok = status == "ok"
    success_once = _expect(obj, "success_once", (bool,), where, required=is_ok)
    success_at_end = _expect(obj, "success_at_end", (bool,), where, required=is_ok)
    episode_len = _expect(obj, "episode_len", (int,), where)
    if episode_len < 0:
        raise RunFolderError(f"{where}: key 'episode_len' must be >= 0, got {episode_len}")
    return Episode(
        task=task, seed=seed, status=status, success_once=success_once, success_at_end=success_at_end,
        episode_len=episode_len, instruction=_expect(obj, "instruction", (str,), where, False) or "",
        error=_expect(obj, "error", (str,), where, False), video=_expect(obj, "video", (str,), where, False),
        finished_at=_expect(obj, "finished_at", (str,), where, False), line=line,
    )


def _read_results(file: Path) -> dict[str, Any] | None:
    """results.json as a dict, or None when the file is missing (RunFolderError when it is not a JSON object)."""
    if not file.is_file():
        return None
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{file}: not valid JSON ({err})") from err
    if not isinstance(results, dict):
        raise RunFolderError(f"{file}: expected a JSON object, got {type(results).__name__}")
    _check_schema_version(results, str(file))
    return results


def summarize_episodes(task: str, episodes: list[Episode], metric: str = "success_once") -> TaskSummary:
    """Aggregate ``episodes`` (any statuses) into one table row; success by ``metric``; Wilson 95 % interval."""
    ok = [e for e in episodes if e.status == "ok"]
    successes = sum(bool(e.succeeded(metric)) for e in ok)
    n = len(ok)
    return TaskSummary(
        task=task, episodes=n, successes=successes,
        success_rate=successes / n if n else None,
        ci95=tuple(wilson_interval(successes, n)) if n else None,
        errors=sum(e.status == "error" for e in episodes),
        timeouts=sum(e.status == "timeout" for e in episodes),
        mean_episode_len=sum(e.episode_len for e in ok) / n if n else None,
    )


def summarize(run: Run, metric: str = "success_once") -> tuple[list[TaskSummary], TaskSummary]:
    """Per-task rows (sorted by task) and the overall row pooled over all episodes of the run."""
    by_task: dict[str, list[Episode]] = {}
    for episode in run.episodes.values():
        by_task.setdefault(episode.task, []).append(episode)
    rows = [summarize_episodes(task, by_task[task], metric) for task in sorted(by_task)]
    return rows, summarize_episodes("overall", list(run.episodes.values()), metric)


def results_mismatches(run: Run, rows: list[TaskSummary]) -> list[str]:
    """Where results.json's per-task counts (episodes, successes, errors, timeouts) disagree with the records.

    Returns human-readable lines (empty when results.json is missing or agrees). A mismatch usually means
    results.json is stale (written before a resume) or the run is still going.
    """
    per_task = (run.results or {}).get("per_task")
    if not isinstance(per_task, dict):
        return []
    problems = []
    for row in rows:
        stored = per_task.get(row.task)
        if not isinstance(stored, dict):
            problems.append(f"results.json has no per_task entry for task {row.task!r}")
            continue
        for field in ("episodes", "successes", "errors", "timeouts"):
            if field in stored and stored[field] != getattr(row, field):
                problems.append(f"task {row.task!r}: results.json {field} = {stored[field]!r}, "
                                f"episodes.jsonl gives {getattr(row, field)}")
    extra = sorted(set(per_task) - {row.task for row in rows})
    problems += [f"results.json lists task {task!r} that has no record in episodes.jsonl" for task in extra]
    return problems


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file in the same folder + rename; never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
