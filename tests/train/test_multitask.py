"""Multi-task data: several folders in one run, per-task sampling weights, per-task statistics, the training
tokenizer, and the instruction-blind (constant instruction) setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_episodes import write_episode
from trainer_fixtures import micro_config

from policies.checkpoint import CheckpointPolicy
from policies.normalization import load_dataset_statistics
from train.config import DataConfig
from train.dataset import EpisodeDataset
from train.episodes import EpisodeDataError
from train.sampler import ResumableBatchSampler
from train.stats import compute_norm_stats, prepare_data, sample_weights
from train.trainer import train

LIFT = ("lift the bar", "raise the bar")
PICK = ("pick the red cube", "lift the red cube")


def _folder(root: Path, name: str, task: str, lengths: tuple[int, ...], seen: tuple[str, ...]) -> Path:
    folder = root / name
    for i, n in enumerate(lengths):
        write_episode(
            folder / f"episode_{i}.hdf5",
            episode=i + 10 * len(name),
            num_steps=n,
            task=task,
            seen=seen,
            unseen=("hoist it skyward",),
        )
    return folder


@pytest.fixture
def two_tasks(tmp_path: Path) -> tuple[Path, Path]:
    a = _folder(tmp_path, "lift", "TaskA-v1", (20, 20, 20, 20), LIFT)
    b = _folder(tmp_path, "pick", "TaskB-v1", (40, 40), PICK)
    return a, b


def test_folders_merge_with_per_task_stats_and_per_folder_split(two_tasks, tmp_path) -> None:
    a, b = two_tasks
    cfg = DataConfig(data_dir=a, more_data=(b,), chunk_size=4, use_proprio=True, val_fraction=0.25)
    prepared = prepare_data(cfg, stats_path=tmp_path / "stats.json")
    assert prepared.unnorm_key == "TaskA-v1+TaskB-v1"
    # each folder is split on its own: both tasks keep a validation episode
    assert {e.path.parent.name for e in prepared.val_episodes} == {"lift", "pick"}
    assert len(prepared.train_episodes) == 4
    saved = load_dataset_statistics(tmp_path / "stats.json")
    assert set(saved) == {"TaskA-v1", "TaskB-v1", "TaskA-v1+TaskB-v1"}
    only_b = compute_norm_stats([e for e in prepared.train_episodes if e.path.parent == b], "action", True)
    assert saved["TaskB-v1"].to_json() == only_b.to_json()
    combined = compute_norm_stats(prepared.train_episodes, "action", True)
    assert saved["TaskA-v1+TaskB-v1"].to_json() == combined.to_json() == prepared.norm_stats.to_json()
    assert saved["TaskA-v1"].to_json() != combined.to_json()


def test_task_weights_set_each_tasks_share_of_the_samples(two_tasks) -> None:
    a, b = two_tasks
    cfg = DataConfig(data_dir=a, more_data=(b,), chunk_size=4, task_weights=("TaskA-v1=1", "TaskB-v1=3"))
    prepared = prepare_data(cfg)
    ds = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats)
    weights = sample_weights(prepared.train_episodes, cfg)
    assert weights is not None and weights.shape == (len(ds),) and np.isclose(weights.sum(), 1.0)
    sampler = ResumableBatchSampler(len(ds), 8, seed=0, weights=weights)
    drawn = [i for e in range(40) for batch in sampler.epoch_batches(e) for i in batch]
    in_b = np.mean([ds.episodes[ds.locate(i)[0]].path.parent == b for i in drawn])
    assert abs(in_b - 0.75) < 0.03  # TaskB has 2 of 6 episodes but 3/4 of the weight
    assert sampler.epoch_batches(3) == ResumableBatchSampler(len(ds), 8, seed=0, weights=weights).epoch_batches(3)
    # without weights: samples alike, TaskB's share is its share of the samples (2 x 37 of 4 x 17 + 2 x 37)
    plain = prepare_data(DataConfig(data_dir=a, more_data=(b,), chunk_size=4))
    assert sample_weights(plain.train_episodes, DataConfig(data_dir=a, more_data=(b,), chunk_size=4)) is None


@pytest.mark.parametrize(
    "weights, match",
    [
        (("TaskA-v1=1",), r"missing \['TaskB-v1'\]"),
        (("TaskA-v1=1", "TaskB-v1=1", "TaskC-v1=1"), r"unknown \['TaskC-v1'\]"),
    ],
)
def test_task_weights_must_name_the_tasks_of_the_data(two_tasks, weights, match) -> None:
    a, b = two_tasks
    with pytest.raises(EpisodeDataError, match=match):
        prepare_data(DataConfig(data_dir=a, more_data=(b,), chunk_size=4, task_weights=weights))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"task_weights": ("TaskA-v1",)}, "expected TASK=WEIGHT"),
        ({"task_weights": ("TaskA-v1=-1",)}, ">= 0"),
        ({"task_weights": ("TaskA-v1=0",)}, "at least one > 0"),
        ({"task_weights": ("TaskA-v1=1", "TaskA-v1=2")}, "twice"),
        ({"more_data": ("lift",)}, "repeats a folder"),
        ({"more_data": ("pick",), "val_episodes": (0,)}, "val_fraction"),
        ({"constant_instruction": "  "}, "non-empty"),
    ],
)
def test_bad_multitask_settings_are_named(two_tasks, kw, match) -> None:
    a, _ = two_tasks
    kw = {k: tuple(a.parent / p for p in v) if k == "more_data" else v for k, v in kw.items()}
    with pytest.raises(ValueError, match=match):
        DataConfig(data_dir=a, chunk_size=4, **kw)


def test_a_bad_second_folder_names_itself(two_tasks, tmp_path) -> None:
    a, _ = two_tasks
    odd = tmp_path / "odd"
    write_episode(odd / "episode_0.hdf5", size=(48, 48))
    with pytest.raises(EpisodeDataError, match="frame sizes differ across folders"):
        prepare_data(DataConfig(data_dir=a, more_data=(odd,), chunk_size=4))
    with pytest.raises(EpisodeDataError, match="missing"):
        prepare_data(DataConfig(data_dir=a, more_data=(tmp_path / "missing",), chunk_size=4))


@pytest.mark.usefixtures("_restore_threads")
def test_multitask_training_records_tasks_and_a_seen_only_tokenizer(two_tasks, tmp_path) -> None:
    a, b = two_tasks
    run = tmp_path / "run"
    result = train(micro_config(a, run, more_data=(b,), task_weights=("TaskA-v1=1", "TaskB-v1=1"), steps=2))
    config = json.loads((result.last_checkpoint / "config.json").read_text())
    assert config["unnorm_key"] == "TaskA-v1+TaskB-v1"
    assert config["data"]["task_episodes"] == {"TaskA-v1": 4, "TaskB-v1": 2}
    assert config["data"]["train_episodes"][:2] == ["lift/0", "lift/1"]
    assert set(json.loads((result.last_checkpoint / "dataset_statistics.json").read_text())) == {
        "TaskA-v1",
        "TaskB-v1",
        "TaskA-v1+TaskB-v1",
    }
    policy = CheckpointPolicy.from_dir(result.last_checkpoint)
    vocab = policy.processor.tokenizer.get_vocab()
    assert any("bar" in tok for tok in vocab) and any("cube" in tok for tok in vocab)  # every task's seen words
    assert not any("skyward" in tok for tok in vocab)  # the unseen phrasing is not in the tokenizer's merges


@pytest.mark.usefixtures("_restore_threads")
def test_constant_instruction_is_used_in_training_and_at_inference(two_tasks, tmp_path) -> None:
    a, _ = two_tasks
    cfg = DataConfig(data_dir=a, chunk_size=4, constant_instruction="do the task")
    prepared = prepare_data(cfg)
    ds = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats)
    assert {ds[i]["instruction"] for i in range(0, len(ds), 5)} == {"do the task"}
    result = train(micro_config(a, tmp_path / "blind", constant_instruction="do the task", steps=2))
    policy = CheckpointPolicy.from_dir(result.last_checkpoint)
    assert policy.metadata.extra["constant_instruction"] == "do the task"
    seen: list[list[str]] = []
    real = policy.processor

    def spy(images, instructions, train=False):
        seen.append(list(instructions))
        return real(images, instructions, train=train)

    policy.processor = spy
    from policies.base import Observation

    obs = Observation(
        images={c: np.zeros((2, 32, 32, 3), np.uint8) for c in policy.metadata.cameras},
        proprio=np.zeros((2, 14), np.float32),
        instruction=("lift the red cube", "lift the blue cube"),
    )
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (2, 4, 14) and seen == [["do the task", "do the task"]]
