"""Worker processes: each spawns fresh (``spawn`` start method), builds its own policy and envs, and runs the work
items the parent hands it one at a time.

The parent is the only writer of episodes.jsonl. It tracks, per worker, the item being run and the items whose
records have not arrived yet (their videos may still be encoding). When an item runs past
``settings.episode_timeout`` the parent kills that worker, records the item's episodes as ``timeout`` and
starts a new worker; when a worker dies on its own (segfault, OOM kill) the item it was running is recorded as
``error``. Either way, items whose records had not arrived are queued again (outcomes are deterministic, and
the record sink drops a key written twice). A worker that raises while building its policy or an env (e.g. a
PolicyMismatchError) aborts the run with its traceback; a worker that dies while building an env has that
item retried up to MAX_SETUP_DEATHS times before it is recorded as ``error``; workers that keep dying before
they are ready abort the run.

Worker -> parent messages: ("ready", wid) | ("begin", wid, item) | ("record", wid, record) |
("idle", wid, item) | ("fatal", wid, traceback) | ("stopped", wid).
Parent -> worker: ("run", item, task, seeds) | ("stop",).
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from harness.rollout import RunSettings, failed_record
from harness.runner import EpisodeRunner, WorkItem

POLL_S = 0.05
MAX_SETUP_DEATHS = 3
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """CPU threads each of ``workers`` processes may use so that together they do not oversubscribe the cores
    (``cpus``: default, the cores this process may run on). Without this every worker's torch takes all cores:
    on a 2-core machine two workers ran slower than one (measured: ~200 vs ~135 ms per rendered step)."""
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return max(1, cpus // max(1, workers))


def limit_threads(threads: int) -> None:
    """Cap this process's math-library threads (call before torch is imported; sets torch's count if it already
    is). Variables the user set explicitly are kept."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _worker_main(wid: int, settings: RunSettings, inbox: Any, outbox: Any, threads: int = 0) -> None:
    parent = os.getppid()
    if threads > 0:
        limit_threads(threads)
    try:
        runner = EpisodeRunner(settings, worker=wid)
    except BaseException:
        outbox.put(("fatal", wid, traceback.format_exc()))
        return
    outbox.put(("ready", wid))
    while True:
        try:
            msg = inbox.get(timeout=1.0)
        except queue_mod.Empty:
            if os.getppid() != parent:  # the parent was killed: do not linger as an orphan
                return
            continue
        except (EOFError, OSError):  # the parent's end of the queue is gone
            return
        if msg[0] == "stop":
            break
        _, item, task, seeds = msg
        try:
            runner.env_for(task)
        except BaseException:
            outbox.put(("fatal", wid, traceback.format_exc()))
            return
        outbox.put(("begin", wid, item))
        for record in runner.run_item(task, seeds):
            outbox.put(("record", wid, record))
        outbox.put(("idle", wid, item))
    for record in runner.flush():
        outbox.put(("record", wid, record))
    runner.close()
    outbox.put(("stopped", wid))


@dataclasses.dataclass
class _Worker:
    wid: int
    proc: Any
    inbox: Any
    dispatched: int | None = None
    running: int | None = None
    deadline: float | None = None
    stopping: bool = False
    ready: bool = False
    unrecorded: dict = dataclasses.field(default_factory=dict)  # (task, seed) -> item index


