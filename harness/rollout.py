"""Rolling out one work item -- one task, B seeds on B sub-envs (B = 1 on the CPU simulator) -- into records.

Per episode: ``policy.reset()``, then ``policy.set_episode(task=..., seeds=[...])`` if the policy has that
optional hook (see ``policies.baselines``), ``executor.reset()``, ``env.reset(seed=s)`` (a list of seeds for
B > 1), then steps until the episode ends (``RunSettings`` docstring). The policy sees a read-only
:class:`Observation` holding only its own cameras, and the privileged state only when its metadata says
``uses_privileged_state`` -- a policy that writes into it raises, which records an ``error``.

Rendering on demand: env images are lazy (``envs.wrapper.LazyImages``), and the rollout reads a camera only when
something consumes the frame: the policy's cameras when the chunk executor queries the policy (open loop k: once
per k steps), the video cameras on the steps a video keeps (every ``video_stride``-th step, plus the first and
the last). The per-step ``observation`` timing includes the rendering done for that step.

An exception from the env or the policy ends the item's unfinished episodes with status ``error`` (the
traceback tail in ``error``); episodes already finished in that item keep their results. The exception is not
a failure and is never re-raised: the run goes on (the caller rebuilds the env).
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.metrics import timing_summary
from harness.records import TIMING_KINDS, EpisodeRecord
from harness.variants import parse_label
from harness.video import EpisodeFrames, OverlayInfo, video_name
from policies.base import Observation

MAX_ERROR_CHARS = 4000


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a process needs to run episodes (picklable: sent to spawned workers).

    Attributes:
        policy_factory: () -> Policy; called once per process (module-level callable or functools.partial).
        env_factory: called as ``env_factory(task, cameras=, image_size=, num_envs=, instruction_split=,
            max_episode_steps=, sim_backend=, render_backend=, visual_quality=)`` (``envs.wrapper.make_env``'s
            signature).
        out: the output folder (videos go to out/videos).
        max_episode_steps: task -> episode length limit in control steps.
        cameras: cameras every env renders (policy cameras + video cameras).
        policy_cameras: the cameras the policy reads (its metadata), in its order.
        video_cameras: cameras tiled in the videos.
        image_size: rendered image side, px.
        video: "all" | "failures" (failed and errored episodes) | "none".
        video_stride: keep every k-th frame in videos (plus the first and last; played at 20 / k fps).
        end_on_success: end an episode ``post_success_steps`` steps after its first success.
        post_success_steps: see above (>= 0).
        n_action_steps, temporal_ensemble_coeff: chunk execution (``harness.chunking.ChunkExecutor``).
        instruction_split, num_envs, sim_backend, render_backend, visual_quality: passed to the env factory.
        episode_timeout: wall-clock seconds per work item, or None (enforced by the worker pool).
    """

    policy_factory: Callable[[], Any]
    env_factory: Callable[..., Any]
    out: Path
    max_episode_steps: Mapping[str, int]
    cameras: tuple[str, ...]
    policy_cameras: tuple[str, ...]
    video_cameras: tuple[str, ...]
    image_size: int
    video: str = "all"
    video_stride: int = 1
    end_on_success: bool = True
    post_success_steps: int = 10
    n_action_steps: int | None = None
    temporal_ensemble_coeff: float | None = None
    instruction_split: str = "seen"
    num_envs: int = 1
    sim_backend: str = "auto"
    render_backend: str = "gpu"
    visual_quality: str = "fast"
    episode_timeout: float | None = None


def _read_only(x: Any) -> np.ndarray:
    view = np.asarray(x).view()
    view.flags.writeable = False
    return view


def policy_observation(obs: Mapping[str, Any], cameras: Sequence[str], privileged: bool) -> Observation:
    """The policy's view of an env observation: its cameras only, read-only arrays, privileged state only if
    asked for. Never copies pixels and never changes ``obs``."""
    return Observation(
        images={c: _read_only(obs["images"][c]) for c in cameras},
        proprio=_read_only(obs["proprio"]),
        instruction=tuple(obs["instruction"]),
        privileged={k: _read_only(v) for k, v in obs.get("privileged", {}).items()} if privileged else {},
    )


@dataclasses.dataclass
class _Episode:
    """Bookkeeping of one sub-env's episode."""

    seed: int
    instruction: str = ""
    length: int = 0
    calls: int = 0
    first_success: int | None = None
    success_at_end: bool = False
    other_goal: bool | None = None
    active: bool = True
    status: str = "ok"
    error: str | None = None
    timings: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {k: [] for k in TIMING_KINDS})
    frames: EpisodeFrames | None = None


@dataclasses.dataclass
class EpisodeResult:
    """A finished episode: its record (``video`` still None) and its buffered frames (None without video)."""

    record: EpisodeRecord
    frames: EpisodeFrames | None

    @property
    def outcome(self) -> str:
        """success | failure | error (the video name's suffix; a timeout has no video)."""
        return "error" if self.record.status != "ok" else self.record.outcome()


def _env_timing(env: Any, fallback_s: float) -> tuple[float, float]:
    timing = getattr(env, "last_timing", None)
    if not timing:
        return fallback_s, 0.0
    return float(timing.get("simulation", 0.0)), float(timing.get("observation", 0.0))


def _render_s(env: Any) -> float:
    """Seconds the env has spent rendering so far (0 for envs that do not count it)."""
    return float(getattr(env, "render_seconds", 0.0))


