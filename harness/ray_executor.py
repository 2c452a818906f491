"""Work items on a Ray cluster (``vla bench --executor ray``): one Ray actor per simulator, this process the only
writer.

Each actor (``num_cpus=1``: Ray gives actors 0 CPUs by default, which would pack every simulator onto one core;
``num_gpus`` optional, for GPU policies or GPU simulation) holds one :class:`harness.runner.EpisodeRunner` and
runs one work item per call. Like a local worker, it encodes an item's videos while the next item runs, so a call
returns the records of earlier items whose videos are done, with the mp4s' bytes (encoded in the actor's own
temporary folder: nodes need no shared filesystem for results); once nothing is left to hand out, the driver
asks each actor to ``flush`` the rest. The driver keeps at most ``MAX_IN_FLIGHT`` calls queued per actor
(backpressure: it waits on results with ``ray.wait`` and hands out the next item only then), writes each video
into OUT/videos and then its record through the same ``write`` callback as the local executors (one writer,
``RecordSink``'s duplicate rule, the same ``--resume``).

Failures: an actor that dies (killed, segfault, node lost) has the item it was running retried once on another
actor; a second death on the same item records its episodes as ``error`` with the reason. Items queued behind it
on that actor, and items it ran whose records had not come back yet, are requeued without a strike (calls to one
actor run in order, so the first unfinished one is the culprit). With ``--episode-timeout`` an actor whose
running item exceeds the limit is killed, the item recorded as ``timeout``, and the actor replaced. An actor
whose policy or env cannot be built (e.g. a missing checkpoint on that node) aborts the run with the actor's
traceback, as a worker process does. Episodes' outcomes depend only on (task, seed) and the settings
(``harness.runner``), so results equal ``--workers 1``'s.

Ray is an optional dependency (``pip install '.[ray]'``); this module imports it only when used.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.files import write_bytes_atomic
from harness.records import EpisodeRecord
from harness.rollout import RunSettings, failed_record
from harness.runner import EpisodeRunner, WorkItem
from harness.video import OUTCOMES, video_name

MAX_IN_FLIGHT = 1
"""Calls queued per actor. One, so that an actor's death is always charged to the item it was running: with two
queued, Ray may fail the first call too when the actor dies right after finishing it (its result lost with the
actor), which charged the innocent item and let the culprit run a third time (seen in the test suite). The
cost is one driver round trip (milliseconds) per episode of seconds; videos still encode while the next item
runs (``run`` returns the previous item's records)."""
MAX_ITEM_DEATHS = 2
"""Actor deaths an item may cause: the first is retried on a new actor, the second records the item as error."""
MAX_START_FAILURES = 3
"""Actors that may die before answering their first call before the run is aborted."""
POLL_S = 0.5
RAY_HINT = "--executor ray needs Ray: pip install '.[ray]' (or pip install ray==2.60.0)"


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How ``vla bench`` uses Ray.

    Attributes:
        actors: simulator actors (one env + policy each); 0 = one per CPU of the cluster.
        address: None starts a local Ray instance for this run; "auto" or "HOST:PORT" joins a running cluster.
        num_gpus: GPUs reserved per actor (fractions allowed: 0.25 packs four actors on a GPU).
    """

    actors: int = 2
    address: str | None = None
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.actors < 0:
            raise ValueError(f"ray actors must be >= 0 (0: one per cluster CPU), got {self.actors}")
        if self.num_gpus < 0:
            raise ValueError(f"ray num_gpus must be >= 0, got {self.num_gpus}")


def import_ray() -> Any:
    """The ``ray`` module. Raises ImportError with the install command when Ray is not installed."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(RAY_HINT) from err
    return ray


class SimActor:
    """The body of one Ray actor (wrapped with ``ray.remote`` by :func:`run_ray`). Never raises from ``__init__``:
    a failure to build the policy is reported by :meth:`ready` so that the driver can abort with its traceback."""

    def __init__(self, settings: RunSettings, wid: int):
        self.wid = wid
        self.tmp = Path(tempfile.mkdtemp(prefix=f"vla-ray-actor{wid}-"))
        self.error: str | None = None
        try:
            self.runner = EpisodeRunner(dataclasses.replace(settings, out=self.tmp), worker=wid)
        except BaseException:
            self.error = traceback.format_exc()

    def ready(self) -> tuple[int, str, int, str | None]:
        """(actor index, host name, PID, traceback of a failed start or None)."""
        return self.wid, socket.gethostname(), os.getpid(), self.error

    def run(self, task: str, seeds: tuple[int, ...]) -> tuple[list[EpisodeRecord], dict[str, bytes]] | str:
        """Run one item; return the records of EARLIER items whose videos are now encoded (the runner encodes an
        item's videos while the next item runs) with {video name: mp4 bytes}, or the traceback (str) when the env
        cannot be built."""
        if self.error is not None:
            return self.error
        try:
            self.runner.env_for(task)
        except BaseException:
            return traceback.format_exc()
        return self._ship(self.runner.run_item(task, seeds))

    def flush(self) -> tuple[list[EpisodeRecord], dict[str, bytes]]:
        """Wait for the videos still encoding; return the records not yet returned (and their videos)."""
        return self._ship(self.runner.flush() if self.error is None else [])

    def _ship(self, records: list[EpisodeRecord]) -> tuple[list[EpisodeRecord], dict[str, bytes]]:
        videos = {}
        for rec in records:
            if rec.video is not None:
                path = self.tmp / rec.video
                videos[rec.video] = path.read_bytes()
                path.unlink()
        return records, videos

    def close(self) -> None:
        """Close the envs and remove the temporary folder."""
        if self.error is None:
            self.runner.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclasses.dataclass
class _Actor:
    wid: int
    handle: Any
    queue: collections.deque = dataclasses.field(default_factory=collections.deque)  # (ref, item|None) in call order
    head_since: float | None = None  # when the first queued call could start running
    ready: bool = False  # answered ready(): policy built, calls may be queued
    undelivered: dict = dataclasses.field(default_factory=dict)  # (task, seed) -> item: ran, record not back yet


class _RayPool:
    def __init__(self, ray: Any, settings: RunSettings, items: Sequence[WorkItem], write: Callable, actors: int, gpus):
        self.ray, self.settings, self.items, self.write = ray, settings, list(items), write
        self.n_actors, self.num_gpus = actors, gpus
        self.remote_cls = ray.remote(SimActor)
        self.todo = collections.deque(range(len(self.items)))
        self.actors: dict[int, _Actor] = {}
        self.by_ref: dict[Any, int] = {}  # ObjectRef -> actor index
        self.deaths: dict[int, int] = {}  # item -> actor deaths while it ran
        self.start_failures = 0
        self.next_wid = 0
        self.video_dir = settings.out / "videos"

    # ------------------------------------------------------------------------------------------ actors
    def start_actor(self) -> None:
        wid, self.next_wid = self.next_wid, self.next_wid + 1
        opts = {"num_cpus": 1, "max_restarts": 0, "name": None}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        handle = self.remote_cls.options(**opts).remote(self.settings, wid)
        self.actors[wid] = _Actor(wid, handle)
        self.by_ref[handle.ready.remote()] = wid

    def top_up(self) -> None:
        while len(self.actors) < min(self.n_actors, len(self.todo) + self.busy()):
            self.start_actor()

    def busy(self) -> int:
        return sum(1 for a in self.actors.values() if a.queue or a.undelivered)

    def request_flushes(self) -> None:
        """Once nothing is left to hand out, ask idle actors for the records whose videos were still encoding
        (queue entry item None)."""
        if self.todo:
            return
        for actor in self.actors.values():
            if actor.ready and not actor.queue and actor.undelivered:
                ref = actor.handle.flush.remote()
                actor.queue.append((ref, None))
                actor.head_since = time.monotonic()
                self.by_ref[ref] = actor.wid

    def dispatch(self) -> None:
        for actor in sorted(self.actors.values(), key=lambda a: len(a.queue)):
            while actor.ready and self.todo and len(actor.queue) < MAX_IN_FLIGHT:
                item = self.todo.popleft()
                task, seeds = self.items[item]
                ref = actor.handle.run.remote(task, seeds)
                if not actor.queue:
                    actor.head_since = time.monotonic()
                actor.queue.append((ref, item))
                self.by_ref[ref] = actor.wid

    def retire(self, actor: _Actor, status: str, reason: str) -> None:
        """Forget a dead (or killed) actor: its running item is retried or recorded, the rest requeued."""
        self.actors.pop(actor.wid, None)
        for ref in [r for r, w in self.by_ref.items() if w == actor.wid]:
            del self.by_ref[ref]
        if not actor.ready:
            self.start_failures += 1
            if self.start_failures > MAX_START_FAILURES:
                raise RuntimeError(f"Ray actors died {self.start_failures} times before running an item: {reason}")
        queued = [item for _, item in actor.queue if item is not None]
        lost = sorted(set(actor.undelivered.values()) - set(queued))  # ran there, records lost: run again
        culprit = actor.queue[0][1] if actor.queue else None
        if culprit is not None:
            queued.remove(culprit)
            self.deaths[culprit] = self.deaths.get(culprit, 0) + (1 if status == "error" else MAX_ITEM_DEATHS)
            if self.deaths[culprit] >= MAX_ITEM_DEATHS:
                task, seeds = self.items[culprit]
                for seed in seeds:
                    self.write(failed_record(task, seed, status, reason, actor.wid))
            else:
                queued.insert(0, culprit)
        self.todo.extendleft(reversed(lost + queued))
        actor.queue.clear()

    # ------------------------------------------------------------------------------------------ results
    def receive(self, ref: Any) -> None:
        """Handle a ready ref: an actor's ready() answer, or its finished (or failed) calls in call order."""
        wid = self.by_ref.get(ref)
        actor = self.actors.get(wid)
        if actor is None:
            self.by_ref.pop(ref, None)
            return  # an answer from an actor already retired
        if not actor.ready:
            if all(ref != entry[0] for entry in actor.queue):
                self.by_ref.pop(ref)
                answer = self._get(actor, ref)  # ready(): (wid, host, pid, start error)
                if answer is not None and answer[3] is not None:
                    raise RuntimeError(f"Ray actor {wid} on {answer[1]} failed to start:\n{answer[3]}")
                actor.ready = answer is not None
            return
        self.drain(actor)

    def drain(self, actor: _Actor) -> None:
        """Take the actor's finished calls in call order (a death fails every later call too, and the first failed
        call is the item that was running; ``ray.wait`` may report them in any order)."""
        refs = [entry[0] for entry in actor.queue]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        ready = set(ready)
        while actor.queue and actor.queue[0][0] in ready:
            ref = actor.queue[0][0]
            answer = self._get(actor, ref)
            if answer is None:
                return  # the actor died running this call: retired
            if isinstance(answer, str):
                raise RuntimeError(f"Ray actor {actor.wid} failed before running an episode:\n{answer}")
            _, item = actor.queue.popleft()
            self.by_ref.pop(ref)
            actor.head_since = time.monotonic() if actor.queue else None
            if item is not None:
                task, seeds = self.items[item]
                actor.undelivered.update({(task, int(seed)): item for seed in seeds})
            records, videos = answer
            for rec in records:
                actor.undelivered.pop(rec.key, None)
                if rec.video is not None and rec.video in videos:
                    self.save_video(rec, videos[rec.video])
                self.write(rec)

    def _get(self, actor: _Actor, ref: Any) -> Any:
        """``ray.get(ref)``, or None after retiring the actor when it died."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            self.ray.kill(actor.handle, no_restart=True)
            reason = f"Ray actor {actor.wid} died during this episode: {type(err).__name__}: {err}"
            self.retire(actor, "error", reason[:2000])
            return None

    def save_video(self, rec: EpisodeRecord, data: bytes) -> None:
        for outcome in OUTCOMES:  # a retried episode must not leave two files
            (self.video_dir / video_name(rec.task, rec.seed, outcome)).unlink(missing_ok=True)
        write_bytes_atomic(self.settings.out / rec.video, data)

    def check_timeouts(self) -> None:
        limit = self.settings.episode_timeout
        if limit is None:
            return
        now = time.monotonic()
        for actor in list(self.actors.values()):
            running = actor.queue[0][1] if actor.queue else None  # None: a flush (videos), not an episode
            if running is not None and actor.head_since is not None and now - actor.head_since > limit:
                self.ray.kill(actor.handle, no_restart=True)
                self.retire(
                    actor,
                    "timeout",
                    f"episode exceeded --episode-timeout {limit} s; Ray actor {actor.wid} was killed and replaced",
                )

    def run(self) -> None:
        self.video_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.top_up()
            self.dispatch()
            while self.by_ref:
                ready, _ = self.ray.wait(list(self.by_ref), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    self.receive(ref)
                self.check_timeouts()
                self.top_up()
                self.dispatch()
                self.request_flushes()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        closing = [a.handle.close.remote() for a in self.actors.values()]
        if closing:
            self.ray.wait(closing, num_returns=len(closing), timeout=30)
        for actor in self.actors.values():
            self.ray.kill(actor.handle, no_restart=True)
        self.actors.clear()


def connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` ("auto" / "HOST:PORT") or start a local instance (None); True when this
    call started Ray (the caller then shuts it down). An already initialised Ray (tests) is reused."""
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(include_dashboard=False)
    else:
        ray.init(address=address)
    return True


def cluster_actors(ray: Any, opts: RayOptions) -> int:
    """The number of actors to start; raises ValueError when the cluster cannot hold them (CPUs, GPUs)."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    actors = opts.actors or cpus
    if actors > cpus:
        raise ValueError(f"--workers {actors} asks for {actors} Ray actors of 1 CPU each, but the cluster has {cpus}")
    if opts.num_gpus and actors * opts.num_gpus > gpus + 1e-9:
        raise ValueError(
            f"--ray-num-gpus {opts.num_gpus} x {actors} actors needs {actors * opts.num_gpus:g} GPUs, but the "
            f"cluster has {gpus:g}"
        )
    return actors


def run_ray(settings: RunSettings, items: Sequence[WorkItem], write: Callable[[EpisodeRecord], Any], opts: RayOptions):
    """Run ``items`` on Ray actors; ``write`` receives every record (in this process), after its video is in
    OUT/videos. Returns the number of actors used.

    Raises:
        ImportError: Ray is not installed.
        ValueError: the cluster has fewer CPUs/GPUs than the actors need.
        RuntimeError: an actor could not build its policy or env (with its traceback), or actors keep dying
            before they run anything.
    """
    ray = import_ray()
    started = connect(ray, opts.address)
    try:
        actors = cluster_actors(ray, opts)
        _RayPool(ray, settings, items, write, actors, opts.num_gpus).run()
        return actors
    finally:
        if started:
            ray.shutdown()
