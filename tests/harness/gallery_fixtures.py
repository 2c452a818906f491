"""Helpers of the gallery/compare tests: run folders written by hand in the ``vla bench`` output schema.

Schema (harness output, version 1): OUT/episodes.jsonl (one record per line), OUT/results.json, OUT/videos/.
The per-task numbers in :func:`results_for` are counted here independently of harness.review_data so the tests
compare two implementations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

TIMING = {"mean": 1.0, "p50": 1.0, "p90": 1.5, "p99": 2.0}


def episode_record(
    task: str,
    seed: int,
    outcome: str = "success",
    *,
    episode_len: int = 40,
    success_at_end: bool | None = None,
    instruction: str | None = None,
    video: str | None = None,
    error: str | None = None,
    line_extra: dict | None = None,
) -> dict:
    """One episodes.jsonl record; ``outcome`` is success | failure | error | timeout."""
    ok = outcome in ("success", "failure")
    success = outcome == "success"
    record = {
        "schema_version": 1,
        "task": task,
        "seed": seed,
        "status": "ok" if ok else outcome,
        "success_once": success if ok else None,
        "success_at_end": (success if success_at_end is None else success_at_end) if ok else None,
        "episode_len": episode_len,
        "policy_calls": episode_len,
        "instruction": instruction if instruction is not None else f"do {task} number {seed}",
        "error": error if error is not None else (None if ok else f"{outcome}: something broke in {task}"),
        "video": video,
        "timing_ms": {"observation": TIMING, "inference": TIMING, "simulation": TIMING},
        "wall_s": 1.25,
        "worker": 0,
        "finished_at": f"2025-03-0{1 + seed % 9}T10:00:00+00:00",
    }
    record.update(line_extra or {})
    return record


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval, written out independently (Wilson 1927; e.g. Brown, Cai & DasGupta 2001, eq. 4)."""
    p = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
    return centre - half, centre + half


def results_for(records: list[dict], policy: str = "scripted") -> dict[str, Any]:
    """A results.json (schema version 1) matching ``records`` (the last record of a key wins)."""
    by_key = {(r["task"], r["seed"]): r for r in records}
    per_task: dict[str, dict] = {}

    def block(recs: list[dict]) -> dict:
        ok = [r for r in recs if r["status"] == "ok"]
        k, n = sum(r["success_once"] for r in ok), len(ok)
        k_end = sum(r["success_at_end"] for r in ok)
        return {
            "episodes": n,
            "successes": k,
            "success_rate": k / n if n else None,
            "ci95": list(wilson(k, n)) if n else None,
            "success_at_end_rate": k_end / n if n else None,
            "ci95_at_end": list(wilson(k_end, n)) if n else None,
            "errors": sum(r["status"] == "error" for r in recs),
            "timeouts": sum(r["status"] == "timeout" for r in recs),
            "mean_episode_len": sum(r["episode_len"] for r in ok) / n if n else None,
        }

    for task in sorted({t for t, _ in by_key}):
        per_task[task] = block([r for (t, _), r in by_key.items() if t == task])
    return {
        "schema_version": 1,
        "created_at": "2025-03-04T05:06:07+00:00",
        "policy": {"name": policy, "cameras": ["head"], "chunk_size": 1},
        "config": {"policy": policy},
        "seeds": {t: sorted(s for tt, s in by_key if tt == t) for t in per_task},
        "per_task": per_task,
        "overall": block(list(by_key.values())),
        "timing_ms": {"observation": TIMING, "inference": TIMING, "simulation": TIMING},
        "throughput": {"episodes_per_hour": 100.0, "wall_s": 10.0, "workers": 1},
        "provenance": {"git_sha": "0" * 40, "git_dirty": False, "packages": {}, "command": "vla bench"},
    }


def write_run(
    run_dir: Path, records: list[dict], *, results: bool | dict = True, policy: str = "scripted", trailing: str = ""
) -> Path:
    """Write OUT/episodes.jsonl (+ ``trailing`` raw text, e.g. a truncated line) and results.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (run_dir / "episodes.jsonl").write_text(lines + trailing, encoding="utf-8")
    if results is True:
        results = results_for(records, policy)
    if isinstance(results, dict):
        (run_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return run_dir


def video_name(task: str, seed: int, outcome: str) -> str:
    """The harness naming: videos/{task}--seed{seed}--{success|failure|error}.mp4."""
    return f"videos/{task}--seed{seed}--{outcome}.mp4"


def write_video(
    path: Path, n_frames: int = 8, size: tuple[int, int] = (72, 40), codec: str = "libx264", fps: int = 20
) -> Path:
    """Encode a small real video (moving colour bars) with imageio-ffmpeg; ``size`` = (width, height), even.

    Same settings as harness/video.py's encoder (libx264, yuv420p, preset veryfast, no resizing to a multiple
    of 16), so the browser test checks what the harness writes.
    """
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    x = np.arange(width, dtype=np.int32)[None, :, None]
    params = ["-preset", "veryfast", "-threads", "1"] if codec == "libx264" else ["-threads", "1"]
    with imageio.get_writer(
        path,
        format="FFMPEG",
        fps=fps,
        codec=codec,
        pixelformat="yuv420p",
        macro_block_size=1,
        ffmpeg_log_level="error",
        ffmpeg_params=params,
    ) as writer:
        for t in range(n_frames):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[...] = ((x + 8 * t) * np.array([3, 5, 7])) % 256
            writer.append_data(frame)
    return path
