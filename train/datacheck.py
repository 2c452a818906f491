"""``vla data check DIR``: validate an episode folder and print a readable summary (rich tables)."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from envs.layout import ACTION_LAYOUT, CAMERA_TO_HDF5_KEY, CAMERAS
from train.config import DataCheckConfig
from train.episodes import DatasetSummary, validate_episode_dir

MAX_EXAMPLES = 3


def run_data_check(cfg: DataCheckConfig, console: Console | None = None) -> int:
    """Validate ``cfg.data_dir`` and print the summary; returns 0. Writes nothing to the folder.

    Raises:
        EpisodeDataError: the first problem found, naming file, key and expected vs actual.
    """
    console = console or Console()
    summary = validate_episode_dir(cfg)
    print_summary(summary, console)
    return 0


def print_summary(summary: DatasetSummary, console: Console) -> None:
    """Print episodes, steps, T range, samples, cameras, action ranges and instruction examples."""
    eps = summary.episodes
    lengths = np.array([e.num_steps for e in eps])
    proprio = sum(e.has_proprio for e in eps)
    samples = f"{summary.num_samples} for chunk_size {summary.chunk_size}"
    samples += " (end-padded: T per episode)" if summary.pad_end else " (T - chunk_size + 1 per episode)"
    overview = Table(title=f"Episodes in {escape(str(summary.data_dir))}", show_header=False)
    for label, value in (
        ("episodes", f"{len(eps)} (indices {eps[0].index} .. {eps[-1].index})"),
        ("total steps", str(int(lengths.sum()))),
        ("steps per episode", f"min {lengths.min()}, median {int(np.median(lengths))}, max {lengths.max()}"),
        ("samples", samples),
        ("task attr", escape(", ".join(summary.tasks)) or "(none)"),
        ("proprio", f"present in {proprio} of {len(eps)} episodes"),
        ("used cameras", f"{', '.join(summary.cameras)} at {summary.image_size[0]}x{summary.image_size[1]} px"),
    ):
        overview.add_row(label, value)
    console.print(overview)
    console.print(_camera_table(summary))
    console.print(_action_table(summary))
    console.print(_instruction_table(summary))
    for note in summary.warnings[:20]:
        console.print(f"[yellow]warning:[/] {escape(note)}", soft_wrap=True)
    if len(summary.warnings) > 20:
        console.print(f"[yellow]warning:[/] ... and {len(summary.warnings) - 20} more values out of range")


def _camera_table(summary: DatasetSummary) -> Table:
    table = Table(title="Cameras present")
    for col in ("camera", "dataset key", "episodes", "frame sizes (H x W)"):
        table.add_column(col)
    for cam in CAMERAS:
        sizes = Counter(e.image_shapes[cam] for e in summary.episodes if cam in e.image_shapes)
        if not sizes:
            continue
        size_text = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sorted(sizes.items()))
        used = " (used)" if cam in summary.cameras else ""
        table.add_row(cam + used, CAMERA_TO_HDF5_KEY[cam], str(sum(sizes.values())), size_text)
    return table


def _action_table(summary: DatasetSummary) -> Table:
    table = Table(title=f"'{summary.action_key}' range over all steps")
    for col, justify in (("dim", "right"), ("name", "left"), ("min", "right"), ("max", "right")):
        table.add_column(col, justify=justify)
    lo, hi = summary.action_min, summary.action_max
    for i, name in enumerate(ACTION_LAYOUT):
        table.add_row(str(i), name, f"{lo[i]:+.4f}", f"{hi[i]:+.4f}")
    return table


def _instruction_table(summary: DatasetSummary) -> Table:
    table = Table(title="Instructions")
    for col in ("split", "episodes with it", "distinct", "examples"):
        table.add_column(col)
    for split in ("seen", "unseen"):
        pools = [getattr(e, split) for e in summary.episodes]
        distinct = list(dict.fromkeys(s for pool in pools for s in pool))
        examples = "\n".join(escape(repr(s)) for s in distinct[:MAX_EXAMPLES])
        if len(distinct) > MAX_EXAMPLES:
            examples += f"\n... {len(distinct) - MAX_EXAMPLES} more"
        table.add_row(split, f"{sum(bool(p) for p in pools)} of {len(pools)}", str(len(distinct)), examples or "-")
    return table


if __name__ == "__main__":  # pragma: no cover - convenience: python -m train.datacheck DIR
    import tyro

    sys.exit(run_data_check(tyro.cli(DataCheckConfig)))
