"""A fake dual-arm env (the ``envs.wrapper.DualArmEnv`` surface the harness uses) and fake policies.

FakeEnv dynamics, deterministic in the seed of each sub-env:
    proprio_0 ~ U(-0.5, 0.5)^14 (grippers 1.0); goal ~ U(-0.8, 0.8), or 3.0 (unreachable) when seed % 3 == 2.
    step: proprio += 0.3 * (action - proprio), clipped to [-1.5, 1.5];
    success: |proprio[0] - goal| < 0.05 -- except that when seed % 7 == 6 the success signal drops again two
    steps after the first success (so success_once and success_at_end differ).
Failure injection: ``fail_seeds`` raise RuntimeError at step ``fail_at_step``; ``hang_seeds`` sleep ``hang_s`` in
their first step; ``step_sleep`` slows every step (for kill tests).

Everything here is module-level so spawned worker processes can unpickle it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from envs.layout import ACTION_DIM, GRIPPER_DIMS
from policies.base import Observation, PolicyMetadata


class FakeEnv:
    """See the module docstring. Records every executed action in ``self.actions`` ((B, 14) each)."""

    def __init__(
        self,
        task: str,
        cameras: Sequence[str] = (),
        image_size: int = 16,
        num_envs: int = 1,
        instruction_split: str = "seen",
        max_episode_steps: int | None = None,
        sim_backend: str = "auto",
        render_backend: str = "gpu",
        visual_quality: str = "fast",
        fail_seeds: Sequence[int] = (),
        fail_at_step: int = 3,
        hang_seeds: Sequence[int] = (),
        hang_s: float = 60.0,
        step_sleep: float = 0.0,
    ):
        self.task, self.cameras, self.image_size = task, tuple(cameras), int(image_size)
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps or 40)
        self.fail_seeds, self.fail_at_step = set(fail_seeds), int(fail_at_step)
        self.hang_seeds, self.hang_s, self.step_sleep = set(hang_seeds), float(hang_s), float(step_sleep)
        self.last_timing = {"simulation": 0.0, "observation": 0.0}
        self.actions: list[np.ndarray] = []
        self.reset_seeds: list[list[int]] = []
        self.closed = False

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        if seed is None:
            raise ValueError("FakeEnv.reset: the harness must always pass a seed")
        seeds = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
        if len(seeds) != self.num_envs:
            raise ValueError(f"FakeEnv.reset: {len(seeds)} seeds for {self.num_envs} sub-envs")
        self.reset_seeds.append(seeds)
        self.seeds = seeds
        self.t = 0
        self.proprio = np.zeros((self.num_envs, ACTION_DIM), np.float32)
        self.goal = np.zeros(self.num_envs, np.float32)
        for i, s in enumerate(seeds):
            rng = np.random.default_rng(s)
            self.proprio[i] = rng.uniform(-0.5, 0.5, ACTION_DIM)
            self.proprio[i, list(GRIPPER_DIMS)] = 1.0
            self.goal[i] = 3.0 if s % 3 == 2 else rng.uniform(-0.8, 0.8)
        self.first = [None] * self.num_envs
        return self._obs(), {"success": np.zeros(self.num_envs, bool)}

    def step(self, action: np.ndarray):
        act = np.asarray(action, dtype=np.float64).reshape(self.num_envs, ACTION_DIM)
        if not np.isfinite(act).all():
            raise ValueError("FakeEnv.step: NaN/Inf action")
        self.t += 1
        for s in self.seeds:
            if s in self.hang_seeds and self.t == 1:
                time.sleep(self.hang_s)
            if s in self.fail_seeds and self.t == self.fail_at_step:
                raise RuntimeError(f"FakeEnv: injected failure at step {self.t} (seed {s})")
        if self.step_sleep:
            time.sleep(self.step_sleep)
        self.actions.append(act.copy())
        self.proprio = np.clip(self.proprio + 0.3 * (act - self.proprio), -1.5, 1.5).astype(np.float32)
        success = np.abs(self.proprio[:, 0] - self.goal) < 0.05
        for i, s in enumerate(self.seeds):
            if success[i] and self.first[i] is None:
                self.first[i] = self.t
            if s % 7 == 6 and self.first[i] is not None and self.t > self.first[i] + 1:
                success[i] = False
        truncated = np.full(self.num_envs, self.t >= self.max_episode_steps)
        self.last_timing = {"simulation": 1e-4, "observation": 2e-4}
        return self._obs(), np.zeros(self.num_envs, np.float32), success.copy(), truncated, {"success": success}

    def _obs(self) -> dict:
        images = {
            c: np.full((self.num_envs, self.image_size, self.image_size, 3), (self.t * 10 + k * 50) % 256, np.uint8)
            for k, c in enumerate(self.cameras)
        }
        return {
            "images": images,
            "proprio": self.proprio.copy(),
            "instruction": [f"reach goal {s % 5}" for s in self.seeds],
            "privileged": {"goal": self.goal.copy()[:, None], "task": np.array([self.task] * self.num_envs, object)},
        }

    def close(self) -> None:
        self.closed = True


def make_fake_env(task: str, **kwargs) -> FakeEnv:
    """Env factory with ``envs.wrapper.make_env``'s signature (plus FakeEnv's injection options)."""
    return FakeEnv(task, **kwargs)


class GoalPolicy:
    """Moves proprio[0] to the privileged goal: every chunk row is [goal, proprio[1:]] (clipped to 1.5)."""

    def __init__(
        self,
        chunk_size: int = 1,
        cameras: tuple[str, ...] = (),
        image_size: int | None = None,
        fail_on_call: int | None = None,
        mutate: bool = False,
    ):
        self.metadata = PolicyMetadata(
            name="goal", cameras=cameras, chunk_size=chunk_size, image_size=image_size, uses_privileged_state=True
        )
        self.fail_on_call, self.mutate = fail_on_call, mutate
        self.calls = 0
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("GoalPolicy: injected failure")
        if self.mutate:
            obs.proprio[0, 0] = 0.0  # forbidden: must raise (read-only arrays)
        goal = np.clip(np.asarray(obs.privileged["goal"])[:, 0], -1.5, 1.5)
        row = np.asarray(obs.proprio, np.float32).copy()
        row[:, 0] = goal
        return np.repeat(row[:, None, :], self.metadata.chunk_size, axis=1).astype(np.float32)


class ForgetfulPolicy(GoalPolicy):
    """Stateful: heads for the goal during its first 12 calls after reset(), then holds still (action = proprio).
    Fake episodes reach the goal within 10 steps, so with a reset() before every episode all reachable seeds
    succeed; if the harness ever skipped reset() (or shared one policy across processes), later episodes would
    start "forgotten" and fail."""

    since_reset = 10**6  # without a reset() the policy has "forgotten" already

    def reset(self) -> None:
        super().reset()
        self.since_reset = 0

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        self.since_reset += 1
        chunk = super().predict_action_chunk(obs)
        if self.since_reset > 12:
            chunk[:, :, 0] = np.asarray(obs.proprio)[:, None, 0]  # hold still
        return chunk


class CountingPolicy:
    """chunk[b, h] = 1000 * call_index + h in every dimension except grippers (0): identifies which call and
    which chunk row every executed action came from."""

    def __init__(self, chunk_size: int = 4):
        self.metadata = PolicyMetadata(name="counting", chunk_size=chunk_size)
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        b, h = obs.batch_size, self.metadata.chunk_size
        chunk = np.zeros((b, h, ACTION_DIM), np.float32)
        chunk += (1000.0 * self.calls + np.arange(h, dtype=np.float32))[None, :, None]
        chunk[:, :, list(GRIPPER_DIMS)] = 0.0
        self.calls += 1
        return chunk


def make_goal_policy(**kwargs) -> GoalPolicy:
    return GoalPolicy(**kwargs)


def make_forgetful_policy(**kwargs) -> ForgetfulPolicy:
    return ForgetfulPolicy(**kwargs)


def make_counting_policy(**kwargs) -> CountingPolicy:
    return CountingPolicy(**kwargs)


def make_pid_bound_policy(driver_pid: int, **kwargs) -> GoalPolicy:
    """A GoalPolicy that can be built only in the process ``driver_pid`` (elsewhere: RuntimeError), to test how a
    worker or actor that cannot build its policy is reported."""
    import os

    if os.getpid() != driver_pid:
        raise RuntimeError(f"injected: this policy cannot be built outside process {driver_pid}")
    return GoalPolicy(**kwargs)


def make_slower_fake_env(task: str, **kwargs) -> FakeEnv:
    """FakeEnv whose steps take 50 ms (kill tests that must catch a run of few episodes in the middle)."""
    return FakeEnv(task, step_sleep=0.05, **kwargs)


def make_slow_fake_env(task: str, **kwargs) -> FakeEnv:
    """FakeEnv whose steps take 10 ms (for `vla bench --env-factory fakes:make_slow_fake_env` kill tests)."""
    return FakeEnv(task, step_sleep=0.01, **kwargs)


class DyingFakeEnv(FakeEnv):
    """FakeEnv whose episode of ``die_seed`` misbehaves at step 2 on its first ``times`` attempts (attempts are
    counted as files in ``marker_dir``, shared across processes): ``mode="sigkill"`` kills its own process,
    ``mode="stall"`` sleeps ``stall_s`` (so a test can kill the process from outside while the item runs).
    ``die_task`` limits this to one task (default: every task)."""

    def __init__(
        self,
        task: str,
        die_seed: int,
        marker_dir: str,
        times: int = 1,
        mode: str = "sigkill",
        stall_s: float = 60.0,
        die_task: str | None = None,
        **kwargs,
    ):
        super().__init__(task, **kwargs)
        self.die_seed, self.marker_dir, self.times, self.mode, self.stall_s = die_seed, marker_dir, times, mode, stall_s
        self.die_task = die_task

    def step(self, action: np.ndarray):
        if self.t == 1 and self.die_seed in self.seeds and self.die_task in (None, self.task):
            import os
            import signal
            from pathlib import Path

            folder = Path(self.marker_dir)
            folder.mkdir(parents=True, exist_ok=True)
            attempt = len(list(folder.glob("attempt-*"))) + 1
            (folder / f"attempt-{attempt}").write_text(str(os.getpid()))
            if attempt <= self.times:
                if self.mode == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(self.stall_s)
        return super().step(action)


def make_dying_fake_env(task: str, **kwargs) -> DyingFakeEnv:
    """Env factory of :class:`DyingFakeEnv` (bind die_seed, marker_dir, times, mode with functools.partial)."""
    return DyingFakeEnv(task, **kwargs)


class _FlakyStep:
    """Wraps a real env: ``step`` raises RuntimeError at step ``fail_at_step`` of episodes reset with ``fail_seed``."""

    def __init__(self, env, fail_seed: int, fail_at_step: int):
        self._env, self._fail_seed, self._fail_at = env, fail_seed, fail_at_step
        self._seed, self._t = None, 0

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self, *, seed=None, options=None):
        self._seed, self._t = seed, 0
        return self._env.reset(seed=seed, options=options)

    def step(self, action):
        self._t += 1
        if self._seed == self._fail_seed and self._t == self._fail_at:
            raise RuntimeError(f"injected simulator failure at step {self._t}")
        return self._env.step(action)

    def close(self):
        return self._env.close()


def make_flaky_maniskill_env(task: str, fail_seed: int = 1, fail_at_step: int = 5, **kwargs):
    """The real ManiSkill env (``envs.wrapper.make_env``) whose episode ``fail_seed`` raises mid-episode."""
    from envs.wrapper import make_env

    return _FlakyStep(make_env(task, **kwargs), fail_seed, fail_at_step)


class HoldPolicy:
    """Reads its cameras' pixels (as a VLA would) and holds the arms still: every chunk row = current proprio."""

    def __init__(self, chunk_size: int = 8, cameras: tuple[str, ...] = ("head",), image_size: int | None = 32):
        self.metadata = PolicyMetadata(name="hold", cameras=cameras, chunk_size=chunk_size, image_size=image_size)
        self.pixel_sums: list[int] = []

    def reset(self) -> None:
        pass

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        self.pixel_sums.append(int(sum(np.asarray(obs.images[c]).sum() for c in self.metadata.cameras)))
        row = np.asarray(obs.proprio, np.float32)
        return np.repeat(row[:, None, :], self.metadata.chunk_size, axis=1)


