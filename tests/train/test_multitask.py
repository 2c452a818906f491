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
from train.dataset import EpisodeDataset, noisy_instruction
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
        ({"instruction_word_noise": 1.0}, r"instruction_word_noise must be in \[0, 1\)"),
        ({"instruction_word_noise": -0.1}, "instruction_word_noise"),
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


def test_noisy_instruction_replaces_words_at_the_rate_asked() -> None:
    text = "pick up the shoe on the right and put it in the box"
    assert noisy_instruction(text, 0.0, np.random.default_rng(0)) == text
    draws = [noisy_instruction(text, 0.3, np.random.default_rng([7, i])) for i in range(400)]
    assert draws[:5] == [noisy_instruction(text, 0.3, np.random.default_rng([7, i])) for i in range(5)]
    words = text.split()
    changed = 0
    for d in draws:
        out = d.split()
        assert len(out) == len(words)
        for old, new in zip(words, out):
            if new != old:
                changed += 1
                assert new.isalpha() and new.islower() and 2 <= len(new) <= 7
    rate = changed / (len(draws) * len(words))
    assert 0.26 < rate < 0.34  # 4800 words at p = 0.3 (a replacement equal to the word is ~1e-4)


def test_word_noise_reaches_training_samples_only(two_tasks) -> None:
    a, _ = two_tasks
    cfg = DataConfig(data_dir=a, chunk_size=4, instruction_word_noise=0.5)
    prepared = prepare_data(cfg)
    train_ds = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats, augment=True)
    val_ds = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats)
    noisy = [train_ds[i]["instruction"] for i in range(len(train_ds))]
    assert sum(t not in LIFT for t in noisy) > len(noisy) // 2  # 1 - 0.5^3 of 3-word instructions change
    assert noisy == [train_ds[i]["instruction"] for i in range(len(train_ds))]  # deterministic per (seed, epoch, i)
    train_ds.set_epoch(1)
    assert noisy != [train_ds[i]["instruction"] for i in range(len(train_ds))]
    assert {val_ds[i]["instruction"] for i in range(len(val_ds))} <= set(LIFT)
    blind = DataConfig(data_dir=a, chunk_size=4, instruction_word_noise=0.5, constant_instruction="do the task")
    blind_ds = EpisodeDataset(blind, prepared.train_episodes, prepared.norm_stats, augment=True)
    assert {blind_ds[i]["instruction"] for i in range(len(blind_ds))} == {"do the task"}


@pytest.mark.usefixtures("_restore_threads")
def test_training_with_word_noise_records_it_and_keeps_validation_clean(two_tasks, tmp_path, monkeypatch) -> None:
    a, _ = two_tasks
    made: list[tuple[float, int]] = []
    real_init = EpisodeDataset.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append((self.word_noise, len(self.episodes)))

    monkeypatch.setattr(EpisodeDataset, "__init__", spy)
    result = train(micro_config(a, tmp_path / "run", instruction_word_noise=0.2, val_fraction=0.25, steps=2))
    config = json.loads((result.last_checkpoint / "config.json").read_text())
    assert config["data"]["instruction_word_noise"] == 0.2
    assert made == [(0.2, 3), (0.0, 1)]  # the training split is augmented, the validation split is not
