"""``vla data check DIR``: summary on valid data, non-zero exit with the message on invalid data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from scripts.cli import main
from train.config import DataCheckConfig
from train.datacheck import run_data_check


def test_summary_lists_counts_cameras_ranges_and_instructions(episode_dir: Path) -> None:
    console = Console(record=True, width=200)
    assert run_data_check(DataCheckConfig(data_dir=episode_dir, chunk_size=8), console) == 0
    text = console.export_text()
    for fragment in (
        "3 (indices 0 .. 2)",
        "66",
        "min 20, median 22, max 24",
        "45 for chunk_size 8",
        "LiftCube-v1",
        "head_camera_image",
        "left_wrist_image",
        "32x32 (3)",
        "present in 3 of 3",
        "left_x",
        "right_gripper",
        "+43.0000",
        "'pick up the cube'",
        "'raise the block'",
    ):
        assert fragment in text, f"{fragment!r} missing from:\n{text}"
    assert sorted(p.name for p in episode_dir.iterdir())[-1] == "episode_2.hdf5", "check writes nothing"


def test_cli_exit_codes(episode_dir: Path, episode_writer, capsys) -> None:
    with pytest.raises(SystemExit) as ok:
        main(["data", "check", str(episode_dir), "--cameras", "head", "--chunk-size", "4"])
    assert ok.value.code == 0
    assert "57 for chunk_size 4" in capsys.readouterr().out
    episode_writer(episode_dir / "episode_1.hdf5", episode=1, overrides={"action": np.full((20, 14), np.nan)})
    with pytest.raises(SystemExit) as bad:
        main(["data", "check", str(episode_dir)])
    assert bad.value.code == 2
    err = capsys.readouterr().err
    assert "episode_1.hdf5" in err and "'action'" in err and "NaN/Inf" in err
