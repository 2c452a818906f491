"""Synthetic episode files in the seed HDF5 layout for the train/ tests (T ~ 20, 32 x 32 images).

Contents are a function of (episode, t) so tests can check that the right rows come back:
    image[t] of camera c is filled with ``(t * 7 + c * 50 + episode) % 256`` (c = position in envs CAMERAS),
    action[t, d] = episode * 10 + t + d / 100 (grippers: +1 / -1 alternating every 5 steps),
    proprio[t] = action[t] - 0.001 (grippers equal), relative_action = action[t+1] - action[t] (last repeated).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from envs.layout import ACTION_LAYOUT, CAMERA_TO_HDF5_KEY, CAMERAS, GRIPPER_DIMS

DROP = object()
"""Sentinel for ``write_episode(overrides={key: DROP})``: omit that key."""


def make_actions(episode: int, num_steps: int) -> np.ndarray:
    """(T, 14) float64 actions of the synthetic episode ``episode``."""
    t = np.arange(num_steps, dtype=np.float64)[:, None]
    action = episode * 10.0 + t + np.arange(14)[None, :] / 100.0
    grip = np.where((np.arange(num_steps) // 5) % 2 == 0, 1.0, -1.0)
    for d in GRIPPER_DIMS:
        action[:, d] = grip
    return action


def frame_value(episode: int, camera: str, t: int) -> int:
    """The constant pixel value of frame t of ``camera`` in the synthetic episode ``episode``."""
    return (t * 7 + CAMERAS.index(camera) * 50 + episode) % 256


def write_episode(
    path: Path,
    episode: int = 0,
    num_steps: int = 20,
    cameras: Sequence[str] = ("head", "left_wrist"),
    size: tuple[int, int] = (32, 32),
    proprio: bool = True,
    seen: Any = ("pick up the cube", "grasp the cube", "lift the cube"),
    unseen: Any = ("raise the block",),
    task: str | None = "LiftCube-v1",
    overrides: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write one synthetic episode; ``overrides`` maps a key to replacement data, or to ``DROP`` to omit it.

    ``seen`` / ``unseen``: a tuple/list is stored as a 1-D variable-length UTF-8 string array, a ``str`` as a
    scalar string, ``bytes`` as a scalar bytes string, a numpy array as is, None omits the key.
    """
    overrides = dict(overrides or {})
    action = make_actions(episode, num_steps)
    data: dict[str, Any] = {}
    for cam in cameras:
        frames = np.empty((num_steps, *size, 3), dtype=np.uint8)
        for t in range(num_steps):
            frames[t] = frame_value(episode, cam, t)
        data[CAMERA_TO_HDF5_KEY[cam]] = frames
    data["action"] = action
    data["relative_action"] = (
        np.concatenate([np.diff(action, axis=0), np.diff(action, axis=0)[-1:]], axis=0)
        if num_steps > 1
        else np.zeros_like(action)
    )
    if proprio:
        prop = action - 0.001
        prop[:, list(GRIPPER_DIMS)] = action[:, list(GRIPPER_DIMS)]
        data["proprio"] = prop
    for key, value in (("seen", seen), ("unseen", unseen)):
        if isinstance(value, (list, tuple)):
            data[key] = np.array(list(value), dtype=h5py.string_dtype())
        elif value is not None:
            data[key] = value
    for key, value in overrides.items():
        if value is DROP:
            data.pop(key, None)
        else:
            data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if isinstance(value, np.ndarray) and value.ndim == 4:
                f.create_dataset(key, data=value, chunks=(1, *value.shape[1:]), compression="lzf")
            else:
                f.create_dataset(key, data=value)
        base_attrs = {
            "seed": episode,
            "control_mode": "pd_ee_pose",
            "format_version": 1,
            "action_layout": str(list(ACTION_LAYOUT)).replace("'", '"'),
            "num_steps": num_steps,
        }
        if task is not None:
            base_attrs["task"] = task
        base_attrs.update(attrs or {})
        for key, value in base_attrs.items():
            f.attrs[key] = value
    return path