def _step_all(env, policy, executor, eps: list[_Episode], settings: RunSettings, task: str, obs: dict) -> None:
    """Step the env until every episode in ``eps`` has ended (mutates ``eps``)."""
    max_steps = int(settings.max_episode_steps[task])
    privileged = bool(policy.metadata.uses_privileged_state)
    for t in range(1, max_steps + 1):
        rendered_before = _render_s(env)
        action = executor.act(policy, lambda o=obs: policy_observation(o, settings.policy_cameras, privileged))
        inference_s = executor.last_inference_s
        t0 = time.perf_counter()
        obs, _, _, truncated, info = env.step(action)
        sim_s, obs_s = _env_timing(env, time.perf_counter() - t0)
        success = np.asarray(info["success"]).reshape(-1)
        other = np.asarray(info["other_goal"]).reshape(-1) if "other_goal" in info else None
        for i, ep in enumerate(eps):
            if not ep.active:
                continue
            ep.length = t
            if inference_s is not None:
                ep.calls += 1
                ep.timings["inference"].append(inference_s)
            ep.success_at_end = bool(success[i])
            if other is not None:
                ep.other_goal = bool(ep.other_goal) or bool(other[i])
            if ep.success_at_end and ep.first_success is None:
                ep.first_success = t
            done_after_success = (
                settings.end_on_success
                and ep.first_success is not None
                and t >= ep.first_success + settings.post_success_steps
            )
            if done_after_success or t >= max_steps or bool(np.asarray(truncated).reshape(-1)[i]):
                ep.active = False
            if ep.frames is not None and (t % settings.video_stride == 0 or not ep.active):
                ep.frames.add(obs["images"], i, t, ep.first_success is not None)
        render_s = _render_s(env) - rendered_before
        for ep in eps:
            if ep.length == t:
                ep.timings["simulation"].append(sim_s)
                ep.timings["observation"].append(obs_s + render_s)
        if not any(ep.active for ep in eps):
            return


def rollout(
    env: Any, policy: Any, executor: Any, task: str, seeds: Sequence[int], settings: RunSettings, worker: int = 0
) -> list[EpisodeResult]:
    """Run the episodes of ``seeds`` (len(seeds) <= env.num_envs; spare sub-envs run a copy of the last seed and
    are ignored) and return one :class:`EpisodeResult` per seed, in order.

    Never raises for an env/policy exception: those episodes get status ``error`` (see the module docstring);
    check ``result.record["status"]`` and rebuild the env after an error.
    """
    num_envs = int(getattr(env, "num_envs", 1))
    if not 1 <= len(seeds) <= num_envs:
        raise ValueError(f"rollout: {len(seeds)} seeds for an env with {num_envs} sub-envs")
    padded = [int(s) for s in seeds] + [int(seeds[-1])] * (num_envs - len(seeds))
    eps = [_Episode(seed=int(s)) for s in seeds]
    start = time.perf_counter()
    try:
        policy.reset()
        set_episode = getattr(policy, "set_episode", None)
        if callable(set_episode):
            set_episode(task=parse_label(task).task, seeds=padded)
        executor.reset()
        t0 = time.perf_counter()
        options = parse_label(task).reset_options
        obs, _ = env.reset(seed=padded if num_envs > 1 else padded[0], **({"options": options} if options else {}))
        sim_s, obs_s = _env_timing(env, time.perf_counter() - t0)
        rendered_before = _render_s(env)
        for i, ep in enumerate(eps):
            ep.instruction = str(obs["instruction"][i])
            if settings.video != "none":
                info = OverlayInfo(task, ep.seed, ep.instruction, int(settings.max_episode_steps[task]))
                ep.frames = EpisodeFrames(info, tuple(settings.video_cameras), stride=settings.video_stride)
                ep.frames.add(obs["images"], i, 0, False)
        for ep in eps:
            ep.timings["simulation"].append(sim_s)
            ep.timings["observation"].append(obs_s + _render_s(env) - rendered_before)
        _step_all(env, policy, executor, eps, settings, task, obs)
    except Exception as err:  # recorded as status "error" with its traceback (not hidden, not a failure)
        text = f"{type(err).__name__}: {err}\n" + "".join(traceback.format_exc())[-MAX_ERROR_CHARS:]
        for ep in eps:
            if ep.active:
                ep.active, ep.status, ep.error = False, "error", text
    wall = time.perf_counter() - start
    return [_result(ep, task, wall, worker) for ep in eps]


def _result(ep: _Episode, task: str, wall_s: float, worker: int) -> EpisodeResult:
    ok = ep.status == "ok"
    record = EpisodeRecord(
        task=task,
        seed=ep.seed,
        status=ep.status,  # type: ignore[arg-type]
        success_once=(ep.first_success is not None) if ok else None,
        success_at_end=ep.success_at_end if ok else None,
        episode_len=ep.length,
        policy_calls=ep.calls,
        instruction=ep.instruction,
        other_goal=ep.other_goal if ok else None,
        error=ep.error,
        timing_ms={k: timing_summary(v) for k, v in ep.timings.items()},
        wall_s=round(wall_s, 4),
        worker=int(worker),
    )
    return EpisodeResult(record, ep.frames)


def wants_video(mode: str, outcome: str) -> bool:
    """Whether ``--video mode`` keeps an episode with this outcome."""
    return mode == "all" or (mode == "failures" and outcome in ("failure", "error"))


def attach_video_name(result: EpisodeResult) -> str:
    """Set the record's ``video`` to ``videos/<name>.mp4`` and return the name."""
    name = video_name(result.record.task, result.record.seed, result.outcome)
    result.record = dataclasses.replace(result.record, video=f"videos/{name}")
    return name


def failed_record(task: str, seed: int, status: str, text: str, worker: int) -> EpisodeRecord:
    """The record of an episode that produced no result of its own (``timeout``, or ``error`` when its worker
    process died): success fields null, episode_len 0, empty timings."""
    ep = _Episode(seed=int(seed), status=status, error=text, active=False)
    return _result(ep, task, 0.0, worker).record
