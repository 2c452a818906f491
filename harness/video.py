"""Episode videos: camera tiling, a text overlay, and mp4 encoding off the rollout loop.

One file per episode, ``OUT/videos/{task}--seed{seed}--{success|failure|error}.mp4`` (H.264, yuv420p, 20 fps =
the control frequency). Frame 0 is the observation after ``env.reset``; frame t the observation after step t.
With ``--video-stride k`` only every k-th step is kept (plus the last one) and the video plays at 20 / k fps, so
it still runs in real time; the overlay shows each frame's step.
Each frame shows the rendered cameras side by side (in the order given; images smaller than 256 px are
upscaled by an integer factor, nearest neighbour, so the text stays legible) above a text band: task, seed,
step / max steps, the instruction (wrapped) and the success flag. Encoding runs in a background thread
(ffmpeg itself is a subprocess), so the rollout loop only copies frames; files are written under
``videos/.partial/`` and renamed into place when complete.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

VIDEO_DIR = "videos"
PARTIAL_DIR = ".partial"
FPS = 20
MIN_DISPLAY_PX = 256
OUTCOMES = ("success", "failure", "error")


def video_name(task: str, seed: int, outcome: str) -> str:
    """``{task}--seed{seed}--{outcome}.mp4``; outcome is success, failure or error."""
    if outcome not in OUTCOMES:
        raise ValueError(f"video outcome must be one of {OUTCOMES}, got {outcome!r}")
    return f"{task}--seed{int(seed)}--{outcome}.mp4"


def tile_cameras(images: Mapping[str, np.ndarray], cameras: Sequence[str]) -> np.ndarray:
    """Place (H, W, 3) uint8 camera images side by side in ``cameras`` order -> (H, sum W, 3) uint8.

    Raises:
        ValueError: no cameras, a missing camera, or images of different heights.
    """
    if not cameras:
        raise ValueError("tile_cameras: no cameras to tile")
    missing = [c for c in cameras if c not in images]
    if missing:
        raise ValueError(f"tile_cameras: cameras {missing} not among the rendered images {sorted(images)}")
    heights = {images[c].shape[0] for c in cameras}
    if len(heights) != 1:
        raise ValueError(f"tile_cameras: images differ in height {sorted(heights)}")
    return np.concatenate([np.asarray(images[c], dtype=np.uint8) for c in cameras], axis=1)


def _wrap(text: str, width_px: int, scale: float) -> list[str]:
    import cv2

    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width_px:
            lines.append(current)
            current = word
        else:
            current = trial
    return lines + ([current] if current else [])


@dataclasses.dataclass(frozen=True)
class OverlayInfo:
    """What the text band shows (constant over an episode)."""

    task: str
    seed: int
    instruction: str
    max_steps: int


def compose_frame(tiled: np.ndarray, info: OverlayInfo, step: int, success: bool, error: bool = False) -> np.ndarray:
    """Upscale a tiled frame for legibility and add the text band below it; returns even-sized (H, W, 3) uint8."""
    import cv2

    factor = max(1, -(-MIN_DISPLAY_PX // tiled.shape[0]))  # ceil
    img = np.repeat(np.repeat(tiled, factor, axis=0), factor, axis=1) if factor > 1 else tiled
    width = img.shape[1]
    scale, thick = 0.45, 1
    line_h = 16
    lines = _wrap(f"{info.task}  seed {info.seed}  step {step}/{info.max_steps}", width - 8, scale)
    lines += _wrap(info.instruction, width - 8, scale)
    status = "ERROR" if error else ("SUCCESS" if success else "no success yet")
    lines.append(status)
    band = np.zeros((line_h * len(lines) + 6, width, 3), dtype=np.uint8)
    for i, text in enumerate(lines):
        color = (255, 255, 255)
        if i == len(lines) - 1:
            color = (255, 80, 80) if error else ((80, 255, 80) if success else (200, 200, 200))
        cv2.putText(band, text, (4, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
    frame = np.concatenate([img, band], axis=0)
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2  # yuv420p needs even sides
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
    return np.ascontiguousarray(frame)


@dataclasses.dataclass
class EpisodeFrames:
    """Raw frames of one episode, buffered until its outcome is known (tiled + overlaid in the writer thread)."""

    info: OverlayInfo
    cameras: tuple[str, ...]
    stride: int = 1
    """Control steps between kept frames (the video's fps is FPS / stride)."""
    frames: list[np.ndarray] = dataclasses.field(default_factory=list)
    steps: list[int] = dataclasses.field(default_factory=list)
    success: list[bool] = dataclasses.field(default_factory=list)

    def add(self, images: Mapping[str, np.ndarray], index: int, step: int, success: bool) -> None:
        """Copy sub-env ``index``'s images (cam -> (B, H, W, 3)) of step ``step`` into the buffer."""
        self.frames.append(tile_cameras({c: images[c][index] for c in self.cameras}, self.cameras))
        self.steps.append(int(step))
        self.success.append(bool(success))


class VideoError(RuntimeError):
    """An episode video could not be written (encoder failure, disk full); nothing was left in videos/."""


def encode_episode(frames: EpisodeFrames, path: Path, error: bool = False) -> Path:
    """Encode ``frames`` to ``path`` (H.264 mp4) through a ``.partial`` file, check that the result decodes to
    every frame, then rename it into place; returns ``path``.

    Raises:
        VideoError: ffmpeg failed or wrote a file that does not decode to every frame (e.g. no space left on the
            device: ffmpeg itself does not fail then); the partial file is removed.
    """
    import imageio.v2 as imageio
    import imageio_ffmpeg

    path = Path(path)
    partial = path.parent / PARTIAL_DIR / path.name
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = imageio.get_writer(
            partial,
            format="FFMPEG",
            fps=FPS / max(1, frames.stride),
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
            ffmpeg_params=["-preset", "veryfast", "-threads", "1", "-movflags", "+faststart"],
        )
        try:
            last = len(frames.frames) - 1
            for i, (tiled, step, ok) in enumerate(zip(frames.frames, frames.steps, frames.success)):
                writer.append_data(compose_frame(tiled, frames.info, step, ok, error=error and i == last))
        finally:
            writer.close()
        try:
            decoded, _ = imageio_ffmpeg.count_frames_and_secs(str(partial))
        except RuntimeError:  # ffmpeg cannot even open it: a file cut short
            decoded = 0
        if decoded != len(frames.frames):
            raise VideoError(
                f"{path.name}: the encoded file decodes to {decoded} of {len(frames.frames)} frames "
                f"({partial.stat().st_size} bytes; disk full?)"
            )
        os.replace(partial, path)
    except VideoError:
        partial.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError, ValueError) as err:
        partial.unlink(missing_ok=True)
        raise VideoError(f"{path.name}: encoding failed ({type(err).__name__}: {err})") from err
    return path


class VideoWriter:
    """Encodes episode videos in one background thread.

    ``submit`` returns a Future resolving to the written path; ``close`` waits for every pending video.
    """

    def __init__(self, video_dir: Path):
        self.video_dir = Path(video_dir)
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="video")

    def remove_existing(self, task: str, seed: int) -> None:
        """Delete earlier videos of (task, seed) (a retried episode must not leave two files)."""
        for outcome in OUTCOMES:
            (self.video_dir / video_name(task, seed, outcome)).unlink(missing_ok=True)

    def submit(self, frames: EpisodeFrames, outcome: str) -> concurrent.futures.Future:
        """Queue ``frames`` for encoding as ``video_name(task, seed, outcome)``."""
        path = self.video_dir / video_name(frames.info.task, frames.info.seed, outcome)
        return self._pool.submit(encode_episode, frames, path, outcome == "error")

    def close(self) -> None:
        """Wait for all queued videos, stop the thread and remove the empty ``.partial`` folder."""
        self._pool.shutdown(wait=True)
        partial = self.video_dir / PARTIAL_DIR
        if partial.is_dir() and not any(partial.iterdir()):
            partial.rmdir()
