"""EpisodeDataset: sample index, row-exact reads, padding, normalization, instructions, lazy per-worker files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_episodes import frame_value, make_actions

from envs.layout import ACTION_LAYOUT, GRIPPER_DIMS
from train.config import DataConfig
from train.dataset import EpisodeDataset, build_datasets, collate_samples
from train.episodes import validate_episode_dir
from train.stats import prepare_data


def _dataset(folder: Path, **kw) -> EpisodeDataset:
    cfg = DataConfig(data_dir=folder, **kw)
    return EpisodeDataset(cfg, validate_episode_dir(cfg).episodes)


def test_index_and_raw_sample_rows(episode_dir: Path) -> None:
    ds = _dataset(episode_dir, cameras=("left_wrist", "head"), chunk_size=8)
    assert len(ds) == 13 + 15 + 17
    assert ds.locate(0) == (0, 0) and ds.locate(12) == (0, 12) and ds.locate(13) == (1, 0)
    assert ds.locate(-1) == (2, 16)
    sample = ds[13 + 4]  # episode 1, t = 4
    assert sample["episode_index"] == 1 and sample["t"] == 4
    assert sample["images"].shape == (2, 32, 32, 3) and sample["images"].dtype == np.uint8
    assert sample["images"][0, 0, 0, 0] == frame_value(1, "left_wrist", 4), "views follow cfg.cameras order"
    assert sample["images"][1, 5, 5, 2] == frame_value(1, "head", 4)
    np.testing.assert_allclose(sample["actions"], make_actions(1, 22)[4:12].astype(np.float32))
    assert sample["actions"].dtype == np.float32 and not sample["action_is_pad"].any()
    assert "proprio" not in sample
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_relative_action_key(episode_dir: Path) -> None:
    ds = _dataset(episode_dir, action_key="relative_action")
    expected = np.diff(make_actions(0, 20), axis=0)[2:10]
    np.testing.assert_allclose(ds[2]["actions"], expected.astype(np.float32), atol=1e-6)


def test_pad_end_repeats_last_action_and_masks(make_dir) -> None:
    folder = make_dir(lengths=(10, 4))
    ds = _dataset(folder, chunk_size=8, pad_end=True)
    assert len(ds) == 14
    sample = ds[9]  # episode 0, t = 9: one real row, seven padded
    raw = make_actions(0, 10)
    np.testing.assert_allclose(sample["actions"], np.repeat(raw[9:10], 8, axis=0).astype(np.float32))
    assert sample["action_is_pad"].tolist() == [False] + [True] * 7
    short = ds[10 + 1]  # episode 1 (T = 4), t = 1: rows 1..3 real
    assert short["action_is_pad"].tolist() == [False] * 3 + [True] * 5
    np.testing.assert_allclose(short["actions"][3:], np.repeat(make_actions(1, 4)[3:4], 5, 0).astype(np.float32))


def test_normalized_actions_and_proprio(episode_dir: Path) -> None:
    cfg = DataConfig(data_dir=episode_dir, use_proprio=True, norm_mode="bounds")
    prepared = prepare_data(cfg)
    ds = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats)
    sample = ds[5]
    raw = make_actions(0, 20)[5:13]
    stats = prepared.norm_stats.action
    np.testing.assert_allclose(sample["actions"], stats.normalize(raw, "bounds"), atol=1e-6)
    assert sample["actions"].min() >= -1.0 and sample["actions"].max() <= 1.0
    grip = list(GRIPPER_DIMS)
    np.testing.assert_array_equal(sample["actions"][:, grip], raw[:, grip].astype(np.float32))  # grippers raw
    assert not np.allclose(sample["actions"][:, 0], raw[:, 0]), "non-gripper dims are normalized"
    assert sample["proprio"].shape == (14,) and sample["proprio"].dtype == np.float32
    raw_proprio = make_actions(0, 20)[5] - 0.001
    raw_proprio[grip] += 0.001
    expected = prepared.norm_stats.proprio.normalize(raw_proprio, "bounds")
    np.testing.assert_allclose(sample["proprio"], expected, atol=1e-5)


def test_instruction_sampling_is_deterministic_per_seed_epoch_index(episode_dir: Path) -> None:
    a, b = _dataset(episode_dir, instructions="both"), _dataset(episode_dir, instructions="both")
    first = [a[i]["instruction"] for i in range(len(a))]
    assert first == [b[i]["instruction"] for i in range(len(b))], "same (seed, epoch, index) -> same instruction"
    assert set(first) == {"pick up the cube", "grasp the cube", "lift the cube", "raise the block"}
    a.set_epoch(1)
    assert [a[i]["instruction"] for i in range(len(a))] != first, "the epoch reseeds the choice"
    c = _dataset(episode_dir, instructions="both", seed=3)
    assert [c[i]["instruction"] for i in range(len(c))] != first, "the seed reseeds the choice"
    unseen = _dataset(episode_dir, instructions="unseen")
    assert {unseen[i]["instruction"] for i in range(0, len(unseen), 5)} == {"raise the block"}


def test_no_file_opened_at_init_and_reads_are_row_exact(episode_dir: Path, monkeypatch) -> None:
    cfg = DataConfig(data_dir=episode_dir, use_proprio=True)
    episodes = validate_episode_dir(cfg).episodes
    import h5py

    def _refuse(*args, **kwargs):
        raise AssertionError("EpisodeDataset opened a file at init")

    monkeypatch.setattr(h5py, "File", _refuse)
    ds = EpisodeDataset(cfg, episodes)
    monkeypatch.undo()
    handles = ds._datasets(episodes[1])
    reads: list[tuple[str, object]] = []

    class Recorder:
        def __init__(self, key, inner):
            self.key, self.inner = key, inner

        def __getitem__(self, item):
            reads.append((self.key, item))
            return self.inner[item]

    for key in list(handles):
        if key != "__file__":
            handles[key] = Recorder(key, handles[key])
    ds[13 + 6]
    assert sorted(reads, key=str) == sorted(
        [("head_camera_image", 6), ("left_wrist_image", 6), ("action", slice(6, 14)), ("proprio", 6)], key=str
    ), f"one sample must read only row t and rows t:t+chunk, got {reads}"


def test_dataloader_workers_cover_every_sample(episode_dir: Path) -> None:
    ds = _dataset(episode_dir)
    ds[0]  # the parent opens a handle before forking; workers must not reuse it
    parent_handles = dict(ds._open)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=4,
        shuffle=True,
        num_workers=2,
        collate_fn=ds.collate_fn,
        generator=torch.Generator().manual_seed(0),
    )
    seen_pairs = set()
    for batch in loader:
        assert batch["images"].shape[1:] == (2, 32, 32, 3) and batch["images"].dtype == torch.uint8
        assert batch["actions"].shape[1:] == (8, 14) and batch["actions"].dtype == torch.float32
        seen_pairs |= set(zip(batch["episode_index"].tolist(), batch["t"].tolist()))
    expected = {(e, t) for e, n in ((0, 20), (1, 22), (2, 24)) for t in range(n - 7)}
    assert seen_pairs == expected
    assert dict(ds._open) == parent_handles and ds._pid == os.getpid()
    ds.close()


def test_pickle_drops_handles_and_lru_caps_open_files(episode_dir: Path) -> None:
    ds = _dataset(episode_dir)
    ds.max_open_files = 1
    for i in (0, 13, 28):
        ds[i]
    assert len(ds._open) == 1, "least recently used files are closed"
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone._open) == 0 and clone._pid is None
    np.testing.assert_array_equal(clone[28]["images"], ds[28]["images"])


def test_collate_with_transform(episode_dir: Path) -> None:
    calls = []

    def transform(images, instructions):
        calls.append((images.shape, images.dtype, list(instructions)))
        return {"pixel_values": images.permute(0, 1, 4, 2, 3).float() / 255.0}

    cfg = DataConfig(data_dir=episode_dir, use_proprio=True)
    bundle = build_datasets(cfg, transform=transform)
    samples = [bundle.train[i] for i in (0, 1, 2)]
    batch = bundle.train.collate_fn(samples)
    assert calls == [((3, 2, 32, 32, 3), torch.uint8, [s["instruction"] for s in samples])]
    assert "images" not in batch and batch["pixel_values"].shape == (3, 2, 3, 32, 32)
    assert batch["proprio"].shape == (3, 14) and batch["action_is_pad"].dtype == torch.bool
    with pytest.raises(TypeError, match="mapping"):
        collate_samples(samples, transform=lambda images, text: images)


def test_val_split_dataset_and_checks(make_dir) -> None:
    folder = make_dir(lengths=(20, 20, 20, 20))
    bundle = build_datasets(DataConfig(data_dir=folder, val_episodes=(2,)))
    assert {e.index for e in bundle.train.episodes} == {0, 1, 3} and [e.index for e in bundle.val.episodes] == [2]
    cfg = DataConfig(data_dir=folder, use_proprio=True)
    stats = prepare_data(DataConfig(data_dir=folder)).norm_stats  # no proprio statistics
    with pytest.raises(ValueError, match="no proprio statistics"):
        EpisodeDataset(cfg, bundle.train.episodes, stats)
    with pytest.raises(ValueError, match=r"cameras \['low'\] not in the file"):
        EpisodeDataset(DataConfig(data_dir=folder, cameras=("low",)), bundle.train.episodes)


def test_read_error_names_file_and_step(episode_dir: Path) -> None:
    ds = _dataset(episode_dir)
    (episode_dir / "episode_1.hdf5").unlink()  # vanished after validation
    from train.episodes import EpisodeDataError

    with pytest.raises(EpisodeDataError, match=r"episode_1\.hdf5: reading step 2 failed .*data check DIR --deep"):
        ds[13 + 2]


def test_reads_files_written_by_the_recorder(tmp_path: Path) -> None:
    recording = pytest.importorskip("envs.recording", reason="envs.recording (vla demos) not available")
    folder = tmp_path / "demos"
    folder.mkdir()
    for i in range(2):
        action = make_actions(i, 12)
        frames = {"head": np.full((12, 16, 16, 3), i, np.uint8), "low": np.full((12, 16, 16, 3), 9, np.uint8)}
        recording.write_episode(
            folder / f"episode_{i}.hdf5",
            frames,
            action,
            action.copy(),
            ["lift the cube"],
            ["raise the cube"],
            {"task": "LiftCube-v1", "action_layout": list(ACTION_LAYOUT)},
        )
    cfg = DataConfig(data_dir=folder, cameras=("low", "head"), use_proprio=True, instructions="both")
    bundle = build_datasets(cfg, stats_path=tmp_path / "stats.json")
    assert bundle.prepared.unnorm_key == "LiftCube-v1" and len(bundle.train) == 2 * (12 - 7)
    sample = bundle.train[5]
    assert sample["images"][:, 0, 0, 0].tolist() == [9, 1] and sample["instruction"] in (
        "lift the cube",
        "raise the cube",
    )


def test_next_keyposes_follow_each_arms_next_close() -> None:
    from train.dataset import next_keyposes

    actions = np.zeros((10, 14), dtype=np.float32)
    actions[:, [ACTION_LAYOUT.index("left_gripper"), ACTION_LAYOUT.index("right_gripper")]] = 1.0
    lx, lg = ACTION_LAYOUT.index("left_x"), ACTION_LAYOUT.index("left_gripper")
    actions[:, lx] = np.arange(10) / 10  # left x = t / 10
    actions[[3, 4, 7], lg] = -1.0  # closes at 3 (held through 4), opens, closes again at 7
    poses, valid = next_keyposes(actions, None, DataConfig(data_dir=Path("unused")))
    assert poses.shape == (10, 2, 3) and valid.shape == (10, 2)
    np.testing.assert_allclose(poses[:, 0, 0], [0.3, 0.3, 0.3, 0.3, 0.7, 0.7, 0.7, 0.7, 0, 0])
    assert valid[:, 0].tolist() == [True] * 8 + [False] * 2
    assert not valid[:, 1].any() and not poses[:, 1].any(), "the right arm never closes: masked"


def test_keypose_samples_are_normalized_like_actions(episode_dir: Path) -> None:
    cfg = DataConfig(data_dir=episode_dir, cameras=("head",), chunk_size=4, keyposes=True)
    prepared = prepare_data(cfg)
    ds = EpisodeDataset(cfg, prepared.train_episodes, norm_stats=prepared.norm_stats)
    sample = ds[5]
    assert sample["keypose"].shape == (2, 3) and sample["keypose_mask"].shape == (2,)
    raw = make_actions(0, 20)
    x = ACTION_LAYOUT.index("left_x")
    for arm, g in enumerate(GRIPPER_DIMS):
        closes = [t for t in range(5, 20) if raw[t, g] < 0 and (t == 0 or raw[t - 1, g] >= 0)]
        assert bool(sample["keypose_mask"][arm]) == bool(closes)
        if closes and arm == 0:
            want = prepared.norm_stats.action.normalize(raw[closes[0]][None].astype(np.float32), cfg.norm_mode)[0, x]
            np.testing.assert_allclose(sample["keypose"][0, 0], want, rtol=1e-5)
    batch = collate_samples([ds[0], ds[1]])
    assert batch["keypose"].shape == (2, 2, 3) and batch["keypose_mask"].dtype == torch.bool
    with pytest.raises(ValueError, match="action_key 'action'"):
        DataConfig(data_dir=episode_dir, keyposes=True, action_key="relative_action")
