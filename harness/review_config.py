"""Config dataclasses of ``vla gallery`` and ``vla compare`` (reading finished run folders).

Light on purpose (no jinja2, numpy or torch import) so ``vla --help`` stays fast. Field docstrings are the
``--help`` text. The gallery page has a per-task success table (Wilson 95 % intervals) and a video grid
filterable by task and outcome; with two runs the same (task, seed) of run A and run B sit side by side and
unpaired episodes are marked. Video links are relative to the page, so the folder can be copied or served
(file:// and http both work). The comparison pairs the (task, seed) keys both runs ran with status ok: per-task
and overall success rates, difference B - A, discordant counts and the exact two-sided McNemar test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

SUCCESS_METRICS = ("success_once", "success_at_end")
SuccessMetric = Literal["success_once", "success_at_end"]


@dataclasses.dataclass
class GalleryConfig:
    """Write a static HTML review page of one run (OUT/index.html) or of two runs side by side (OUT/compare.html)."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Run folder written by `vla bench` (episodes.jsonl, optional results.json, videos/)."""
    run_b: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="OUT2")] = None
    """Optional second run folder: build the side-by-side comparison page instead."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Where to write the page (default: OUT/index.html, or OUT/compare.html with two runs)."""

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.run_b = None if self.run_b is None else Path(self.run_b)
        self.out = None if self.out is None else Path(self.out)
        if self.out is not None and self.out.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"out must name an .html file, got {str(self.out)!r}")


@dataclasses.dataclass
class CompareConfig:
    """Paired comparison of two runs on shared (task, seed) keys: per-task difference and exact McNemar test."""

    run_a: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT1")]
    """Run folder A (the baseline; differences are B - A)."""
    run_b: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT2")]
    """Run folder B."""
    json_path: Annotated[Path | None, tyro.conf.arg(name="json", metavar="PATH")] = None
    """Also write the numbers as JSON to this file (atomically)."""
    metric: SuccessMetric = "success_once"
    """Which success flag to compare: success_once (success at any step) or success_at_end (at the final step)."""

    def __post_init__(self) -> None:
        self.run_a = Path(self.run_a)
        self.run_b = Path(self.run_b)
        self.json_path = None if self.json_path is None else Path(self.json_path)
        if self.metric not in SUCCESS_METRICS:
            raise ValueError(f"metric must be one of {list(SUCCESS_METRICS)}, got {self.metric!r}")
