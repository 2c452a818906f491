"""The Gymnasium wrapper that gives every dual-arm task one observation and action contract.

    env = make_env("TwoRobotPickCube-v1", cameras=("head", "left_wrist"), image_size=128)
    obs, info = env.reset(seed=3)
    obs, reward, terminated, truncated, info = env.step(action)   # action (14,) or (B, 14)

Everything is batched over B = ``num_envs`` sub-environments (B = 1 on the CPU simulator), as in ManiSkill:

* ``obs["images"]``: camera name -> (B, S, S, 3) uint8 RGB for the requested cameras, as a :class:`LazyImages`
  mapping: a camera is rendered the first time its image is read, at most once per step, and never when nothing
  reads it (an open-loop chunk of 8 with no video renders 1 step in 8). The pixels are those of the state the
  observation belongs to; reading them after the env has stepped again raises. Cameras not requested are never
  rendered. ``obs["proprio"]``: (B, 14) float32 (``envs.layout``); ``obs["instruction"]``: list of B str;
  ``obs["privileged"]``: simulator state for the scripted expert, name -> (B, ...) numpy (+ ``task``).
* ``reward``: (B,) float32 ManiSkill normalized dense reward; ``terminated``: (B,) bool, ManiSkill's (= success);
  ``truncated``: (B,) bool, step count reached ``max_episode_steps``; ``info``: numpy arrays, always ``success``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.layout import (
    ACTION_DIM,
    ARMS,
    CAMERAS,
    CONTROL_MODE,
    action_to_controller,
    tcp_pose_to_proprio,
    validate_action,
)
from envs.specs import TaskSpec, get_task
from envs.visuals import check_visual_quality


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def make_env(
    task: str,
    cameras: Sequence[str] = CAMERAS,
    image_size: int = 256,
    num_envs: int = 1,
    instruction_split: str = "seen",
    max_episode_steps: int | None = None,
    sim_backend: str = "auto",
    render_backend: str = "gpu",
    visual_quality: str = "fast",
) -> DualArmEnv:
    """Create a task through ManiSkill's registry (``gym.make``) wrapped in :class:`DualArmEnv`.

    Args:
        task: a name from ``envs.specs.TASKS`` (``vla envs`` lists them).
        cameras: cameras to render each step (subset of head, left_wrist, right_wrist, low); () renders nothing.
        image_size: square image side (px) for every camera.
        num_envs: parallel sub-environments (> 1 needs ManiSkill's GPU simulator).
        instruction_split: "seen" or "unseen" instruction templates.
        max_episode_steps: override the task's limit (control steps at 20 Hz).
        sim_backend / render_backend: passed to ManiSkill ("auto" picks physx_cpu for one env without CUDA;
            the render backend falls back to the CPU (lavapipe) when no CUDA device exists).
        visual_quality: "fast" (low-poly arm visuals, 8-12x cheaper CPU frames, same physics) or "full" (the stock
            meshes); see ``envs.visuals``.

    Raises:
        ValueError: unknown task, unknown camera, or a bad argument value.
    """
    import mani_skill.envs  # noqa: F401  (registers ManiSkill's own tasks)

    import envs.tasks  # noqa: F401  (registers ours)

    spec = get_task(task)
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise ValueError(f"cameras: unknown {unknown}; known: {list(CAMERAS)}")
    if instruction_split not in ("seen", "unseen"):
        raise ValueError(f"instruction_split must be 'seen' or 'unseen', got {instruction_split!r}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    check_visual_quality(visual_quality)
    env = gym.make(
        spec.env_id,
        num_envs=num_envs,
        obs_mode="state_dict",  # cameras are rendered by the wrapper, only those requested
        control_mode=CONTROL_MODE,
        reward_mode="normalized_dense",
        image_size=image_size,
        visual_quality=visual_quality,
        sim_backend=sim_backend,
        render_backend=render_backend,
        max_episode_steps=None,  # the wrapper counts steps itself
    )
    return DualArmEnv(env, spec, tuple(cameras), image_size, instruction_split, max_episode_steps)


class LazyImages(Mapping):
    """The images of one observation: camera name -> (B, S, S, 3) uint8, rendered on first read (see the module
    docstring). ``rendered`` lists the cameras rendered so far.

    Raises (on read):
        KeyError: a camera this env does not render.
        RuntimeError: the env has stepped or reset since this observation was made (its pixels are gone).
    """

    def __init__(self, env: DualArmEnv, cameras: tuple[str, ...], token: int):
        self._env, self._cameras, self._token = env, cameras, token
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, camera: str) -> np.ndarray:
        if camera not in self._cache:
            if camera not in self._cameras:
                raise KeyError(f"camera {camera!r} is not rendered by this env (cameras: {list(self._cameras)})")
            if self._token != self._env._obs_token:
                raise RuntimeError(
                    f"image {camera!r} read after the env moved on (observation {self._token}, env at "
                    f"{self._env._obs_token}): read images before the next step/reset"
                )
            self._cache.update(self._env.render_cameras([camera]))
        return self._cache[camera]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cameras)

    def __len__(self) -> int:
        return len(self._cameras)

    def __contains__(self, camera: object) -> bool:
        return camera in self._cameras

    @property
    def rendered(self) -> tuple[str, ...]:
        """Cameras whose image has been rendered (in render order)."""
        return tuple(self._cache)


class DualArmEnv(gym.Wrapper):
    """See the module docstring for the contract. Attributes: ``spec_`` (TaskSpec), ``cameras``, ``image_size``,
    ``num_envs``, ``max_episode_steps``, ``instruction_split``, ``elapsed_steps`` ((B,) int), ``render_counts``
    (camera -> frames rendered since the env was made), ``render_seconds`` (total seconds spent rendering)."""

    def __init__(
        self,
        env: gym.Env,
        spec: TaskSpec,
        cameras: tuple[str, ...],
        image_size: int,
        instruction_split: str = "seen",
        max_episode_steps: int | None = None,
    ):
        super().__init__(env)
        self.spec_ = spec
        self.cameras = cameras
        self.image_size = image_size
        self.instruction_split = instruction_split
        self.max_episode_steps = int(max_episode_steps or spec.max_episode_steps)
        self.num_envs = int(self.env.unwrapped.num_envs)
        self.single_action_space = gym.spaces.Box(-np.inf, np.inf, (ACTION_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (self.num_envs, ACTION_DIM), np.float32)
        self.elapsed_steps = np.zeros(self.num_envs, dtype=np.int64)
        self._instructions: list[str] = [""] * self.num_envs
        self.last_timing: dict[str, float] = {"simulation": 0.0, "observation": 0.0}
        """Seconds the last reset/step spent in physics + control (``simulation``) and in proprio + privileged
        state (``observation``; rendering happens later, when images are read: see ``render_seconds``)."""
        self.render_counts: collections.Counter[str] = collections.Counter()
        self.render_seconds = 0.0
        self._obs_token = 0
        self._episodes = 0

    @property
    def task(self) -> str:
        """The task name."""
        return self.spec_.name

    # ---------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        """Reset all sub-envs. ``seed`` (int, or one int per sub-env) makes the initial state reproducible.

        On the CPU simulator every reset after the first rebuilds the PhysX scene (ManiSkill's ``reconfigure``,
        ~0.15 s): PhysX keeps contact caches across a plain reset, so an episode's trajectory would otherwise
        depend on the episodes the env ran before (measured: grasps 1-3 mm apart for the same seed). With the
        rebuild an episode depends only on its seed, whatever ran before it, in whichever worker.
        """
        seeds = None
        if seed is not None:
            seeds = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
            if len(seeds) == 1 and self.num_envs > 1:
                seeds = [seeds[0] + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset: got {len(seeds)} seeds for {self.num_envs} sub-envs")
        t0 = time.perf_counter()
        options = dict(options or {})
        if self._episodes and not self.env.unwrapped.gpu_sim_enabled:
            options.setdefault("reconfigure", True)
        _, info = self.env.reset(seed=seeds if seeds is None or len(seeds) > 1 else seeds[0], options=options)
        self._episodes += 1
        self.elapsed_steps[:] = 0
        self._instructions = self._pick_instructions(seeds)
        t1 = time.perf_counter()
        obs = self._observation()
        self.last_timing = {"simulation": t1 - t0, "observation": time.perf_counter() - t1}
        return obs, self._info(info)

    def step(self, action: np.ndarray):
        """Apply a (14,) or (B, 14) absolute action (see ``envs.layout``); raises ValueError on bad input."""
        act = validate_action(action, self.num_envs)
        u = self.env.unwrapped
        base_pos, base_quat = {}, {}
        for arm, agent in zip(ARMS, u.agent.agents):
            base_pos[arm] = _np(agent.robot.pose.p)
            base_quat[arm] = _np(agent.robot.pose.q)
        ctrl = action_to_controller(act, base_pos, base_quat)
        t0 = time.perf_counter()
        keys = list(u.agent.agents_dict)  # "{agent uid}-{i}", left arm first (ManiSkill's MultiAgent naming)
        _, reward, terminated, _, info = self.env.step({key: ctrl[a] for key, a in zip(keys, ARMS)})
        self.elapsed_steps += 1
        truncated = self.elapsed_steps >= self.max_episode_steps
        t1 = time.perf_counter()
        obs = self._observation()
        self.last_timing = {"simulation": t1 - t0, "observation": time.perf_counter() - t1}
        return (
            obs,
            _np(reward).astype(np.float32).reshape(self.num_envs),
            _np(terminated).astype(bool).reshape(self.num_envs),
            truncated.copy(),
            self._info(info),
        )

    # ---------------------------------------------------------------------------------------------- pieces
    def _pick_instructions(self, seeds: list[int] | None) -> list[str]:
        templates = self.spec_.seen if self.instruction_split == "seen" else self.spec_.unseen
        fields = self.env.unwrapped.instruction_fields()
        out = []
        for i in range(self.num_envs):
            rng = np.random.default_rng(None if seeds is None else [seeds[i], 7919])
            out.append(templates[int(rng.integers(len(templates)))].format(**fields[i]))
        return out

    def instruction_variants(self, split: str) -> list[list[str]]:
        """Every template of ``split`` ("seen" | "unseen") filled for each sub-env's current episode."""
        templates = self.spec_.seen if split == "seen" else self.spec_.unseen
        return [[t.format(**f) for t in templates] for f in self.env.unwrapped.instruction_fields()]

    def proprio(self) -> np.ndarray:
        """(B, 14) float32 measured TCP pose (world frame) + gripper opening of both arms."""
        u = self.env.unwrapped
        pos, quat, finger = {}, {}, {}
        for arm, agent in zip(ARMS, u.agent.agents):
            pos[arm] = _np(agent.tcp.pose.p)
            quat[arm] = _np(agent.tcp.pose.q)
            finger[arm] = _np(agent.robot.get_qpos())[:, -2:].mean(axis=1)
        return tcp_pose_to_proprio(pos, quat, finger)

    def render_cameras(self, cameras: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Render ``cameras`` (default: the requested ones) now: name -> (B, S, S, 3) uint8 (counted in
        ``render_counts`` / ``render_seconds``)."""
        from envs.tasks.common import sensor_uid

        cams = self.cameras if cameras is None else tuple(cameras)
        if not cams:
            return {}
        t0 = time.perf_counter()
        u = self.env.unwrapped
        for obj in u._hidden_objects:  # goal markers etc. are hidden from observations, as ManiSkill does
            obj.hide_visual()
        u.scene.update_render(update_sensors=True, update_human_render_cameras=False)
        sensors = [u._sensors[sensor_uid(u, c)] for c in cams]
        for s in sensors:
            s.capture()
        out = {}
        for name, s in zip(cams, sensors):
            rgb = s.get_obs(rgb=True, depth=False, position=False, segmentation=False)["rgb"]
            out[name] = np.ascontiguousarray(_np(rgb)[..., :3].astype(np.uint8))
        self.render_counts.update(cams)
        self.render_seconds += time.perf_counter() - t0
        return out

    def privileged(self) -> dict[str, np.ndarray]:
        """Task state for the scripted expert: name -> (B, ...) float32, plus ``task`` (B,) object array."""
        state = {k: _np(v).astype(np.float32) for k, v in self.env.unwrapped.privileged_state().items()}
        state["task"] = np.array([self.task] * self.num_envs, dtype=object)
        return state

    def _observation(self) -> dict[str, Any]:
        self._obs_token += 1
        return {
            "images": LazyImages(self, self.cameras, self._obs_token),
            "proprio": self.proprio(),
            "instruction": list(self._instructions),
            "privileged": self.privileged(),
        }

    def _info(self, info: dict) -> dict[str, np.ndarray]:
        out = {}
        for k, v in info.items():
            arr = _np(v)
            out[k] = arr.reshape(self.num_envs) if arr.size == self.num_envs else arr
        out["success"] = out.get("success", np.zeros(self.num_envs, dtype=bool)).astype(bool)
        out["elapsed_steps"] = self.elapsed_steps.copy()
        return out
