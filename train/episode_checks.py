"""Per-file checks of an episode file (``train.episodes.validate_episode_dir`` runs them on every file).

Each check appends one message per problem to a ``problems`` list (file, key, expected vs actual) instead of
raising, so that one run of ``vla data check`` reports every problem of a folder at once.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from envs.layout import ACTION_DIM, ACTION_LAYOUT, CAMERA_TO_HDF5_KEY, CAMERAS, value_range


def read_instructions(ds: Any) -> list[str]:
    """Decode an instruction dataset to a list of non-empty, stripped strings.

    Accepts a scalar string, an array of fixed- or variable-length strings (``h5py.string_dtype()``), or a 1-D
    uint8 array of UTF-8 bytes.

    Raises:
        ValueError: any other dtype, or bytes that are not UTF-8.
    """
    import h5py

    if h5py.check_string_dtype(ds.dtype) is not None:
        raw = ds.asstr(encoding="utf-8")[()]
    elif ds.dtype == np.uint8 and ds.ndim == 1:
        raw = bytes(ds[()]).decode("utf-8")
    else:
        raise ValueError(
            f"expected a string, an array of strings or UTF-8 bytes, got dtype {ds.dtype} shape {ds.shape}"
        )
    items = [raw] if isinstance(raw, str) else [str(s) for s in np.asarray(raw, dtype=object).reshape(-1)]
    return [s.strip() for s in items if s.strip()]


def py_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [py_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_ranges(data: np.ndarray, name: str, key: str, problems: list[str]) -> None:
    """Note values outside ``envs.layout.VALUE_RANGES`` (unit or export errors: gripper 5.0, x = 1e6 m)."""
    for dim in range(data.shape[1]):
        lo, hi = value_range(dim)
        bad = np.nonzero((data[:, dim] < lo - 1e-6) | (data[:, dim] > hi + 1e-6))[0]
        if len(bad):
            problems.append(
                f"{name}: '{key}' {ACTION_LAYOUT[dim]}: expected values in [{lo:.4g}, {hi:.4g}], got "
                f"{data[bad[0], dim]:.6g} at step {int(bad[0])} ({len(bad)} step(s) out of range)"
            )


def read_matrix(
    f: Any, name: str, key: str, lengths: dict[str, int], problems: list[str], required_length: bool = True
) -> np.ndarray | None:
    """Read a required (T, 14) float dataset as float64, recording problems; None when missing or invalid.
    ``required_length=False``: its T is not compared with the other keys (a dataset that is not used)."""
    import h5py

    ds = f.get(key)
    if ds is None:
        problems.append(
            f"{name}: missing key '{key}': expected a (T, {ACTION_DIM}) float dataset, file has {sorted(f.keys())}"
        )
        return None
    if not isinstance(ds, h5py.Dataset):
        problems.append(f"{name}: '{key}': expected a dataset, got a {type(ds).__name__}")
        return None
    if required_length:
        lengths[key] = ds.shape[0] if ds.ndim else 0
    if ds.dtype.kind != "f":
        problems.append(f"{name}: '{key}': wrong dtype: expected float32/float64, got {ds.dtype}")
        return None
    if ds.ndim != 2 or ds.shape[1] != ACTION_DIM:
        problems.append(f"{name}: '{key}': wrong shape: expected (T, {ACTION_DIM}), got {ds.shape}")
        return None
    try:
        data = np.asarray(ds[()], dtype=np.float64)
    except OSError as err:
        problems.append(f"{name}: '{key}': unreadable data ({err})")
        return None
    bad = ~np.isfinite(data)
    if bad.any():
        rows, cols = np.nonzero(bad)
        dims = sorted({ACTION_LAYOUT[c] for c in cols.tolist()})
        problems.append(
            f"{name}: '{key}': expected finite values, got {int(bad.sum())} NaN/Inf entries (first at "
            f"step {int(rows[0])}, dims {dims})"
        )
        return None
    return data


def check_images(
    f: Any, name: str, cameras: tuple[str, ...], lengths: dict[str, int], problems: list[str], deep: bool = False
) -> dict[str, tuple[int, int]]:
    """Check camera datasets (the requested ones must exist); return camera -> (H, W) of the valid ones.
    ``deep`` reads every frame of the required cameras (a corrupt compressed chunk is named with its frame)."""
    import h5py

    shapes: dict[str, tuple[int, int]] = {}
    present = [c for c in CAMERAS if CAMERA_TO_HDF5_KEY[c] in f]
    for cam in cameras:
        if cam not in present:
            have = [CAMERA_TO_HDF5_KEY[c] for c in present]
            problems.append(
                f"{name}: missing key '{CAMERA_TO_HDF5_KEY[cam]}' (camera {cam}): expected a "
                f"(T, H, W, 3) uint8 dataset, file has cameras {have}"
            )
    for cam in present:
        key, required = CAMERA_TO_HDF5_KEY[cam], (not cameras or cam in cameras)
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            err = f"expected a dataset, got a {type(ds).__name__}"
        elif ds.dtype != np.uint8:
            err = f"wrong dtype: expected uint8, got {ds.dtype}"
        elif ds.ndim != 4 or ds.shape[3] != 3 or min(ds.shape[1:3]) < 1:
            err = f"wrong shape: expected (T, H, W, 3), got {ds.shape}"
        else:
            err = None
            shapes[cam] = (int(ds.shape[1]), int(ds.shape[2]))
        if err is None and required and deep:
            err = unreadable_frame(ds)
        if err and required:
            problems.append(f"{name}: '{key}': {err}")
        if required and isinstance(ds, h5py.Dataset) and ds.ndim >= 1:
            lengths[key] = ds.shape[0]
    if not cameras and not present:
        problems.append(
            f"{name}: no camera dataset: expected at least one of "
            f"{list(CAMERA_TO_HDF5_KEY.values())}, file has {sorted(f.keys())}"
        )
    return shapes


def unreadable_frame(ds: Any) -> str | None:
    """Read every frame; the first that fails to decompress, as a problem text (None when all read)."""
    for t in range(ds.shape[0]):
        try:
            ds[t]
        except (OSError, ValueError) as err:
            return f"step {t} (of {ds.shape[0]}) unreadable ({' '.join(str(err).split())[:200]})"
    return None


def check_instructions(f: Any, name: str, split: str, problems: list[str]) -> tuple[list[str], list[str]]:
    """Decode seen / unseen; record a problem when the requested split(s) give no instruction."""
    found: dict[str, list[str]] = {"seen": [], "unseen": []}
    state: dict[str, str] = {}
    for key in found:
        if key not in f:
            state[key] = "absent"
            continue
        try:
            found[key] = read_instructions(f[key])
            state[key] = f"{len(found[key])} instruction(s)"
        except (ValueError, OSError, AttributeError) as err:  # AttributeError: a group has no dtype
            problems.append(f"{name}: '{key}': unreadable instructions: {err}")
            state[key] = "unreadable"
    wanted = ("seen", "unseen") if split == "both" else (split,)
    if not any(found[k] for k in wanted) and not any(state[k] == "unreadable" for k in wanted):
        problems.append(
            f"{name}: missing key {' or '.join(repr(k) for k in wanted)}: expected at least one "
            f"instruction (instructions={split!r}), got seen: {state['seen']}, unseen: {state['unseen']}"
        )
    return found["seen"], found["unseen"]


def check_layout_attr(attrs: dict[str, Any], name: str, problems: list[str]) -> None:
    layout = attrs.get("action_layout")
    if layout is None:
        return
    try:
        parsed = json.loads(layout) if isinstance(layout, str) else list(layout)
    except (json.JSONDecodeError, TypeError):
        parsed = layout
    if not isinstance(parsed, (list, tuple)) or list(parsed) != list(ACTION_LAYOUT):
        problems.append(f"{name}: attr 'action_layout': expected {list(ACTION_LAYOUT)}, got {parsed}")
