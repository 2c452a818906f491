"""benchmarks/probe_proprio.py: passthrough and open-loop error on hand-computable fake policies."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from benchmarks.probe_proprio import XY_DIMS, load_steps, main, probe
from policies.base import PolicyMetadata
from train.episodes import EpisodeDataError

H = 4


def _write(folder: Path, episodes: int = 2, steps: int = 12) -> Path:
    """Episodes with proprio 0 and action x/y of both arms = 0.01 * t (m); head images hold the episode index."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        action = np.zeros((steps, 14))
        action[:, list(XY_DIMS)] = 0.01 * np.arange(steps)[:, None]
        with h5py.File(folder / f"episode_{i}.hdf5", "w") as f:
            f["head_camera_image"] = np.full((steps, 8, 8, 3), i, np.uint8)
            f["proprio"] = np.zeros((steps, 14))
            f["action"] = action
            f["seen"] = np.array([b"lift the bar"], dtype=h5py.string_dtype())
    return folder


class _Copycat:
    """Every chunk row is the current proprio: passthrough 1."""

    metadata = PolicyMetadata(name="copycat", cameras=("head",), chunk_size=H)

    def predict_action_chunk(self, obs):
        return np.repeat(np.asarray(obs.proprio, np.float32)[:, None], H, axis=1)


class _Looker(_Copycat):
    """Every chunk row is the recorded target (0.01 m per step, read off nothing but t): passthrough 0."""

    def __init__(self):
        self.t = 0

    def predict_action_chunk(self, obs):
        out = np.zeros((1, H, 14), np.float32)
        out[0][:, list(XY_DIMS)] = 0.01 * (self.t + np.arange(H))[:, None]
        return out


def test_copycat_passes_the_shift_on_and_misses_by_the_motion_ahead(tmp_path: Path) -> None:
    rows = load_steps(_write(tmp_path / "d"), ("head",), [2, 5, 99], episodes=2)
    assert sorted({r["t"] for r in rows}) == [2, 5] and len(rows) == 4, "t beyond an episode is skipped"
    assert rows[0]["images"]["head"].shape == (1, 8, 8, 3) and rows[0]["instruction"] == "lift the bar"
    got = probe(_Copycat(), rows, shift=0.02)
    assert got[2]["passthrough"] == pytest.approx(1.0) and got[2]["samples"] == 2
    # the copycat stays at 0 while the recorded action at t + H - 1 is 0.01 * (t + 3) in x and y
    assert got[5]["openloop_xy_err_cm"]["mean"] == pytest.approx(np.hypot(8, 8), abs=0.01)


def test_an_image_driven_policy_ignores_the_shift(tmp_path: Path) -> None:
    rows = load_steps(_write(tmp_path / "d"), ("head",), [3], episodes=1)
    looker = _Looker()
    looker.t = 3
    got = probe(looker, rows, shift=0.02)
    assert got[3]["passthrough"] == pytest.approx(0.0)
    assert got[3]["openloop_xy_err_cm"]["mean"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shift"):
        probe(looker, rows, shift=0.0)


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(EpisodeDataError, match="empty directory"):
        load_steps(tmp_path, ("head",), [0], episodes=1)
    data = _write(tmp_path / "d", episodes=1)
    with pytest.raises(KeyError, match="left_wrist_image"):
        load_steps(data, ("left_wrist",), [0], episodes=1)
    out = tmp_path / "probe.json"
    with pytest.raises(SystemExit):
        main(["--checkpoint", "x", "--data", str(data), "--shift", "0", "--out", str(out)])
    assert not out.exists()
