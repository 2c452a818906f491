"""Console summary of a results.json (rich table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def print_summary(results: dict[str, Any], out: Path) -> None:
    """Print per-task and overall success (with Wilson 95 % intervals), errors, timeouts and throughput."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # every string from the user (policy spec, task names, paths) is escaped: "[/x]" must print as itself
    table = Table(title=f"vla bench: {escape(str(results['policy'].get('spec', results['policy'].get('name'))))}")
    for col in ("task", "ok eps", "success_once", "95% CI", "success_at_end", "errors", "timeouts", "mean len"):
        table.add_column(col)
    rows = list(results["per_task"].items()) + [("overall", results["overall"])]
    for name, b in rows:
        lo, hi = b["ci95"]
        mean_len = "n/a" if b["mean_episode_len"] is None else f"{b['mean_episode_len']:.1f}"
        table.add_row(
            escape(name),
            str(b["episodes"]),
            _pct(b["success_rate"]),
            escape(f"[{_pct(lo)}, {_pct(hi)}]"),
            _pct(b["success_at_end_rate"]),
            str(b["errors"]),
            str(b["timeouts"]),
            mean_len,
        )
    console = Console(stderr=False)
    console.print(table)
    for split, block in (results.get("per_split") or {}).items():
        b = block["overall"]
        lo, hi = b["ci95"]
        console.print(f"{split} instructions: {_pct(b['success_rate'])} [{_pct(lo)}, {_pct(hi)}] over {b['episodes']}")
    for task, splits in (results.get("grounding") or {}).items():
        for split, g in splits.items():
            told, other = g["instructed_goal"], g["other_goal"]
            console.print(
                f"{escape(task)} counterfactual ({split}, {g['seeds']} seeds x goals): did as told "
                f"{_pct(told['rate'])}, did the other goal {_pct(other['rate'])}, every goal of a seed "
                f"{_pct(g['both_goals_of_seed']['rate'])}"
            )
    tp = results.get("throughput") or {}
    if tp.get("episodes_per_hour") is not None:
        console.print(
            f"throughput: {tp['episodes_per_hour']:.1f} episodes/hour ({tp.get('episodes')} episodes in "
            f"{tp.get('wall_s')} s, {tp.get('workers')} worker(s))"
        )
    bad = results["overall"]["errors"] + results["overall"]["timeouts"]
    if bad:
        console.print(
            f"[bold red]{bad} episode(s) ended in error/timeout[/] (not counted as failures; see "
            f"{escape(str(Path(out) / 'episodes.jsonl'))})"
        )
    console.print(f"results: {escape(str(Path(out) / 'results.json'))}")
