"""Baseline policies: ``scripted`` (the task's expert), ``random`` and ``replay:DIR`` (recorded actions).

All three emit (B, H, 14) float32 absolute actions in env units (``envs.layout``) and never mutate the
observation. Besides the protocol's ``reset()`` / ``predict_action_chunk(obs)`` they implement the harness's
optional, duck-typed hook

    set_episode(task: str, seeds: Sequence[int]) -> None     # one seed per batch row

which the runner calls right after ``reset()`` when a policy has it, so a policy can know which episode it is
in: ``replay`` picks the recorded episode of (task, seed), ``random`` seeds its generator from (task, seed).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs.layout import ACTION_DIM, ACTION_LAYOUT, CONTROL_MODE, GRIPPER_DIMS
from policies.base import Observation, PolicyMetadata, register_policy


class ScriptedPolicy:
    """The task's scripted expert (``envs.experts``), one per batch row; reads privileged simulator state.

    chunk_size 1: the expert re-plans from the state it sees at every step. Raises ValueError when the
    observation carries no privileged state or names a task without an expert.
    """

    def __init__(self) -> None:
        from envs.experts import make_expert
        from envs.specs import TASKS

        tasks = []
        for task in TASKS:
            try:
                make_expert(task)
                tasks.append(task)
            except ValueError:
                continue  # no expert for that task: check_compatible rejects it before any episode
        self.metadata = PolicyMetadata(name="scripted", chunk_size=1, uses_privileged_state=True, tasks=tuple(tasks))
        self._experts: dict[int, object] = {}

    def reset(self) -> None:
        """Drop every expert's plan (new experts are made lazily at the next step)."""
        self._experts = {}

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """(B, 1, 14) float32: each row's expert's next action."""
        from envs.experts import make_expert

        priv = obs.privileged
        if not priv or "task" not in priv:
            raise ValueError("scripted policy needs the observation's privileged state (with 'task'); got none")
        out = np.empty((obs.batch_size, 1, ACTION_DIM), dtype=np.float32)
        for i in range(obs.batch_size):
            if i not in self._experts:
                self._experts[i] = make_expert(str(priv["task"][i]))
                self._experts[i].reset()
            single = {"privileged": {k: v[i] for k, v in priv.items()}, "proprio": obs.proprio[i]}
            out[i, 0] = self._experts[i].act(single)
        return out


class RandomPolicy:
    """Random actions near the current pose: a random walk of the TCP targets, grippers uniform in [-1, 1].

    Each chunk row h is ``proprio + cumulative uniform steps`` (position +-``pos_step`` m and rpy
    +-``rot_step`` rad per step). Determinism: the generator of batch row i is seeded from
    (``seed``, task, episode seed) by ``set_episode``; without that hook it is seeded at the first call after
    ``reset()`` from a hash of the instruction and the initial proprio -- either way the same episode gives
    the same actions in any process.
    """

    def __init__(self, chunk_size: int = 1, seed: int = 0, pos_step: float = 0.01, rot_step: float = 0.03):
        if chunk_size < 1:
            raise ValueError(f"random policy: chunk_size must be >= 1, got {chunk_size}")
        self.metadata = PolicyMetadata(name="random", chunk_size=int(chunk_size), extra={"seed": int(seed)})
        self.seed = int(seed)
        self.pos_step, self.rot_step = float(pos_step), float(rot_step)
        self._rngs: list[np.random.Generator] | None = None

    def reset(self) -> None:
        """Forget the generators (re-seeded by ``set_episode`` or at the next call)."""
        self._rngs = None

    def set_episode(self, task: str, seeds: Sequence[int]) -> None:
        """Seed row i's generator from (self.seed, task, seeds[i])."""
        tag = zlib.crc32(task.encode())
        self._rngs = [np.random.default_rng([self.seed, tag, int(s)]) for s in seeds]

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """(B, H, 14) float32 random actions around ``obs.proprio``."""
        b, h = obs.batch_size, self.metadata.chunk_size
        if self._rngs is None:
            self._rngs = [
                np.random.default_rng([self.seed, zlib.crc32(obs.instruction[i].encode() + obs.proprio[i].tobytes())])
                for i in range(b)
            ]
        if len(self._rngs) != b:
            raise ValueError(f"random policy: seeded for {len(self._rngs)} rows, observation has {b}")
        step = np.tile(np.array([self.pos_step] * 3 + [self.rot_step] * 3 + [0.0], dtype=np.float64), 2)
        out = np.empty((b, h, ACTION_DIM), dtype=np.float32)
        for i, rng in enumerate(self._rngs):
            walk = np.cumsum(rng.uniform(-1.0, 1.0, size=(h, ACTION_DIM)) * step, axis=0)
            chunk = obs.proprio[i].astype(np.float64) + walk
            chunk[:, list(GRIPPER_DIMS)] = rng.uniform(-1.0, 1.0, size=(h, len(GRIPPER_DIMS)))
            out[i] = chunk
        return out


