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


def _corrupt_chunk(path: Path, key: str = "head_camera_image", frame: int = 7) -> None:
    """Overwrite the compressed bytes of one frame's chunk (the file's metadata stays valid)."""
    import h5py

    with h5py.File(path, "r") as f:
        info = f[key].id.get_chunk_info_by_coord((frame, 0, 0, 0))
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * info.size)


def test_deep_reads_every_frame_and_names_the_corrupt_one(episode_dir: Path, capsys) -> None:
    _corrupt_chunk(episode_dir / "episode_1.hdf5")
    with pytest.raises(SystemExit) as shallow:
        main(["data", "check", str(episode_dir)])
    assert shallow.value.code == 0, "without --deep pixels are not read (the fast default)"
    capsys.readouterr()
    with pytest.raises(SystemExit) as deep:
        main(["data", "check", str(episode_dir), "--deep"])
    err = capsys.readouterr().err
    assert deep.value.code == 2 and err.count("\n") == 1, err
    assert "episode_1.hdf5" in err and "'head_camera_image'" in err and "step 7" in err, err


@pytest.mark.parametrize(
    "proprio, expected",
    [
        (np.where(np.arange(20 * 14).reshape(20, 14) == 40, np.nan, 0.0), "NaN/Inf"),
        (np.array([["x"] * 14] * 20, dtype=object).astype("S1"), "'proprio'"),
    ],
    ids=["nan", "strings"],
)
def test_bad_proprio_is_reported_without_use_proprio(episode_dir, episode_writer, capsys, proprio, expected) -> None:
    episode_writer(episode_dir / "episode_2.hdf5", episode=2, overrides={"proprio": proprio})
    with pytest.raises(SystemExit) as bad:
        main(["data", "check", str(episode_dir)])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and "episode_2.hdf5" in err and "'proprio'" in err and expected in err, err


def test_out_of_range_values_are_flagged(episode_dir, episode_writer) -> None:
    from train.episodes import validate_episode_dir

    action = np.zeros((20, 14))
    action[:, 6], action[3, 0] = 5.0, 1e6
    episode_writer(episode_dir / "episode_0.hdf5", episode=0, overrides={"action": action})
    console = Console(record=True, width=300)
    assert run_data_check(DataCheckConfig(data_dir=episode_dir), console) == 0, "a warning, not an error"
    text = console.export_text()
    assert "episode_0.hdf5: 'action' left_gripper: expected values in [-1, 1], got 5 at step 0" in text, text
    assert "left_x: expected values in [-3, 3], got 1e+06 at step 3" in text, text
    summary = validate_episode_dir(DataCheckConfig(data_dir=episode_dir))
    assert any("left_gripper" in w for w in summary.warnings)


def test_markup_in_instructions_is_shown_verbatim(episode_dir, episode_writer) -> None:
    pool = ("[/bold] pick up [carefully] the cube", "[red]stack[/red]")
    for i in range(3):
        episode_writer(episode_dir / f"episode_{i}.hdf5", episode=i, seen=pool)
    console = Console(record=True, width=300)
    assert run_data_check(DataCheckConfig(data_dir=episode_dir), console) == 0
    text = console.export_text()
    assert "'[/bold] pick up [carefully] the cube'" in text and "'[red]stack[/red]'" in text, text
