"""Read finished run folders for ``vla gallery`` and ``vla compare``.

A run folder (written by ``vla bench``) holds::

    OUT/episodes.jsonl   one EpisodeRecord per finished episode (harness.records: format and reading rule)
    OUT/results.json     per-task aggregates and provenance, written at the end (may be missing or stale)
    OUT/videos/*.mp4     one video per episode, named in the record's "video" field (relative to OUT)

episodes.jsonl is read by ``harness.records.read_records``, the same reader ``--resume`` uses (a torn last line
is ignored and reported; any other bad line or a key recorded twice is an error). The per-task table is always
computed from the records with ``harness.records.rate_block`` (the formulas of results.json); results.json
supplies the policy name and date and is cross-checked against the records (disagreements are reported, e.g. a
results.json left over from before a resume).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from harness.records import (
    EPISODES_FILE,
    RESULTS_FILE,
    EpisodeRecord,
    Key,
    RecordsError,
    check_schema_version,
    rate_block,
    read_records,
)

log = logging.getLogger(__name__)


class RunFolderError(RecordsError):
    """A run folder is missing, has no episodes, or holds a malformed file; the message names the path."""


@dataclasses.dataclass
class Run:
    """A loaded run folder: episodes keyed by (task, seed) in file order, and results.json when present."""

    path: Path
    episodes: dict[Key, EpisodeRecord]
    results: dict[str, Any] | None
    torn_line: int | None = None
    """Line number of a torn last line of episodes.jsonl that was ignored (an interrupted run), else None."""

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
    """One row of the gallery table (task, or "overall"): ``harness.records.rate_block`` as a typed row.

    ``episodes`` counts status-ok episodes only; ``ci95`` is the Wilson 95 % interval (None when episodes is 0);
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
            episode, or results.json is not a JSON object. RecordsError: a malformed episodes.jsonl.
    """
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"run folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise RunFolderError(f"run folder {str(path)!r} is not a folder")
    episodes_file = path / EPISODES_FILE
    if not episodes_file.is_file():
        raise RunFolderError(f"run folder {str(path)!r} has no {EPISODES_FILE} (expected {str(episodes_file)!r})")
    found = read_records(episodes_file)
    if found.torn_line is not None:
        log.warning("%s: ignoring torn last line %d (an interrupted run)", episodes_file, found.torn_line)
    if not found.records:
        raise RunFolderError(f"run folder {str(path)!r} has no episodes: {str(episodes_file)!r} holds no record")
    episodes = {r.key: r for r in found.records}
    return Run(path, episodes, _read_results(path / RESULTS_FILE), found.torn_line)


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
    check_schema_version(results, str(file))
    return results


def summarize_episodes(task: str, episodes: list[EpisodeRecord], metric: str = "success_once") -> TaskSummary:
    """One table row of ``episodes`` (any statuses), success by ``metric``."""
    block = rate_block(episodes, metric)
    return TaskSummary(
        task=task,
        episodes=block["episodes"],
        successes=block["successes"],
        success_rate=block["success_rate"],
        ci95=tuple(block["ci95"]) if block["episodes"] else None,
        errors=block["errors"],
        timeouts=block["timeouts"],
        mean_episode_len=block["mean_episode_len"],
    )


def summarize(run: Run, metric: str = "success_once") -> tuple[list[TaskSummary], TaskSummary]:
    """Per-task rows (sorted by task) and the overall row pooled over all episodes of the run."""
    by_task: dict[str, list[EpisodeRecord]] = {}
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
                problems.append(
                    f"task {row.task!r}: results.json {field} = {stored[field]!r}, "
                    f"episodes.jsonl gives {getattr(row, field)}"
                )
    extra = sorted(set(per_task) - {row.task for row in rows})
    problems += [f"results.json lists task {task!r} that has no record in episodes.jsonl" for task in extra]
    return problems