def make_hold_policy(**kwargs) -> HoldPolicy:
    return HoldPolicy(**kwargs)


BUILT_ENVS: list = []
"""Envs made by :func:`make_counted_maniskill_env` in this process (their render_counts are read by tests)."""


def make_counted_maniskill_env(task: str, **kwargs):
    """The real ManiSkill env, remembered in BUILT_ENVS so a test can count its renders after a run."""
    from envs.wrapper import make_env

    env = make_env(task, **kwargs)
    BUILT_ENVS.append(env)
    return env


class GroundingFakeEnv(FakeEnv):
    """A fake grounding task with goals "red" (proprio[0] -> +0.5) and "blue" (-0.5): the instructed goal is
    ``options["goal"]`` or, without it, drawn from the seed (red for even seeds). The instruction names it
    ("lift the red cube", "... (unseen)" in the unseen split); ``info["other_goal"]`` reports the other goal
    reached. The privileged ``goal`` is the instructed goal's position, so GoalPolicy always does as told."""

    POSITIONS = {"red": 0.5, "blue": -0.5}

    def __init__(self, task: str, instruction_split: str = "seen", **kwargs):
        super().__init__(task, instruction_split=instruction_split, **kwargs)
        self.split = instruction_split
        self.reset_options: list[dict] = []

    def reset(self, *, seed=None, options=None):
        self.reset_options.append(dict(options or {}))
        obs, info = super().reset(seed=seed)
        fixed = (options or {}).get("goal")
        self.goals = [fixed or ("red" if s % 2 == 0 else "blue") for s in self.seeds]
        self.goal = np.array([self.POSITIONS[g] for g in self.goals], np.float32)
        return self._obs(), {**info, "other_goal": np.zeros(self.num_envs, bool)}

    def step(self, action):
        obs, reward, success, truncated, info = super().step(action)
        other = np.array([-self.POSITIONS[g] for g in self.goals], np.float32)
        return obs, reward, success, truncated, {**info, "other_goal": np.abs(self.proprio[:, 0] - other) < 0.05}

    def _obs(self) -> dict:
        obs = super()._obs()
        goals = getattr(self, "goals", ["red"] * self.num_envs)
        suffix = " (unseen)" if self.split == "unseen" else ""
        obs["instruction"] = [f"lift the {g} cube{suffix}" for g in goals]
        obs["privileged"]["goal"] = self.goal.copy()[:, None]
        return obs


def make_grounding_fake_env(task: str, **kwargs) -> FakeEnv:
    """GroundingFakeEnv for DualArmPickColorCube-v1, FakeEnv for every other task."""
    return GroundingFakeEnv(task, **kwargs) if task == "DualArmPickColorCube-v1" else FakeEnv(task, **kwargs)


class RedPolicy(GoalPolicy):
    """Ignores the instruction: always goes to the red goal's position (an instruction-blind policy)."""

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        row = np.asarray(obs.proprio, np.float32).copy()
        row[:, 0] = GroundingFakeEnv.POSITIONS["red"]
        return np.repeat(row[:, None, :], self.metadata.chunk_size, axis=1).astype(np.float32)


def make_red_policy(**kwargs) -> RedPolicy:
    return RedPolicy(**kwargs)
