"""Where work items run: in this process, or in worker processes (``harness.workers``).

    plan_items(seeds_by_task, num_envs, done) -> [(task, seeds), ...]
    run_items(settings, items, write, workers)   # write(record) for every finished episode, in this process

``workers == 1`` without an episode timeout runs everything here with one :class:`harness.runner.EpisodeRunner`;
otherwise ``harness.workers`` spawns that many processes, each with its own runner; with ``ray`` options
(``harness.ray_executor``) Ray actors run them, on this machine or a cluster. Either way this process is the only
one that passes records to ``write``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from harness.ray_executor import RayOptions, run_ray
from harness.records import EpisodeRecord
from harness.rollout import RunSettings
from harness.runner import EpisodeRunner, WorkItem
from harness.workers import run_pool


def plan_items(
    seeds_by_task: Mapping[str, Sequence[int]], num_envs: int = 1, done: Iterable[tuple[str, int]] = ()
) -> list[WorkItem]:
    """Split the episodes not in ``done`` into work items of at most ``num_envs`` seeds of one task."""
    done = set(done)
    items: list[WorkItem] = []
    for task, seeds in seeds_by_task.items():
        todo = [int(s) for s in seeds if (task, int(s)) not in done]
        items += [(task, tuple(todo[i : i + num_envs])) for i in range(0, len(todo), num_envs)]
    return items


def run_inprocess(
    settings: RunSettings, items: Sequence[WorkItem], write: Callable[[EpisodeRecord], Any], policy: Any = None
) -> None:
    """Run ``items`` here, one after another, passing each finished record to ``write``."""
    runner = EpisodeRunner(settings, worker=0, policy=policy)
    try:
        for task, seeds in items:
            runner.env_for(task)
            for record in runner.run_item(task, seeds):
                write(record)
        for record in runner.flush():
            write(record)
    finally:
        runner.close()


def run_items(
    settings: RunSettings,
    items: Sequence[WorkItem],
    write: Callable[[EpisodeRecord], Any],
    workers: int = 1,
    policy: Any = None,
    ray: RayOptions | None = None,
) -> int:
    """Run every item, in this process (``workers == 1`` and no episode timeout), in worker processes, or on Ray
    actors (``ray`` given; ``workers`` is then ignored for ``ray.actors``).

    ``policy`` (optional) is reused in-process; worker processes and actors always build their own. Returns the
    number of processes or actors that ran episodes side by side (0 when there was nothing to run).
    """
    if not items:
        return 0
    if ray is not None:
        return run_ray(settings, items, write, ray)
    if workers == 1 and settings.episode_timeout is None:
        run_inprocess(settings, items, write, policy=policy)
    else:
        run_pool(settings, items, write, workers)
    return workers
