"""Episode folder validation: every bad input raises EpisodeDataError naming file, key, expected vs actual, and
nothing is written."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from train.config import DataCheckConfig, DataConfig
from train.episode_checks import read_instructions
from train.episodes import EpisodeDataError, find_episode_files, validate_episode_dir
from train.stats import prepare_data


def _cfg(folder: Path, **kw) -> DataConfig:
    return DataConfig(data_dir=folder, **kw)


def test_valid_folder_summary(episode_dir: Path) -> None:
    summary = validate_episode_dir(_cfg(episode_dir))
    assert [e.index for e in summary.episodes] == [0, 1, 2]
    assert [e.num_steps for e in summary.episodes] == [20, 22, 24]
    assert summary.num_steps == 66
    assert summary.num_samples == (20 - 7) + (22 - 7) + (24 - 7), "T - chunk + 1 samples per episode"
    assert summary.cameras == ("head", "left_wrist") and summary.image_size == (32, 32)
    assert summary.tasks == ("LiftCube-v1",) and summary.has_proprio
    assert summary.action_min[0] == pytest.approx(0.0) and summary.action_max[0] == pytest.approx(20 + 23)
    assert summary.episodes[0].seen == ("pick up the cube", "grasp the cube", "lift the cube")
    assert summary.episodes[0].unseen == ("raise the block",)


def test_episode_files_sorted_by_integer_index(tmp_path: Path, episode_writer) -> None:
    for i in (10, 2, 1):
        episode_writer(tmp_path / f"episode_{i}.hdf5", episode=i)
    (tmp_path / "dataset.json").write_text("{}")
    assert [i for i, _ in find_episode_files(tmp_path)] == [1, 2, 10]


def test_check_config_detects_common_cameras(make_dir) -> None:
    folder = make_dir(cameras=("low", "head", "right_wrist"))
    summary = validate_episode_dir(DataCheckConfig(data_dir=folder))
    assert summary.cameras == ("head", "right_wrist", "low"), "canonical order of the cameras every file has"


def test_non_square_images_and_pad_end_short_episode(make_dir) -> None:
    folder = make_dir(lengths=(5, 12), size=(24, 40))
    summary = validate_episode_dir(_cfg(folder, pad_end=True))
    assert summary.image_size == (24, 40)
    assert summary.num_samples == 5 + 12, "pad_end gives T samples per episode"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("pick up the cube", ["pick up the cube"]),
        (b"pick up the cube", ["pick up the cube"]),
        ("ramasser le cube \u00e9", ["ramasser le cube \u00e9"]),
        (np.array([b"a cube", b"the cube "], dtype="S12"), ["a cube", "the cube"]),
        (np.array(["one", "two", ""], dtype=h5py.string_dtype()), ["one", "two"]),
        (np.frombuffer("grasp \u00e9".encode(), dtype=np.uint8), ["grasp \u00e9"]),
    ],
    ids=["str", "bytes", "utf8-str", "fixed-S-array", "vlen-array", "uint8-bytes"],
)
def test_read_instructions_formats(tmp_path: Path, value, expected) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("seen", data=value)
        assert read_instructions(f["seen"]) == expected


def test_read_instructions_rejects_numbers(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("seen", data=np.zeros(3, dtype=np.float32))
        with pytest.raises(ValueError, match="expected a string"):
            read_instructions(f["seen"])


# ------------------------------------------------------------------------------------------------- bad inputs
# Each case builds a folder and returns (folder, DataConfig kwargs, message fragments that must all appear).


def _missing_dir(tmp_path, make_dir, w, DROP):
    return tmp_path / "nope", {}, ["nope", "does not exist"]


def _empty_dir(tmp_path, make_dir, w, DROP):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "dataset.json").write_text("{}")
    return folder, {}, ["empty directory", "episode_{i}.hdf5", "dataset.json"]


def _unreadable(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    (folder / "episode_1.hdf5").write_bytes(b"not an hdf5 file at all")
    return folder, {}, ["episode_1.hdf5", "unreadable file", "expected an HDF5"]


def _missing_action(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    w(folder / "episode_2.hdf5", episode=2, overrides={"action": DROP})
    return folder, {}, ["episode_2.hdf5", "missing key 'action'", "expected a (T, 14) float"]


def _missing_relative(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    w(folder / "episode_0.hdf5", overrides={"relative_action": DROP})
    return folder, {"action_key": "relative_action"}, ["episode_0.hdf5", "missing key 'relative_action'"]


def _missing_camera(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    return (
        folder,
        {"cameras": ("head", "low")},
        ["episode_0.hdf5", "missing key 'low_cam_image'", "(camera low)", "head_camera_image"],
    )


def _missing_proprio(tmp_path, make_dir, w, DROP):
    folder = make_dir(proprio=False)
    return folder, {"use_proprio": True}, ["episode_0.hdf5", "missing key 'proprio'", "(T, 14)"]


def _missing_instructions(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    w(folder / "episode_1.hdf5", episode=1, seen=None, unseen=None)
    return (
        folder,
        {"instructions": "both"},
        ["episode_1.hdf5", "'seen' or 'unseen'", "at least one instruction", "seen: absent, unseen: absent"],
    )


def _missing_seen_split(tmp_path, make_dir, w, DROP):
    folder = make_dir(seen=None)
    return folder, {"instructions": "seen"}, ["episode_0.hdf5", "missing key 'seen'", "unseen: 1 instruction(s)"]


def _action_dtype(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    w(folder / "episode_1.hdf5", episode=1, overrides={"action": np.zeros((20, 14), dtype=np.int64)})
    return folder, {}, ["episode_1.hdf5", "'action'", "wrong dtype", "expected float32/float64", "got int64"]


def _image_dtype(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    w(folder / "episode_0.hdf5", overrides={"head_camera_image": np.zeros((20, 32, 32, 3), dtype=np.float32)})
    return folder, {}, ["episode_0.hdf5", "'head_camera_image'", "expected uint8", "got float32"]


def _action_shape(tmp_path, make_dir, w, DROP):
    folder = make_dir(lengths=(20,))
    w(folder / "episode_0.hdf5", overrides={"action": np.zeros((20, 12))})
    return folder, {}, ["episode_0.hdf5", "'action'", "wrong shape", "expected (T, 14)", "got (20, 12)"]


def _image_shape(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    w(folder / "episode_2.hdf5", episode=2, overrides={"left_wrist_image": np.zeros((20, 32, 32, 4), np.uint8)})
    return folder, {}, ["episode_2.hdf5", "'left_wrist_image'", "expected (T, H, W, 3)", "got (20, 32, 32, 4)"]


def _t_mismatch(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    w(folder / "episode_1.hdf5", episode=1, overrides={"head_camera_image": np.zeros((19, 32, 32, 3), np.uint8)})
    return (
        folder,
        {"use_proprio": True},
        ["episode_1.hdf5", "T mismatch", "'action' has 20", "'head_camera_image' has 19", "'proprio' has 20"],
    )


def _nan_action(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    bad = np.zeros((20, 14))
    bad[7, 3] = np.nan
    w(folder / "episode_0.hdf5", overrides={"action": bad})
    return folder, {}, ["episode_0.hdf5", "'action'", "expected finite values", "1 NaN/Inf", "step 7", "left_roll"]


def _inf_proprio(tmp_path, make_dir, w, DROP):
    folder = make_dir()
    bad = np.zeros((20, 14))
    bad[3, 13] = np.inf
    w(folder / "episode_0.hdf5", overrides={"proprio": bad})
    return folder, {"use_proprio": True}, ["episode_0.hdf5", "'proprio'", "NaN/Inf", "step 3", "right_gripper"]


def _too_short(tmp_path, make_dir, w, DROP):
    folder = make_dir(lengths=(20, 5))
    return folder, {"chunk_size": 8}, ["episode_1.hdf5", "shorter than the chunk", "chunk_size 8", "T = 5"]


def _inconsistent_dims(tmp_path, make_dir, w, DROP):
    folder = make_dir(lengths=(20, 20))
    w(folder / "episode_1.hdf5", episode=1, overrides={"action": np.zeros((20, 7))})
    return folder, {}, ["inconsistent action dims across files", "14-D in episode_0.hdf5", "7-D in episode_1.hdf5"]


def _inconsistent_sizes(tmp_path, make_dir, w, DROP):
    folder = make_dir(lengths=(20, 20))
    w(folder / "episode_1.hdf5", episode=1, size=(48, 48))
    return folder, {}, ["episode_1.hdf5", "'head_camera_image'", "expected frames of 32x32", "got 48x48"]


def _bad_layout(tmp_path, make_dir, w, DROP):
    folder = make_dir(lengths=(20,))
    w(folder / "episode_0.hdf5", attrs={"action_layout": '["x", "y"]'})
    return folder, {}, ["episode_0.hdf5", "attr 'action_layout'", "left_x", "got ['x', 'y']"]


def _bad_name(tmp_path, make_dir, w, DROP):
    folder = make_dir(lengths=(20,))
    w(folder / "episode_final.hdf5")
    return folder, {}, ["episode_final.hdf5", "episode_<integer>.hdf5"]


def _bad_val_episodes(tmp_path, make_dir, w, DROP):
    return make_dir(), {"val_episodes": (1, 7)}, ["val_episodes [7] not found", "[0, 1, 2]"]


def _no_train_left(tmp_path, make_dir, w, DROP):
    return make_dir(lengths=(20,)), {"val_fraction": 0.5}, ["leaves no training episode"]


BAD_CASES = {
    f.__name__.strip("_"): f
    for f in (
        _missing_dir,
        _empty_dir,
        _unreadable,
        _missing_action,
        _missing_relative,
        _missing_camera,
        _missing_proprio,
        _missing_instructions,
        _missing_seen_split,
        _action_dtype,
        _image_dtype,
        _action_shape,
        _image_shape,
        _t_mismatch,
        _nan_action,
        _inf_proprio,
        _too_short,
        _inconsistent_dims,
        _inconsistent_sizes,
        _bad_layout,
        _bad_name,
        _bad_val_episodes,
        _no_train_left,
    )
}


def _tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_raises_and_writes_nothing(case, tmp_path, make_dir, episode_writer, DROP) -> None:
    folder, kwargs, fragments = BAD_CASES[case](tmp_path, make_dir, episode_writer, DROP)
    before = _tree(tmp_path)
    stats_path = tmp_path / "run" / "dataset_statistics.json"
    with pytest.raises(EpisodeDataError) as info:
        prepare_data(_cfg(folder, **kwargs), stats_path=stats_path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in message:\n{message}"
    assert not stats_path.exists() and not stats_path.parent.exists(), "nothing may be written on bad input"
    assert _tree(tmp_path) == before, "the data folder must be left untouched"


def test_problems_of_all_files_collected_and_capped(make_dir, episode_writer, DROP) -> None:
    folder = make_dir(lengths=[20] * 23)
    for i in range(1, 23):
        episode_writer(folder / f"episode_{i}.hdf5", episode=i, overrides={"action": DROP})
    with pytest.raises(EpisodeDataError) as info:
        validate_episode_dir(_cfg(folder))
    message = str(info.value)
    assert "22 problem(s) (23 episode file(s) checked)" in message
    assert "episode_1.hdf5" in message and "episode_2.hdf5" in message, "problems of several files are listed"
    assert "... and 2 more" in message


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"cameras": ()}, "cameras must name 1-4"),
        ({"cameras": ("head", "top")}, "unknown camera(s) ['top']"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
        ({"action_key": "delta"}, "action_key must be one of"),
        ({"instructions": "all"}, "instructions must be one of"),
        ({"norm_mode": "minmax"}, "norm_mode must be one of"),
        ({"val_fraction": 1.0}, "val_fraction must be in [0, 1), got 1.0"),
        ({"val_fraction": 0.2, "val_episodes": (1,)}, "either val_fraction (0.2) or val_episodes"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
    ],
)
def test_data_config_errors_name_field_and_value(tmp_path: Path, kwargs, fragment) -> None:
    with pytest.raises(ValueError) as info:
        DataConfig(data_dir=tmp_path, **kwargs)
    assert fragment in str(info.value)
