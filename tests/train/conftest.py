"""Fixtures of the train/ tests: synthetic episode folders (see synthetic_episodes.py for the contents)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from synthetic_episodes import DROP as _DROP
from synthetic_episodes import write_episode
from trainer_fixtures import write_dataset


@pytest.fixture
def DROP() -> object:
    """Sentinel for ``write_episode(overrides={key: DROP})``: omit that key."""
    return _DROP


@pytest.fixture
def episode_writer() -> Callable[..., Path]:
    """The :func:`write_episode` function."""
    return write_episode


@pytest.fixture
def make_dir(tmp_path: Path) -> Callable[..., Path]:
    """``make_dir(lengths=(20, 22, 24), name="demo", **kw)`` writes episode_{i}.hdf5 for each length."""

    def _make(lengths: Sequence[int] = (20, 22, 24), name: str = "demo", **kw: Any) -> Path:
        folder = tmp_path / name
        for i, n in enumerate(lengths):
            write_episode(folder / f"episode_{i}.hdf5", episode=i, num_steps=n, **kw)
        return folder

    return _make


@pytest.fixture
def episode_dir(make_dir: Callable[..., Path]) -> Path:
    """A valid folder of 3 episodes (T = 20, 22, 24) with head + left_wrist cameras, proprio and instructions."""
    folder = make_dir()
    (folder / "dataset.json").write_text('{"task": "LiftCube-v1"}')
    return folder


@pytest.fixture
def _restore_threads():
    """Trainer runs set torch's thread count; put it back after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-episode synthetic dataset (trainer_fixtures.write_dataset), shared by a test module."""
    return write_dataset(tmp_path_factory.mktemp("data") / "lift", episodes=3)