class _Pool:
    def __init__(self, settings: RunSettings, items: Sequence[WorkItem], write: Callable[[dict], Any], workers: int):
        self.settings, self.items, self.write, self.max_workers = settings, list(items), write, workers
        self.ctx = mp.get_context("spawn")
        self.outbox = self.ctx.Queue()
        self.todo = collections.deque(range(len(self.items)))
        self.workers: dict[int, _Worker] = {}
        self.setup_deaths = 0
        self.strikes: dict[int, int] = {}  # item -> worker deaths while it was dispatched

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, wid: int) -> None:
        inbox = self.ctx.Queue()
        threads = threads_per_worker(self.max_workers)
        proc = self.ctx.Process(
            target=_worker_main,
            args=(wid, self.settings, inbox, self.outbox, threads),
            daemon=True,
            name=f"vla-bench-worker-{wid}",
        )
        proc.start()
        self.workers[wid] = _Worker(wid, proc, inbox)

    def top_up(self) -> None:
        active = [w for w in self.workers.values() if not w.stopping]
        want = min(self.max_workers, len(self.todo) + len(active))
        for wid in range(self.max_workers):
            if len([w for w in self.workers.values() if not w.stopping]) >= want:
                break
            if wid not in self.workers:
                self.start(wid)

    def dispatch(self, w: _Worker) -> None:
        if not self.todo:
            w.inbox.put(("stop",))
            w.stopping = True
            return
        item = self.todo.popleft()
        task, seeds = self.items[item]
        w.unrecorded.update({(task, s): item for s in seeds})
        w.dispatched = item
        w.inbox.put(("run", item, task, seeds))

    def lose(self, w: _Worker, status: str, text: str) -> None:
        """Forget worker ``w`` (already dead or killed): its running item gets ``status`` records, an item it died
        preparing (env construction) is retried up to MAX_SETUP_DEATHS times, other unrecorded items are requeued."""
        w.proc.join(timeout=5)
        del self.workers[w.wid]
        if not w.ready:
            self.setup_deaths += 1
            if self.setup_deaths > MAX_SETUP_DEATHS:
                raise RuntimeError(
                    f"bench worker processes died {self.setup_deaths} times while starting (last exit "
                    f"code {w.proc.exitcode}); see the log above"
                )
        pending = set(w.unrecorded.values())
        culprit = w.running if w.running is not None else w.dispatched
        if culprit is not None:
            self.strikes[culprit] = self.strikes.get(culprit, 0) + 1
            if w.running is not None or self.strikes[culprit] > MAX_SETUP_DEATHS:
                for (task, seed), item in list(w.unrecorded.items()):
                    if item == culprit:
                        self.write(failed_record(task, seed, status, text, w.wid))
                pending.discard(culprit)
        self.todo.extendleft(sorted(pending, reverse=True))

    def shutdown(self) -> None:
        for w in list(self.workers.values()):
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join(timeout=5)
        self.workers.clear()

    # ------------------------------------------------------------------------------------------ messages
    def handle(self, msg: tuple) -> None:
        kind, wid = msg[0], msg[1]
        w = self.workers.get(wid)
        if kind == "fatal":
            raise RuntimeError(f"bench worker {wid} failed before running an episode:\n{msg[2]}")
        if w is None:  # a late message from a worker already replaced
            if kind == "record":
                self.write(msg[2])
            return
        if kind == "ready":
            w.ready = True
            self.dispatch(w)
        elif kind == "begin":
            w.running = msg[2]
            w.deadline = (
                None if self.settings.episode_timeout is None else time.monotonic() + self.settings.episode_timeout
            )
        elif kind == "record":
            rec = msg[2]
            w.unrecorded.pop(rec.key, None)
            self.write(rec)
        elif kind == "idle":
            w.running = w.dispatched = w.deadline = None
            self.dispatch(w)
        elif kind == "stopped":
            w.proc.join(timeout=10)
            del self.workers[wid]
            self.todo.extendleft(sorted(set(w.unrecorded.values()), reverse=True))  # none in normal operation

    def drain(self) -> None:
        while True:
            try:
                self.handle(self.outbox.get_nowait())
            except queue_mod.Empty:
                return

    def check(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.deadline is not None and now > w.deadline:
                w.proc.kill()
                self.lose(
                    w,
                    "timeout",
                    f"episode exceeded --episode-timeout {self.settings.episode_timeout} s; "
                    f"worker {w.wid} was killed and replaced",
                )
            elif not w.proc.is_alive():
                self.drain()  # messages it sent before dying
                if w.wid in self.workers:
                    self.lose(
                        w, "error", f"worker process {w.wid} died (exit code {w.proc.exitcode}) during this episode"
                    )

    def run(self) -> None:
        try:
            self.top_up()
            while self.workers:
                try:
                    self.handle(self.outbox.get(timeout=POLL_S))
                except queue_mod.Empty:
                    pass
                self.check()
                self.top_up()
        finally:
            self.shutdown()


def run_pool(settings: RunSettings, items: Sequence[WorkItem], write: Callable[[dict], Any], workers: int) -> None:
    """Run ``items`` in ``workers`` spawned processes; ``write`` receives every record (in this process)."""
    _Pool(settings, items, write, workers).run()
