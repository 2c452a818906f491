"""The episode runner: one process's policy, chunk executor and envs, running work items into records.

A work item is ``(task, seeds)`` of up to ``num_envs`` seeds (one seed per item on the CPU simulator). An
:class:`EpisodeRunner` owns its env(s) (one per task, built lazily and checked with
``policies.base.check_compatible`` before its first episode), its policy and its chunk executor. Where items run
(in this process or in worker processes) is ``harness.dispatch``'s business. Outcomes depend only on
(task, seed) and the settings: every episode resets the policy, the executor and the env with its seed (the env
rebuilds its PhysX scene, ``envs.wrapper``), so the number of workers does not change any result.

Records are released in episode order once their video (if any) is encoded, so a record in episodes.jsonl
always has its video on disk; a kill loses at most the episodes whose videos were still encoding, and a
resumed run redoes them.

Optional policy hook (duck-typed, an extension of ``policies.base.Policy``): ``set_episode(task: str,
seeds: Sequence[int])``, called after ``reset()`` with one seed per batch row.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

from harness.chunking import ChunkExecutor
from harness.records import EpisodeRecord
from harness.rollout import EpisodeResult, RunSettings, attach_video_name, rollout, wants_video
from harness.variants import parse_label
from harness.video import VideoWriter
from policies.base import EnvMetadata, check_compatible

WorkItem = tuple[str, tuple[int, ...]]


def _env_key(label: str) -> str:
    """The env a task-variant label runs in: its label without the goal part (goals are reset options)."""
    variant = parse_label(label)
    return variant.label if variant.goal is None else dataclasses.replace(variant, goal=None).label


def env_metadata(env: Any) -> EnvMetadata:
    """What an env offers (task, rendered cameras, image size) for ``check_compatible``."""
    return EnvMetadata(task=env.task, cameras=tuple(env.cameras), image_size=int(env.image_size))


def _close_quietly(env: Any) -> None:
    try:
        env.close()
    except Exception as err:  # a broken env may fail to close; the run must go on (reported, not hidden)
        warnings.warn(
            f"closing env of task {getattr(env, 'task', '?')} failed: {type(err).__name__}: {err}", stacklevel=2
        )


class EpisodeRunner:
    """Runs work items in one process with one policy, one chunk executor and one env per task.

    Args:
        settings: the run's :class:`RunSettings`.
        worker: worker index written into records.
        policy: an already built policy (default: ``settings.policy_factory()``).
    """

    def __init__(self, settings: RunSettings, worker: int = 0, policy: Any = None):
        self.settings = settings
        self.worker = worker
        self.policy = policy if policy is not None else settings.policy_factory()
        meta = self.policy.metadata
        self.executor = ChunkExecutor(
            meta.chunk_size, settings.n_action_steps, settings.temporal_ensemble_coeff, meta.action_dim
        )
        self.envs: dict[str, Any] = {}
        self.video = VideoWriter(settings.out / "videos") if settings.video != "none" else None
        self._pending: list[tuple[EpisodeRecord, concurrent.futures.Future | None]] = []

    def env_for(self, task: str) -> Any:
        """The env of ``task`` (a task-variant label, ``harness.variants``; variants that differ only in their goal
        share one env) built on first use and checked against the policy (PolicyMismatchError)."""
        key = _env_key(task)
        if key not in self.envs:
            s = self.settings
            variant = parse_label(task)
            env = s.env_factory(
                variant.task,
                cameras=s.cameras,
                image_size=s.image_size,
                num_envs=s.num_envs,
                instruction_split=variant.split or s.instruction_split,
                max_episode_steps=s.max_episode_steps[task],
                sim_backend=s.sim_backend,
                render_backend=s.render_backend,
                visual_quality=s.visual_quality,
            )
            try:
                check_compatible(self.policy.metadata, env_metadata(env))
            except BaseException:
                _close_quietly(env)
                raise
            self.envs[key] = env
        return self.envs[key]

    def run_item(self, task: str, seeds: Sequence[int]) -> list[EpisodeRecord]:
        """Run one item; return the records of the PREVIOUS item (their videos now written).

        The env must already exist (call :meth:`env_for` first so that env construction is not timed).
        """
        key = _env_key(task)
        results = rollout(self.envs[key], self.policy, self.executor, task, seeds, self.settings, self.worker)
        if any(r.record.status != "ok" for r in results):
            _close_quietly(self.envs.pop(key))  # the env may be broken: the next item of this task rebuilds it
        ready = self._release()
        self._pending = [self._submit_video(r) for r in results]
        return ready

    def _submit_video(self, result: EpisodeResult) -> tuple[EpisodeRecord, concurrent.futures.Future | None]:
        if self.video is None or result.frames is None or not wants_video(self.settings.video, result.outcome):
            return result.record, None
        self.video.remove_existing(result.record.task, result.record.seed)
        attach_video_name(result)
        return result.record, self.video.submit(result.frames, result.outcome)

    def _release(self) -> list[EpisodeRecord]:
        """Records whose videos are done; a video that failed (disk full, encoder error) leaves the outcome as it
        is, with ``video`` None and the reason in ``video_error``."""
        ready = []
        for record, future in self._pending:
            err = future.exception() if future is not None else None
            if err is not None:
                reason = f"{type(err).__name__}: {err}"
                warnings.warn(f"video of {record.task} seed {record.seed} failed: {reason}", stacklevel=2)
                record = dataclasses.replace(record, video=None, video_error=reason)
            ready.append(record)
        self._pending = []
        return ready

    def flush(self) -> list[EpisodeRecord]:
        """Wait for pending videos; return the records not yet returned."""
        return self._release()

    def close(self) -> None:
        """Wait for videos and close every env."""
        if self.video is not None:
            self.video.close()
        for env in self.envs.values():
            _close_quietly(env)
        self.envs.clear()
