"""Norm stats over TRAIN episodes, dataset_statistics.json round trip, normalization round trip, episode split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_episodes import make_actions

from envs.layout import GRIPPER_DIMS
from policies.normalization import NORM_MODES, ArrayStats, load_dataset_statistics
from train.config import DataConfig
from train.dataset import EpisodeDataset
from train.stats import compute_norm_stats, prepare_data, split_episodes


def test_stats_saved_under_task_key_with_gripper_mask(episode_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "run" / "dataset_statistics.json"
    prepared = prepare_data(DataConfig(data_dir=episode_dir, use_proprio=True), stats_path=path)
    assert prepared.unnorm_key == "LiftCube-v1" and prepared.stats_path == path
    loaded = load_dataset_statistics(path)
    assert list(loaded) == ["LiftCube-v1"]
    stats = loaded["LiftCube-v1"]
    assert stats.num_trajectories == 3 and stats.num_transitions == 66
    expected_mask = np.ones(14, bool)
    expected_mask[list(GRIPPER_DIMS)] = False
    np.testing.assert_array_equal(stats.action.mask, expected_mask)
    np.testing.assert_array_equal(stats.proprio.mask, expected_mask)
    raw = np.concatenate([make_actions(i, n) for i, n in enumerate((20, 22, 24))])
    reference = ArrayStats.compute(raw, expected_mask)
    for key in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_allclose(getattr(stats.action, key), getattr(reference, key), rtol=1e-6, err_msg=key)
    assert set(json.loads(path.read_text())["LiftCube-v1"]) == {
        "action",
        "proprio",
        "num_transitions",
        "num_trajectories",
    }


def test_normalize_grippers_and_unnorm_key_fallbacks(make_dir) -> None:
    folder = make_dir(task=None, name="my_demos")
    prepared = prepare_data(DataConfig(data_dir=folder, normalize_grippers=True))
    assert prepared.unnorm_key == "my_demos", "no task attr -> folder name"
    assert prepared.norm_stats.action.mask.all() and prepared.norm_stats.proprio is None
    assert prepare_data(DataConfig(data_dir=folder, unnorm_key="custom")).unnorm_key == "custom"


def test_stats_use_train_episodes_only(make_dir) -> None:
    folder = make_dir(lengths=(20, 20, 20, 20))
    prepared = prepare_data(DataConfig(data_dir=folder, val_episodes=(3,)))
    assert [e.index for e in prepared.val_episodes] == [3] and prepared.norm_stats.num_trajectories == 3
    # episode 3's actions start at 30: a stats set that included it would have max >= 30 + 19
    assert prepared.norm_stats.action.max[0] == pytest.approx(20 + 19)
    direct = compute_norm_stats(prepared.train_episodes)
    np.testing.assert_array_equal(direct.action.q99, prepared.norm_stats.action.q99)


def test_split_is_deterministic_and_never_splits_an_episode(make_dir) -> None:
    folder = make_dir(lengths=[10] * 10)
    episodes = prepare_data(DataConfig(data_dir=folder)).summary.episodes
    splits = []
    for seed in range(6):
        cfg = DataConfig(data_dir=folder, val_fraction=0.2, seed=seed)
        train, val = split_episodes(episodes, cfg)
        assert split_episodes(episodes, cfg) == (train, val), "same seed -> same split"
        assert len(val) == 2 and {e.index for e in train} | {e.index for e in val} == set(range(10))
        assert not {e.index for e in train} & {e.index for e in val}
        splits.append(tuple(e.index for e in val))
    assert len(set(splits)) > 1, "different seeds choose different validation episodes"


def _assert_round_trip(stats: ArrayStats, normalized: np.ndarray, raw: np.ndarray, mode: str) -> None:
    back = stats.unnormalize(normalized, mode)
    if mode == "bounds_q99":  # values outside [q01, q99] are clipped by design; compare the inside ones
        inside = (raw >= stats.q01) & (raw <= stats.q99)
        assert inside.any()
        np.testing.assert_allclose(back[inside], raw[inside], atol=1e-4)
    else:
        np.testing.assert_allclose(back, raw, atol=1e-4)


@pytest.mark.parametrize("mode", NORM_MODES)
def test_normalization_round_trips_through_saved_stats(mode: str, episode_dir: Path, tmp_path: Path) -> None:
    cfg = DataConfig(data_dir=episode_dir, norm_mode=mode, use_proprio=True)
    prepared = prepare_data(cfg, stats_path=tmp_path / "stats.json")
    stats = load_dataset_statistics(tmp_path / "stats.json")[prepared.unnorm_key]
    ds = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats)
    for index in (0, 7, 20, len(ds) - 1):
        sample = ds[index]
        ep, t = ds.locate(index)
        raw = make_actions(ds.episodes[ep].index, ds.episodes[ep].num_steps)[t : t + 8].astype(np.float32)
        _assert_round_trip(stats.action, sample["actions"], raw, mode)
        raw_proprio = raw[0] - np.float32(0.001)
        raw_proprio[list(GRIPPER_DIMS)] = raw[0, list(GRIPPER_DIMS)]
        _assert_round_trip(stats.proprio, sample["proprio"], raw_proprio, mode)
