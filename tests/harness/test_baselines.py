"""Baseline policies: scripted metadata, random determinism, replay:DIR lookup and playback."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from fakes import FakeEnv, make_fake_env

from envs.layout import ACTION_LAYOUT
from harness.bench import run_bench
from harness.rollout import policy_observation
from policies.base import Observation, available_policies, make_policy
from policies.baselines import ReplayPolicy


def _obs(batch: int = 2, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(
        images={},
        proprio=rng.uniform(-0.3, 0.3, (batch, 14)).astype(np.float32),
        instruction=[f"task {i}" for i in range(batch)],
    )


def test_registered_names() -> None:
    assert {"scripted", "random", "replay"} <= set(available_policies())
    with pytest.raises(ValueError, match="did you mean 'random'"):
        make_policy("randon")


def test_scripted_metadata() -> None:
    policy = make_policy("scripted")
    meta = policy.metadata
    assert meta.chunk_size == 1 and meta.uses_privileged_state and meta.cameras == ()
    assert set(meta.tasks) == {
        "TwoRobotPickCube-v1",
        "TwoRobotStackCube-v1",
        "DualArmLiftBar-v1",
        "DualArmPlaceShoe-v1",
        "DualArmPickColorCube-v1",
        "DualArmPickSideCube-v1",
    }
    with pytest.raises(ValueError, match="privileged"):
        policy.predict_action_chunk(_obs())
    with pytest.raises(ValueError, match="takes no argument"):
        make_policy("scripted:x")


def test_random_is_seeded_per_episode() -> None:
    policy = make_policy("random:4", seed=1)
    assert policy.metadata.chunk_size == 4

    def episode(task: str, seeds: list[int]) -> np.ndarray:
        policy.reset()
        policy.set_episode(task=task, seeds=seeds)
        return np.stack([policy.predict_action_chunk(_obs()) for _ in range(3)])

    a = episode("DualArmLiftBar-v1", [0, 1])
    assert a.shape == (3, 2, 4, 14) and a.dtype == np.float32
    np.testing.assert_array_equal(a, episode("DualArmLiftBar-v1", [0, 1]))
    assert not np.array_equal(a[:, 0], a[:, 1]), "batch rows have their own generators"
    assert not np.array_equal(a, episode("DualArmLiftBar-v1", [0, 2]))
    assert not np.array_equal(a, episode("TwoRobotPickCube-v1", [0, 1]))
    assert np.abs(a[..., [6, 13]]).max() <= 1.0
    assert np.abs(a[..., :3] - _obs().proprio[None, :, None, :3]).max() < 0.05, "a small walk around proprio"


def test_random_without_hook_is_seeded_from_the_observation() -> None:
    policy = make_policy("random")
    policy.reset()
    first = policy.predict_action_chunk(_obs(seed=3))
    policy.reset()
    np.testing.assert_array_equal(first, policy.predict_action_chunk(_obs(seed=3)))
    policy.reset()
    assert not np.array_equal(first, policy.predict_action_chunk(_obs(seed=4)))


def test_random_does_not_mutate_the_observation() -> None:
    env = FakeEnv("DualArmLiftBar-v1", cameras=("head",))
    raw, _ = env.reset(seed=0)
    before = {k: np.copy(v) for k, v in (("proprio", raw["proprio"]), ("head", raw["images"]["head"]))}
    policy = make_policy("random:3")
    policy.reset()
    policy.predict_action_chunk(policy_observation(raw, ("head",), privileged=False))  # read-only views
    np.testing.assert_array_equal(before["proprio"], raw["proprio"])
    np.testing.assert_array_equal(before["head"], raw["images"]["head"])


def _write_episode(path: Path, task: str, seed: int, actions: np.ndarray, **attrs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("action", data=actions)
        f.attrs["task"], f.attrs["seed"] = task, seed
        f.attrs["control_mode"] = attrs.get("control_mode", "pd_ee_pose")
        f.attrs["action_layout"] = json.dumps(list(ACTION_LAYOUT))


def test_replay_plays_the_matching_episode(tmp_path: Path) -> None:
    folder = tmp_path / "demos"
    for i, seed in enumerate((5, 9)):
        _write_episode(
            folder / f"episode_{i}.hdf5",
            "DualArmLiftBar-v1",
            seed,
            np.arange(3 * 14, dtype=np.float32).reshape(3, 14) + 100 * seed,
        )
    policy = make_policy(f"replay:{folder}")
    assert policy.metadata.tasks == ("DualArmLiftBar-v1",) and policy.metadata.chunk_size == 1
    policy.reset()
    with pytest.raises(ValueError, match="set_episode"):
        policy.predict_action_chunk(_obs(1))
    policy.set_episode(task="DualArmLiftBar-v1", seeds=[9, 5])
    steps = [policy.predict_action_chunk(_obs()) for _ in range(4)]
    assert steps[0].shape == (2, 1, 14)
    assert steps[0][0, 0, 0] == 900 and steps[0][1, 0, 0] == 500 and steps[1][0, 0, 0] == 914
    np.testing.assert_array_equal(steps[3], steps[2])  # the last action is held
    with pytest.raises(ValueError, match=r"seed=7 in .*demos.*\[5, 9\]"):
        policy.set_episode(task="DualArmLiftBar-v1", seeds=[7])


def test_replay_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a folder"):
        make_policy("replay")
    with pytest.raises(ValueError, match="no episode_"):
        ReplayPolicy(tmp_path / "empty")
    _write_episode(
        tmp_path / "j" / "episode_0.hdf5",
        "DualArmLiftBar-v1",
        0,
        np.zeros((2, 14), np.float32),
        control_mode="pd_joint_pos",
    )
    with pytest.raises(ValueError, match=r"episode_0.hdf5: control_mode 'pd_joint_pos'"):
        ReplayPolicy(tmp_path / "j")


def test_replay_reproduces_recorded_outcomes_on_the_fake_env(tmp_path: Path, run_fake) -> None:
    """Record the goal policy's executed actions per seed, replay them through the harness: same outcomes."""
    _, goal_records, _ = run_fake(tmp_path / "goal", tasks=("DualArmLiftBar-v1",), seeds="0:6")
    for rec in goal_records:
        env = FakeEnv("DualArmLiftBar-v1", max_episode_steps=40)
        obs, _ = env.reset(seed=rec["seed"])
        actions = []
        for _ in range(rec["episode_len"]):
            row = obs["proprio"][0].copy()
            row[0] = np.clip(obs["privileged"]["goal"][0, 0], -1.5, 1.5)
            actions.append(row)
            obs, *_ = env.step(row)
        _write_episode(
            tmp_path / "demos" / f"episode_{rec['seed']}.hdf5", "DualArmLiftBar-v1", rec["seed"], np.stack(actions)
        )
    from bench_fixtures import fake_config

    cfg = fake_config(
        tmp_path / "replay", policy=f"replay:{tmp_path / 'demos'}", tasks=("DualArmLiftBar-v1",), seeds="0:6"
    )
    assert run_bench(cfg, env_factory=functools.partial(make_fake_env)) == 0
    replayed = {json.loads(line)["seed"]: json.loads(line) for line in (tmp_path / "replay" / "episodes.jsonl").open()}
    for rec in goal_records:
        got = replayed[rec["seed"]]
        assert (got["success_once"], got["success_at_end"], got["episode_len"]) == (
            rec["success_once"],
            rec["success_at_end"],
            rec["episode_len"],
        ), rec["seed"]
