"""Config dataclasses of the envs commands (``vla doctor``, ``vla envs``, ``vla demos``).

Light on purpose: no ManiSkill import, so ``vla --help`` is fast. Field docstrings are the ``--help`` text (one
sentence each: tyro keeps their line breaks). ``vla demos --action-noise S`` is DART-style data (Laskey et al.
2017): the executed TCP positions drift by an AR(1) offset of std S m (yaw 5 S rad, correlation
``--noise-correlation``) while the expert's clean target is what gets recorded, so the data shows how to recover.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from envs.layout import CAMERAS
from envs.visuals import VisualQuality, check_visual_quality


def parse_cameras(cameras: tuple[str, ...], field: str = "cameras") -> tuple[str, ...]:
    """Normalise camera lists given as ``("head", "low")`` or ``("head,low",)``; validate the names.

    Raises:
        ValueError: an unknown or repeated camera name; the message lists the known names.
    """
    names = tuple(c.strip() for item in cameras for c in item.split(",") if c.strip())
    unknown = [c for c in names if c not in CAMERAS]
    if unknown:
        raise ValueError(f"{field}: unknown camera(s) {unknown}; known: {','.join(CAMERAS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{field}: camera listed twice in {','.join(names)}")
    return names


@dataclasses.dataclass
class DoctorConfig:
    """Check that this machine can simulate and render the tasks."""

    render_check: bool = True
    """Create a task and render one camera frame (takes a few seconds)."""


@dataclasses.dataclass
class EnvsConfig:
    """List the registered dual-arm tasks."""

    json: bool = False
    """Print machine-readable JSON instead of a table."""


@dataclasses.dataclass
class DemosConfig:
    """Record successful scripted-expert episodes in the seed HDF5 layout (format: envs.recording)."""

    task: str
    """Task name (see `vla envs`)."""
    episodes: int
    """Number of successful episodes to write (failed expert attempts are skipped and counted)."""
    out: Path
    """Output folder; receives episode_{i}.hdf5 and dataset.json. An existing folder is continued."""
    image_size: int = 256
    """Square image side in pixels for every recorded camera."""
    cameras: tuple[str, ...] = CAMERAS
    """Cameras to record, comma- or space-separated (head,left_wrist,right_wrist,low)."""
    seed_start: int = 0
    """Seed of the first attempt; attempt k uses seed_start + k."""
    max_attempts: int | None = None
    """Give up after this many attempts (default: 3 x episodes + 10)."""
    instruction_split: Literal["seen", "unseen"] = "seen"
    """Templates of the episode's `instruction` attribute: seen or unseen (both lists are always stored)."""
    action_noise: float = 0.0
    """DART-style noise: std (m) of a correlated offset on the EXECUTED TCP targets; the clean action is recorded."""
    noise_correlation: float = 0.9
    """Per-step autocorrelation of that offset (an AR(1) process; 0.9 at 20 Hz drifts over ~0.5 s)."""
    visual_quality: VisualQuality = "fast"
    """Arm meshes the cameras see: fast (low-poly, 8-12x cheaper CPU frames, same physics) or full (stock)."""
    workers: int = 1
    """Processes running attempts (one env each); the folder is the same for any N."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        self.cameras = parse_cameras(self.cameras)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        check_visual_quality(self.visual_quality)
        if not 0.0 <= self.action_noise <= 0.05:
            raise ValueError(f"action_noise must be in [0, 0.05] m, got {self.action_noise}")
        if not 0.0 <= self.noise_correlation < 1.0:
            raise ValueError(f"noise_correlation must be in [0, 1), got {self.noise_correlation}")
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {self.out} exists and is not a folder")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.seed_start < 0:
            raise ValueError(f"seed_start must be >= 0, got {self.seed_start}")
        if self.max_attempts is not None and self.max_attempts < self.episodes:
            raise ValueError(f"max_attempts ({self.max_attempts}) must be >= episodes ({self.episodes})")
        if self.instruction_split not in ("seen", "unseen"):
            raise ValueError(f"instruction_split must be 'seen' or 'unseen', got {self.instruction_split!r}")
