"""Action / proprio normalization statistics in OpenVLA's ``dataset_statistics.json`` format.

File format (what openvla's ``save_dataset_statistics`` writes and OFT's deploy code reads)::

    {unnorm_key: {"action":  {"mean", "std", "max", "min", "q01", "q99", "mask"},
                  "proprio": {"mean", "std", "max", "min", "q01", "q99"[, "mask"]},
                  "num_transitions": int, "num_trajectories": int}}

Modes (OpenVLA-OFT ``NormalizationType``, ``prismatic/vla/constants.py``):
    * ``bounds_q99``: x' = clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    * ``bounds``:     same with min / max
    * ``normal``:     x' = (x - mean) / (std + 1e-8)
Dimensions whose ``mask`` is false (grippers by default) pass through unchanged. Unnormalization inverts each
mode: x = 0.5 (x' + 1) (hi - lo + 1e-8) + lo (OFT ``_unnormalize_actions``), x = x' (std + 1e-8) + mean.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.files import write_json_atomic

NORM_MODES = ("bounds_q99", "bounds", "normal")
EPS = 1e-8
STAT_KEYS = ("mean", "std", "max", "min", "q01", "q99")


@dataclasses.dataclass
class ArrayStats:
    """Per-dimension statistics of one quantity (action or proprio), each a (D,) float32 array."""

    mean: np.ndarray
    std: np.ndarray
    max: np.ndarray
    min: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    """(D,) bool: True where the dimension is (un)normalized."""

    def __post_init__(self) -> None:
        for key in STAT_KEYS:
            setattr(self, key, np.asarray(getattr(self, key), dtype=np.float32).reshape(-1))
        self.mask = np.asarray(self.mask, dtype=bool).reshape(-1)
        dims = {key: getattr(self, key).shape[0] for key in (*STAT_KEYS, "mask")}
        if len(set(dims.values())) != 1:
            raise ValueError(f"statistics have inconsistent lengths: {dims}")

    @property
    def dim(self) -> int:
        """D, the number of dimensions."""
        return int(self.mean.shape[0])

    @classmethod
    def compute(cls, data: np.ndarray, mask: np.ndarray | None = None) -> ArrayStats:
        """Statistics of (N, D) samples with the expressions of openvla ``get_dataset_statistics`` (float32).

        Raises:
            ValueError: ``data`` is not 2-D, is empty, or holds NaN/Inf.
        """
        x = np.asarray(data, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"need (N, D) samples with N > 0, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("statistics input contains NaN/Inf")
        m = np.ones(x.shape[1], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        return cls(
            mean=x.mean(0),
            std=x.std(0),
            max=x.max(0),
            min=x.min(0),
            q01=np.quantile(x, 0.01, axis=0),
            q99=np.quantile(x, 0.99, axis=0),
            mask=m,
        )

    def to_json(self) -> dict[str, list]:
        """JSON-ready dict (lists of floats / bools)."""
        out: dict[str, list] = {k: getattr(self, k).astype(float).tolist() for k in STAT_KEYS}
        out["mask"] = self.mask.tolist()
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "statistics") -> ArrayStats:
        """Parse one stats block; a missing ``mask`` means all dimensions are normalized (OFT proprio)."""
        missing = [k for k in STAT_KEYS if k not in d]
        if missing:
            raise ValueError(f"{where}: missing keys {missing} (have {sorted(d)})")
        n = len(d["mean"])
        return cls(**{k: d[k] for k in STAT_KEYS}, mask=d.get("mask", [True] * n))

    def _bounds(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        if mode == "bounds_q99":
            return self.q01, self.q99
        if mode == "bounds":
            return self.min, self.max
        raise ValueError(f"no bounds for mode {mode!r}")

    def normalize(self, x: np.ndarray, mode: str) -> np.ndarray:
        """Map raw values (..., D) to normalized values with ``mode``; masked-off dims pass through."""
        _check_mode(mode)
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.dim:
            raise ValueError(f"normalize: last dimension {x.shape[-1]} != statistics dimension {self.dim}")
        if mode == "normal":
            y = (x - self.mean) / (self.std + EPS)
        else:
            lo, hi = self._bounds(mode)
            y = np.clip(2.0 * (x - lo) / (hi - lo + EPS) - 1.0, -1.0, 1.0)
        return np.where(self.mask, y, x).astype(np.float32)

    def unnormalize(self, y: np.ndarray, mode: str, eps: float = EPS) -> np.ndarray:
        """Inverse of :meth:`normalize` (exact inside the clip range); masked-off dims pass through.

        ``eps`` is OFT's 1e-8 added to the range; the original OpenVLA discrete-token decoder uses ``eps=0``.
        """
        _check_mode(mode)
        y = np.asarray(y, dtype=np.float32)
        if y.shape[-1] != self.dim:
            raise ValueError(f"unnormalize: last dimension {y.shape[-1]} != statistics dimension {self.dim}")
        if mode == "normal":
            x = y * (self.std + eps) + self.mean
        else:
            lo, hi = self._bounds(mode)
            x = 0.5 * (y + 1.0) * (hi - lo + eps) + lo
        return np.where(self.mask, x, y).astype(np.float32)


@dataclasses.dataclass
class NormStats:
    """Statistics of one dataset, stored under ``unnorm_key`` in ``dataset_statistics.json``."""

    action: ArrayStats
    proprio: ArrayStats | None = None
    num_transitions: int = 0
    num_trajectories: int = 0

    def to_json(self) -> dict[str, Any]:
        """The per-key block of ``dataset_statistics.json``."""
        out: dict[str, Any] = {"action": self.action.to_json()}
        if self.proprio is not None:
            out["proprio"] = self.proprio.to_json()
        out["num_transitions"] = int(self.num_transitions)
        out["num_trajectories"] = int(self.num_trajectories)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "dataset_statistics") -> NormStats:
        """Parse the per-key block (``proprio`` optional)."""
        if "action" not in d:
            raise ValueError(f"{where}: no 'action' statistics (keys: {sorted(d)})")
        proprio = ArrayStats.from_json(d["proprio"], f"{where}.proprio") if "proprio" in d else None
        return cls(
            action=ArrayStats.from_json(d["action"], f"{where}.action"),
            proprio=proprio,
            num_transitions=int(d.get("num_transitions", 0)),
            num_trajectories=int(d.get("num_trajectories", 0)),
        )


def _check_mode(mode: str) -> None:
    if mode not in NORM_MODES:
        raise ValueError(f"unknown normalization mode {mode!r}; known: {list(NORM_MODES)}")


def save_dataset_statistics(path: str | os.PathLike, stats: Mapping[str, NormStats]) -> Path:
    """Write ``{unnorm_key: stats}`` to ``path`` (json, indent 2) atomically and durably (``common.files``)."""
    return write_json_atomic(path, {key: s.to_json() for key, s in stats.items()})


def load_dataset_statistics(path: str | os.PathLike) -> dict[str, NormStats]:
    """Read every ``unnorm_key`` block of a ``dataset_statistics.json``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not valid JSON or a block lacks required keys (message names file and key).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a non-empty object of unnorm_key -> statistics")
    return {key: NormStats.from_json(block, f"{path}[{key!r}]") for key, block in raw.items()}


def select_unnorm_key(stats: Mapping[str, NormStats], unnorm_key: str | None) -> str:
    """Pick the key to unnormalize with: the given one, or the only one present.

    Raises:
        ValueError: ``unnorm_key`` is absent, or None while several keys exist (lists them).
    """
    if unnorm_key is None:
        if len(stats) != 1:
            raise ValueError(f"several datasets in statistics, pass unnorm_key: one of {sorted(stats)}")
        return next(iter(stats))
    if unnorm_key not in stats:
        raise ValueError(f"unnorm_key {unnorm_key!r} not in statistics; available: {sorted(stats)}")
    return unnorm_key
