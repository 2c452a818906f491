"""Reading and validating a folder of recorded dual-arm episodes (``episode_{i}.hdf5``) before training.

Episode file layout (one file per episode, T steps; step t = the observation before action t), as written by
``vla demos`` or by RoboTwin-style exports:

    head_camera_image | left_wrist_image | right_wrist_image | low_cam_image   (T, H, W, 3) uint8, a subset
    action            (T, 14) float   absolute targets, per arm [x, y, z, roll, pitch, yaw, gripper], left first
    relative_action   (T, 14) float   action[t+1] - action[t], last row repeated
    proprio           (T, 14) float   measured TCP pose + gripper (optional: RoboTwin exports have none)
    seen, unseen      instruction(s): a scalar string, a 1-D array of (variable-length) strings, or UTF-8 bytes;
                      either may be absent, but at least one instruction must exist
    attrs             task, seed, control_mode, action_layout (JSON), cameras (JSON), ... (all optional here)

Camera names map to dataset keys through ``envs.layout.CAMERA_TO_HDF5_KEY``. Validation reads metadata, the
(T, 14) action / proprio arrays (finite, within ``envs.layout.VALUE_RANGES``; proprio whenever present) and the
instruction strings; image pixels only with ``vla data check --deep`` (every frame decompressed). A frame that
fails to read during training stops the run with the file, key and step (``train.dataset``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.layout import CAMERA_TO_HDF5_KEY, CAMERAS
from train.episode_checks import (
    check_images,
    check_instructions,
    check_layout_attr,
    check_ranges,
    py_value,
    read_matrix,
)

if TYPE_CHECKING:
    from train.config import DataCheckConfig, DataConfig

EPISODE_GLOB = "episode_*.hdf5"
MAX_REPORTED_PROBLEMS = 20
_EPISODE_RE = re.compile(r"^episode_(\d+)\.hdf5$")


class EpisodeDataError(ValueError):
    """Invalid episode data; the message names the file, the key and expected vs actual for every problem."""

    @classmethod
    def unwrap(cls, err: EpisodeDataError) -> EpisodeDataError:
        """The original error of one re-raised by a DataLoader worker (torch wraps the message in "Caught ... in
        DataLoader worker process N" and the worker's traceback, ``torch/_utils.py`` ExceptionWrapper)."""
        text = str(err)
        if not text.startswith("Caught ") or "Traceback" not in text:
            return err
        last = [line for line in text.splitlines() if line.strip()][-1]
        return cls(last.split(f"{cls.__name__}: ", 1)[-1])


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: identity equality (array fields)
class EpisodeInfo:
    """Metadata of one validated episode file (no pixels), cheap to pickle into DataLoader workers.

    Attributes:
        path: the episode file.
        index: i of ``episode_{i}.hdf5``.
        num_steps: T.
        image_shapes: camera name -> (H, W) for every camera dataset present in the file.
        has_proprio: whether a ``proprio`` dataset is present.
        seen, unseen: instruction strings of each split (possibly empty tuples).
        action_min, action_max: (14,) float64 per-dimension range of the checked action key.
        attrs: root attributes decoded to Python values (bytes -> str, numpy scalars -> Python scalars).
    """

    path: Path
    index: int
    num_steps: int
    image_shapes: dict[str, tuple[int, int]]
    has_proprio: bool
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    action_min: np.ndarray
    action_max: np.ndarray
    attrs: dict[str, Any]

    def instruction_pool(self, split: str) -> tuple[str, ...]:
        """Instructions of ``split`` ("seen" | "unseen" | "both" = seen followed by unseen)."""
        if split == "both":
            return self.seen + self.unseen
        return self.seen if split == "seen" else self.unseen

    def num_samples(self, chunk_size: int, pad_end: bool) -> int:
        """Training samples of this episode: T with end padding, else T - chunk_size + 1 (never negative)."""
        return self.num_steps if pad_end else max(0, self.num_steps - chunk_size + 1)


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
    """What :func:`validate_episode_dir` found in a valid folder.

    Attributes:
        data_dir: the folder.
        episodes: every episode, sorted by index.
        cameras: the cameras the config asked for, or (no cameras asked) those present in every episode, in
            ``envs.layout.CAMERAS`` order.
        image_size: (H, W) of every frame of those cameras (identical across cameras and episodes).
        action_key: the action dataset that was checked.
        chunk_size, pad_end: the sampling settings the sample count refers to.
        warnings: values outside ``envs.layout.VALUE_RANGES`` (unit or export errors such as gripper 5.0 or
            x = 1e6 m), file, key, step and value each; printed by ``vla data check`` and warned by ``vla train``.
    """

    data_dir: Path
    episodes: tuple[EpisodeInfo, ...]
    cameras: tuple[str, ...]
    image_size: tuple[int, int]
    action_key: str
    chunk_size: int
    pad_end: bool
    warnings: tuple[str, ...] = ()

    @property
    def num_steps(self) -> int:
        """Total steps over all episodes."""
        return sum(e.num_steps for e in self.episodes)

    @property
    def num_samples(self) -> int:
        """Training samples for the chunk size (see :meth:`EpisodeInfo.num_samples`)."""
        return sum(e.num_samples(self.chunk_size, self.pad_end) for e in self.episodes)

    @property
    def action_min(self) -> np.ndarray:
        """(14,) per-dimension minimum over all episodes."""
        return np.min([e.action_min for e in self.episodes], axis=0)

    @property
    def action_max(self) -> np.ndarray:
        """(14,) per-dimension maximum over all episodes."""
        return np.max([e.action_max for e in self.episodes], axis=0)

    @property
    def has_proprio(self) -> bool:
        """Whether every episode has a proprio dataset."""
        return all(e.has_proprio for e in self.episodes)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Distinct ``task`` attributes, sorted (empty when no file has one)."""
        return tuple(sorted({str(e.attrs["task"]) for e in self.episodes if e.attrs.get("task")}))

    @property
    def visual_qualities(self) -> tuple[str, ...]:
        """Distinct simulator visual qualities the frames were rendered with (``envs.visuals``), sorted: the
        ``visual_quality`` attribute, "full" for files of ``vla demos`` older than that attribute (stock meshes),
        nothing for files from elsewhere."""
        found = {e.attrs.get("visual_quality") or ("full" if "expert" in e.attrs else None) for e in self.episodes}
        return tuple(sorted(str(v) for v in found if v))


def find_episode_files(data_dir: str | Path) -> list[tuple[int, Path]]:
    """``(index, path)`` of every ``episode_{i}.hdf5`` in ``data_dir``, sorted by the integer i.

    Raises:
        EpisodeDataError: the folder is missing or empty of episodes, a file name's index is not an integer,
            or two files share an index (``episode_1`` and ``episode_01``).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise EpisodeDataError(f"{data_dir}: {what}; expected a folder of episode_{{i}}.hdf5 files")
    found: dict[int, Path] = {}
    problems = []
    for path in sorted(data_dir.glob(EPISODE_GLOB)):
        match = _EPISODE_RE.match(path.name)
        if match is None:
            problems.append(f"{path.name}: expected a file name episode_<integer>.hdf5")
        elif int(match.group(1)) in found:
            problems.append(
                f"{path.name}: episode index {int(match.group(1))} also used by {found[int(match.group(1))].name}"
            )
        else:
            found[int(match.group(1))] = path
    if problems:
        raise EpisodeDataError(_format_problems(data_dir, problems))
    if not found:
        others = sorted(p.name for p in data_dir.iterdir())[:5]
        raise EpisodeDataError(
            f"{data_dir}: empty directory: expected episode_{{i}}.hdf5 files, found "
            f"{len(others) and others or 'nothing'}"
        )
    return sorted(found.items())


def validate_episode_dir(cfg: DataConfig | DataCheckConfig) -> DatasetSummary:
    """Check every episode of ``cfg.data_dir`` against ``cfg``, before anything is trained or written.

    Per file: readable HDF5; the requested cameras (``cfg.cameras``; none asked = at least one present) as
    (T, H, W, 3) uint8; ``cfg.action_key`` as (T, 14) float without NaN/Inf; ``proprio`` likewise when
    ``cfg.use_proprio``; the same T for every key; T >= chunk_size (T >= 1 with ``pad_end``); at least one
    instruction in the requested split(s); a stored ``action_layout`` attr equal to ``envs.layout.ACTION_LAYOUT``.
    Across files: the same action dimension and the same frame size for the used cameras.

    Returns:
        the :class:`DatasetSummary` of the valid folder.

    Raises:
        EpisodeDataError: one message listing up to 20 problems, each naming file, key, expected vs actual.
    """
    files = find_episode_files(cfg.data_dir)
    infos: list[EpisodeInfo] = []
    problems: list[str] = []
    action_dims: dict[int, list[str]] = {}
    notes: list[str] = []
    for index, path in files:
        info, dim, file_problems = _inspect_file(path, index, cfg, notes)
        problems += file_problems
        if dim is not None:
            action_dims.setdefault(dim, []).append(path.name)
        if info is not None:
            infos.append(info)
    if len(action_dims) > 1:
        detail = "; ".join(f"{d}-D in {_few(names)}" for d, names in sorted(action_dims.items()))
        problems.append(f"inconsistent action dims across files for '{cfg.action_key}': {detail}")
    cameras, image_size = _check_cameras_across(infos, cfg.cameras, problems)
    if problems:
        raise EpisodeDataError(_format_problems(cfg.data_dir, problems, len(files)))
    return DatasetSummary(
        data_dir=Path(cfg.data_dir),
        episodes=tuple(infos),
        cameras=cameras,
        image_size=image_size,
        action_key=cfg.action_key,
        chunk_size=cfg.chunk_size,
        pad_end=cfg.pad_end,
        warnings=tuple(notes),
    )


# ----------------------------------------------------------------------------------------------------------- helpers


def _few(names: Sequence[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _format_problems(data_dir: Path, problems: list[str], num_files: int | None = None) -> str:
    head = f"invalid episode data in {data_dir}: {len(problems)} problem(s)"
    if num_files is not None:
        head += f" ({num_files} episode file(s) checked)"
    lines = [head] + [f"  - {p}" for p in problems[:MAX_REPORTED_PROBLEMS]]
    if len(problems) > MAX_REPORTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_REPORTED_PROBLEMS} more")
    return "\n".join(lines)


def _inspect_file(
    path: Path, index: int, cfg: Any, notes: list[str]
) -> tuple[EpisodeInfo | None, int | None, list[str]]:
    """Check one file; return (info or None when it has problems, action dim or None, problems). Values out of
    their plausible range are appended to ``notes`` (warnings: they do not stop a run)."""
    import h5py

    name = path.name
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        return None, None, [f"{name}: unreadable file: expected an HDF5 episode file, got error: {err}"]
    problems: list[str] = []
    with f:
        lengths: dict[str, int] = {}
        action = read_matrix(f, name, cfg.action_key, lengths, problems)
        raw = f.get(cfg.action_key)
        dim = int(raw.shape[1]) if isinstance(raw, h5py.Dataset) and raw.ndim == 2 else None
        if action is not None and cfg.action_key == "action":
            check_ranges(action, name, "action", notes)
        if cfg.use_proprio or "proprio" in f:  # a broken proprio is reported even when it is not trained on
            proprio = read_matrix(f, name, "proprio", lengths, problems, required_length=cfg.use_proprio)
            if proprio is not None:
                check_ranges(proprio, name, "proprio", notes)
        shapes = check_images(f, name, cfg.cameras, lengths, problems, deep=getattr(cfg, "deep", False))
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"'{k}' has {n}" for k, n in lengths.items())
            problems.append(f"{name}: T mismatch between keys: expected the same number of steps, got {detail}")
        num_steps = lengths.get(cfg.action_key, 0)
        if action is not None and num_steps == 0:
            problems.append(f"{name}: '{cfg.action_key}': expected at least 1 step, got 0")
        elif action is not None and num_steps < cfg.chunk_size and not cfg.pad_end:
            problems.append(
                f"{name}: '{cfg.action_key}': episode shorter than the chunk: expected T >= chunk_size "
                f"{cfg.chunk_size}, got T = {num_steps} (set pad_end to use short episodes)"
            )
        seen, unseen = check_instructions(f, name, cfg.instructions, problems)
        attrs = {k: py_value(v) for k, v in f.attrs.items()}
        check_layout_attr(attrs, name, problems)
        has_proprio = isinstance(f.get("proprio"), h5py.Dataset)
    if problems or action is None:
        return None, dim, problems
    info = EpisodeInfo(
        path=path,
        index=index,
        num_steps=num_steps,
        image_shapes=shapes,
        has_proprio=has_proprio,
        seen=tuple(seen),
        unseen=tuple(unseen),
        action_min=action.min(0),
        action_max=action.max(0),
        attrs=attrs,
    )
    return info, dim, problems


def _check_cameras_across(
    infos: list[EpisodeInfo], cameras: tuple[str, ...], problems: list[str]
) -> tuple[tuple[str, ...], tuple[int, int]]:
    """Resolve the used cameras and check that their frames share one (H, W) across cameras and episodes."""
    if not infos:
        return tuple(cameras), (0, 0)
    if not cameras:
        cameras = tuple(c for c in CAMERAS if all(c in e.image_shapes for e in infos))
        if not cameras:
            per_file = "; ".join(f"{e.path.name}: {sorted(e.image_shapes)}" for e in infos[:4])
            problems.append(
                f"no camera is present in every episode: expected at least one shared camera, got {per_file}"
            )
            return (), (0, 0)
    ref_ep, ref_cam = infos[0], cameras[0]
    ref = ref_ep.image_shapes[ref_cam]
    for e in infos:
        for cam in cameras:
            if e.image_shapes[cam] != ref:
                problems.append(
                    f"{e.path.name}: '{CAMERA_TO_HDF5_KEY[cam]}': expected frames of {ref[0]}x{ref[1]} (as "
                    f"'{CAMERA_TO_HDF5_KEY[ref_cam]}' in {ref_ep.path.name}; views are stacked), got "
                    f"{e.image_shapes[cam][0]}x{e.image_shapes[cam][1]}"
                )
    return tuple(cameras), ref
