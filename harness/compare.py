"""``vla compare OUT1 OUT2``: paired comparison of two runs on their shared (task, seed) keys.

Both runs rolled out the same (task, seed) episodes (same initial state), so their outcomes are paired and the
right test is McNemar's on the discordant pairs: b = #(A success, B failure), c = #(A failure, B success). The
exact two-sided p-value is the binomial test of b successes in b + c trials with p = 1/2 (McNemar 1947; exact
form as in statsmodels ``mcnemar(exact=True)``), p = 1 when b + c = 0.

Only keys with status ok in BOTH runs are paired: an error or timeout is not a failure, so such keys are
excluded (and listed); keys present in one run only are listed too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from common.files import write_text_atomic
from harness.metrics import mcnemar_exact
from harness.records import Key
from harness.review_config import SUCCESS_METRICS, CompareConfig
from harness.review_data import Run, RunFolderError, load_run

COMPARE_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PairedStats:
    """Paired numbers of one task (or "overall").

    ``n_pairs``: keys ok in both runs; ``success_rate_a`` / ``_b``: successes / n_pairs (None when n_pairs is 0);
    ``difference``: B - A (None when n_pairs is 0); ``b``: A success & B failure; ``c``: A failure & B success;
    ``p_value``: exact two-sided McNemar p-value (1.0 when b + c = 0).
    """

    task: str
    n_pairs: int
    success_rate_a: float | None
    success_rate_b: float | None
    difference: float | None
    b: int
    c: int
    p_value: float


@dataclasses.dataclass
class Comparison:
    """Result of :func:`compare_runs`.

    ``excluded`` lists (key, status in A, status in B) for shared keys not ok in both runs.
    """

    run_a: Run
    run_b: Run
    metric: str
    per_task: list[PairedStats]
    overall: PairedStats
    only_in_a: list[Key]
    only_in_b: list[Key]
    excluded: list[tuple[Key, str, str]]


def paired_stats(task: str, pairs: list[tuple[bool, bool]]) -> PairedStats:
    """Aggregate (success in A, success in B) pairs into :class:`PairedStats`."""
    n = len(pairs)
    wins_a = sum(a for a, _ in pairs)
    wins_b = sum(b for _, b in pairs)
    b = sum(a and not b_ for a, b_ in pairs)
    c = sum(b_ and not a for a, b_ in pairs)
    rate_a = wins_a / n if n else None
    rate_b = wins_b / n if n else None
    return PairedStats(
        task=task,
        n_pairs=n,
        success_rate_a=rate_a,
        success_rate_b=rate_b,
        difference=None if n == 0 else rate_b - rate_a,
        b=b,
        c=c,
        p_value=mcnemar_exact(b, c),
    )


def compare_runs(run_a: Run, run_b: Run, metric: str = "success_once") -> Comparison:
    """Pair ``run_a`` and ``run_b`` on shared (task, seed) keys and test each task and the pooled pairs.

    Tasks listed are those with at least one shared key (sorted). Raises ValueError for an unknown ``metric``
    and RunFolderError when the runs share no (task, seed) key at all (almost always the wrong folders).
    """
    if metric not in SUCCESS_METRICS:
        raise ValueError(f"metric must be one of {list(SUCCESS_METRICS)}, got {metric!r}")
    shared = sorted(run_a.episodes.keys() & run_b.episodes.keys())
    if not shared:
        raise RunFolderError(
            f"runs {str(run_a.path)!r} and {str(run_b.path)!r} share no (task, seed) key: "
            f"A has tasks {run_a.tasks}, B has tasks {run_b.tasks}"
        )
    by_task: dict[str, list[tuple[bool, bool]]] = {}
    excluded = []
    for key in shared:
        a, b = run_a.episodes[key], run_b.episodes[key]
        pairs = by_task.setdefault(key[0], [])
        if a.status == "ok" and b.status == "ok":
            pairs.append((bool(a.succeeded(metric)), bool(b.succeeded(metric))))
        else:
            excluded.append((key, a.status, b.status))
    per_task = [paired_stats(task, by_task[task]) for task in sorted(by_task)]
    overall = paired_stats("overall", [pair for task in sorted(by_task) for pair in by_task[task]])
    return Comparison(
        run_a=run_a,
        run_b=run_b,
        metric=metric,
        per_task=per_task,
        overall=overall,
        only_in_a=sorted(run_a.episodes.keys() - run_b.episodes.keys()),
        only_in_b=sorted(run_b.episodes.keys() - run_a.episodes.keys()),
        excluded=excluded,
    )


def _run_info(run: Run) -> dict[str, Any]:
    return {
        "path": str(run.path),
        "policy": run.policy_name,
        "created_at": run.created_at,
        "episodes": len(run.episodes),
    }


def comparison_to_dict(comp: Comparison) -> dict[str, Any]:
    """JSON-ready dict: schema_version, metric, run_a/run_b info, per_task {task: stats}, overall, only_in_a,
    only_in_b ([{task, seed}]) and excluded ([{task, seed, status_a, status_b}])."""

    def stats(s: PairedStats) -> dict[str, Any]:
        out = dataclasses.asdict(s)
        out.pop("task")
        return out

    return {
        "schema_version": COMPARE_SCHEMA_VERSION,
        "metric": comp.metric,
        "run_a": _run_info(comp.run_a),
        "run_b": _run_info(comp.run_b),
        "per_task": {s.task: stats(s) for s in comp.per_task},
        "overall": stats(comp.overall),
        "only_in_a": [{"task": t, "seed": s} for t, s in comp.only_in_a],
        "only_in_b": [{"task": t, "seed": s} for t, s in comp.only_in_b],
        "excluded": [{"task": t, "seed": s, "status_a": sa, "status_b": sb} for (t, s), sa, sb in comp.excluded],
    }


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _keys_line(keys: list[Key], limit: int = 8) -> str:
    shown = ", ".join(f"{t}/seed{s}" for t, s in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def print_comparison(comp: Comparison, console: Any | None = None) -> None:
    """Print the per-task table (rates in %, difference in percentage points) and the unpaired/excluded keys."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    table = Table(
        title=f"{comp.metric}: A = {escape(comp.run_a.policy_name)} ({escape(str(comp.run_a.path))}), "
        f"B = {escape(comp.run_b.policy_name)} ({escape(str(comp.run_b.path))})",
        caption="b = A success & B failure, c = A failure & B success; p = exact two-sided McNemar",
    )
    table.add_column("task", no_wrap=True, min_width=max(len(s.task) for s in [*comp.per_task, comp.overall]))
    for name in ("pairs", "A %", "B %", "B-A pp", "b", "c", "p"):
        table.add_column(name, justify="right", no_wrap=True)
    for s in [*comp.per_task, comp.overall]:
        table.add_row(
            escape(s.task),
            str(s.n_pairs),
            _pct(s.success_rate_a),
            _pct(s.success_rate_b),
            _pct(s.difference, signed=True),
            str(s.b),
            str(s.c),
            f"{s.p_value:.4g}",
            style="bold" if s is comp.overall else None,
            end_section=s is comp.per_task[-1],
        )
    console.print(table)
    for label, keys in (("only in A", comp.only_in_a), ("only in B", comp.only_in_b)):
        console.print(f"keys {label}: {len(keys)}" + (f" ({escape(_keys_line(keys))})" if keys else ""))
    excluded = [f"{t}/seed{s} (A {sa}, B {sb})" for (t, s), sa, sb in comp.excluded]
    console.print(
        f"excluded (error/timeout in either run): {len(excluded)}"
        + (f" ({escape(', '.join(excluded[:8]))}{', ...' if len(excluded) > 8 else ''})" if excluded else "")
    )


def run_compare(cfg: CompareConfig, console: Any | None = None) -> int:
    """Body of ``vla compare``: load both runs, print the table, write ``--json``; returns 0.

    Raises:
        RecordsError: a missing, empty or malformed run folder (``vla`` prints it as one line).
    """
    from rich.console import Console
    from rich.markup import escape

    comp = compare_runs(load_run(cfg.run_a), load_run(cfg.run_b), cfg.metric)
    print_comparison(comp, console)
    if cfg.json_path is not None:
        write_text_atomic(Path(cfg.json_path), json.dumps(comparison_to_dict(comp), indent=2) + "\n")
        (console or Console()).print(f"wrote {escape(str(cfg.json_path))}")
    return 0
