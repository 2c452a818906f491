"""``vla gallery OUT [OUT2]``: a static HTML review page of one run, or of two runs side by side.

One run -> OUT/index.html: title (policy, date), per-task table (episodes, successes, success rate, Wilson 95 %
interval, errors, timeouts, mean episode length, overall row), task/outcome filters (small inline JS, no network)
and a card per episode (task or task variant, e.g. ``TASK@unseen@goal-red``, seed, instruction, outcome badge, a
"did the other goal" badge on grounding tasks, length, video or placeholder).
Two runs -> OUT/compare.html: both tables, the paired McNemar table of ``harness.compare``, one row per shared
(task, seed) with run A and run B side by side, then the episodes found in one run only, marked as unpaired.

Everything is rendered with jinja2 autoescaping (templates in harness/templates/), video URLs are relative to the
page (the folders can be copied together or served over http, and file:// works too), and the page is written
atomically (temp file + rename).
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
import urllib.parse
from pathlib import Path
from typing import Any

from common.files import write_text_atomic
from harness.records import OUTCOMES, EpisodeRecord
from harness.review_config import GalleryConfig
from harness.review_data import Run, load_run, results_mismatches, summarize

VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".ogv": "video/ogg"}


@dataclasses.dataclass(frozen=True)
class Card:
    """What one episode card shows. ``video_src`` is a URL relative to the page (None -> placeholder with
    ``video_note``); ``side`` is "A"/"B" on the comparison page, "" on a single-run page."""

    task: str
    seed: int
    instruction: str
    outcome: str
    episode_len: int
    error: str | None
    video_src: str | None
    video_type: str
    video_note: str | None
    side: str = ""
    other_goal: bool = False


def video_source(run: Run, episode: EpisodeRecord, html_dir: Path) -> tuple[str | None, str | None]:
    """(URL of the episode's video relative to ``html_dir``, None) or (None, why there is no video).

    The URL is percent-encoded POSIX relative path, so the page keeps working when the run folder and the page
    are copied together or served by any static http server.
    """
    if episode.video is None:
        return None, "no video recorded" + (f" ({episode.video_error})" if episode.video_error else "")
    file = Path(episode.video)
    if not file.is_absolute():
        file = run.path / file
    if not file.resolve().is_relative_to(run.path.resolve()):
        return None, f"video outside the run folder, not linked: {episode.video}"
    if not file.is_file():
        return None, f"video file missing: {episode.video}"
    rel = os.path.relpath(os.path.abspath(file), os.path.abspath(html_dir))
    return urllib.parse.quote(Path(rel).as_posix()), None


def make_card(run: Run, episode: EpisodeRecord, html_dir: Path, side: str = "") -> Card:
    """Build the :class:`Card` of one episode for a page written into ``html_dir``."""
    src, note = video_source(run, episode, html_dir)
    suffix = Path(episode.video or "").suffix.lower()
    video_type = VIDEO_TYPES.get(suffix) or mimetypes.guess_type(f"x{suffix}")[0] or "video/mp4"
    return Card(
        task=episode.task,
        seed=episode.seed,
        instruction=episode.instruction,
        outcome=episode.outcome(),
        episode_len=episode.episode_len,
        error=episode.error,
        video_src=src,
        video_type=video_type,
        video_note=note,
        side=side,
        other_goal=bool(episode.other_goal),
    )


def _run_context(run: Run, html_dir: Path, side: str = "") -> dict[str, Any]:
    """Template variables describing one run: labels, table rows, notes."""
    rows, overall = summarize(run)
    notes = [f"results.json disagrees with episodes.jsonl: {problem}" for problem in results_mismatches(run, rows)]
    if run.results is None:
        notes.append("no results.json: the table is computed from episodes.jsonl")
    if run.torn_line is not None:
        notes.append(f"episodes.jsonl ends with a torn line {run.torn_line} (an interrupted run); it was ignored")
    return {
        "side": side,
        "policy": run.policy_name,
        "created_at": run.created_at,
        "path": str(run.path),
        "folder": Path(os.path.abspath(run.path)).name,
        "rows": rows,
        "overall": overall,
        "notes": notes,
        "n_records": len(run.episodes),
    }


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_fmt_pct, ci=_fmt_ci, steps=_fmt_steps, isodate=_fmt_date)
    return env


def _fmt_pct(x: float | None, signed: bool = False) -> str:
    """0.853 -> "85.3 %" (signed: "+85.3 pp" for differences); None -> "–"."""
    if x is None:
        return "–"
    return f"{100 * x:+.1f} pp" if signed else f"{100 * x:.1f} %"


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] %"


def _fmt_steps(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _fmt_date(s: str | None) -> str:
    """ISO-8601 "2025-01-02T03:04:05.678+00:00" -> "2025-01-02 03:04:05"."""
    return "unknown date" if not s else s.replace("T", " ")[:19]


def _default_path(run_dir: Path, name: str, out: Path | None) -> Path:
    return Path(out) if out is not None else Path(run_dir) / name


def build_gallery(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the single-run page (default ``run_dir/index.html``); return its path.

    Raises RunFolderError for a missing/empty/malformed run folder (nothing is written then).
    """
    run = load_run(run_dir)
    path = _default_path(run.path, "index.html", None if out is None else Path(out))
    html_dir = path.parent
    cards = [make_card(run, e, html_dir) for e in sorted(run.episodes.values(), key=lambda e: e.key)]
    html = (
        _environment()
        .get_template("gallery.html.j2")
        .render(run=_run_context(run, html_dir), cards=cards, tasks=run.tasks, outcomes=OUTCOMES, compare=False)
    )
    write_text_atomic(path, html)
    return path


def build_comparison_gallery(run_a_dir: str | Path, run_b_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the two-run page (default ``run_a_dir/compare.html``); return its path.

    Every (task, seed) present in both runs is one row with run A's and run B's cards side by side (whatever
    their status); keys found in one run only follow in their own sections, marked unpaired. The paired table
    (McNemar) covers keys with status ok in both runs. Raises RunFolderError for a bad folder.
    """
    from harness.compare import compare_runs

    run_a, run_b = load_run(run_a_dir), load_run(run_b_dir)
    path = _default_path(run_a.path, "compare.html", None if out is None else Path(out))
    html_dir = path.parent
    shared = sorted(run_a.episodes.keys() & run_b.episodes.keys())
    pairs = []
    for key in shared:
        a = make_card(run_a, run_a.episodes[key], html_dir, "A")
        b = make_card(run_b, run_b.episodes[key], html_dir, "B")
        pairs.append({"task": key[0], "seed": key[1], "a": a, "b": b, "discordant": a.outcome != b.outcome})
    only_a = [make_card(run_a, run_a.episodes[k], html_dir, "A") for k in sorted(run_a.episodes.keys() - set(shared))]
    only_b = [make_card(run_b, run_b.episodes[k], html_dir, "B") for k in sorted(run_b.episodes.keys() - set(shared))]
    comparison = compare_runs(run_a, run_b) if shared else None
    html = (
        _environment()
        .get_template("compare.html.j2")
        .render(
            run_a=_run_context(run_a, html_dir, "A"),
            run_b=_run_context(run_b, html_dir, "B"),
            pairs=pairs,
            only_a=only_a,
            only_b=only_b,
            comparison=comparison,
            tasks=sorted(set(run_a.tasks) | set(run_b.tasks)),
            outcomes=OUTCOMES,
            compare=True,
        )
    )
    write_text_atomic(path, html)
    return path


def run_gallery(cfg: GalleryConfig) -> int:
    """Body of ``vla gallery``: build the page and print its path; returns 0.

    Raises:
        RecordsError: a missing, empty or malformed run folder (``vla`` prints it as one line).
    """
    from rich.console import Console
    from rich.markup import escape

    if cfg.run_b is None:
        path = build_gallery(cfg.run, cfg.out)
    else:
        path = build_comparison_gallery(cfg.run, cfg.run_b, cfg.out)
    Console(highlight=False).print(f"wrote {escape(str(path))}")
    return 0


__all__ = ["Card", "build_comparison_gallery", "build_gallery", "make_card", "run_gallery", "video_source"]