def _attr(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if hasattr(value, "item") else value


class ReplayPolicy:
    """Replays the ``action`` dataset of recorded ``episode_*.hdf5`` files (``vla demos`` layout).

    For an episode (task, seed) it plays the file whose root attrs ``task`` and ``seed`` match, one action per
    step (chunk_size 1), holding the last action when the recording is shorter than the episode.

    Raises:
        ValueError: the folder has no episode files with task/seed attrs, a file's control_mode or
            action_layout differs from the env's, or (at ``set_episode``) no recording of (task, seed) exists.
    """

    def __init__(self, folder: str | Path):
        import h5py

        self.folder = Path(folder)
        files = sorted(self.folder.glob("episode_*.hdf5"))
        if not files:
            raise ValueError(f"replay: no episode_*.hdf5 files in {self.folder}")
        self._index: dict[tuple[str, int], Path] = {}
        for path in files:
            with h5py.File(path, "r") as f:
                attrs = {k: _attr(v) for k, v in f.attrs.items()}
            if "task" not in attrs or "seed" not in attrs:
                continue
            if attrs.get("control_mode", CONTROL_MODE) != CONTROL_MODE:
                raise ValueError(f"replay: {path}: control_mode {attrs['control_mode']!r}, env uses {CONTROL_MODE!r}")
            layout = attrs.get("action_layout")
            if layout is not None and tuple(json.loads(layout)) != ACTION_LAYOUT:
                raise ValueError(f"replay: {path}: action_layout {layout} differs from {list(ACTION_LAYOUT)}")
            self._index[(str(attrs["task"]), int(attrs["seed"]))] = path
        if not self._index:
            raise ValueError(f"replay: no episode file in {self.folder} has 'task' and 'seed' attrs")
        tasks = tuple(sorted({t for t, _ in self._index}))
        self.metadata = PolicyMetadata(
            name=f"replay:{self.folder}",
            chunk_size=1,
            tasks=tasks,
            extra={"folder": str(self.folder), "episodes": len(self._index)},
        )
        self._actions: list[np.ndarray] | None = None
        self._t = 0

    def reset(self) -> None:
        """Rewind; the runner then calls ``set_episode``."""
        self._actions, self._t = None, 0

    def set_episode(self, task: str, seeds: Sequence[int]) -> None:
        """Load the recorded actions of (task, seeds[i]) for each batch row."""
        import h5py

        actions = []
        for s in seeds:
            path = self._index.get((task, int(s)))
            if path is None:
                have = sorted(seed for t, seed in self._index if t == task)
                raise ValueError(
                    f"replay: no recorded episode with task={task!r} seed={s} in {self.folder} "
                    f"(seeds recorded for that task: {have[:20]}{' ...' if len(have) > 20 else ''})"
                )
            with h5py.File(path, "r") as f:
                if "action" not in f:
                    raise ValueError(f"replay: {path} has no 'action' dataset")
                act = np.asarray(f["action"], dtype=np.float32)
            if act.ndim != 2 or act.shape[1] != ACTION_DIM or len(act) == 0:
                raise ValueError(f"replay: {path}: 'action' has shape {act.shape}, expected (T>0, {ACTION_DIM})")
            actions.append(act)
        self._actions, self._t = actions, 0

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """(B, 1, 14) float32: recorded action t of each row's episode."""
        if self._actions is None:
            raise ValueError(
                "replay policy: set_episode(task, seeds) was not called after reset() -- the harness "
                "calls it; other callers must too"
            )
        if len(self._actions) != obs.batch_size:
            raise ValueError(f"replay: loaded {len(self._actions)} episodes, observation has {obs.batch_size} rows")
        out = np.stack([a[min(self._t, len(a) - 1)] for a in self._actions])[:, None, :]
        self._t += 1
        return out.astype(np.float32)


@register_policy("scripted")
def _make_scripted(arg: str | None = None) -> ScriptedPolicy:
    if arg:
        raise ValueError(f"policy 'scripted' takes no argument, got 'scripted:{arg}'")
    return ScriptedPolicy()


@register_policy("random", usage="random[:H]")
def _make_random(arg: str | None = None, seed: int = 0) -> RandomPolicy:
    """``random`` or ``random:H`` (chunk size H)."""
    try:
        chunk = int(arg) if arg else 1
    except ValueError as err:
        raise ValueError(f"policy 'random:H' needs an integer chunk size H, got {arg!r}") from err
    return RandomPolicy(chunk_size=chunk, seed=seed)


@register_policy("replay", usage="replay:DIR")
def _make_replay(arg: str | None = None) -> ReplayPolicy:
    if not arg:
        raise ValueError("policy 'replay' needs a folder: replay:DIR")
    return ReplayPolicy(arg)
