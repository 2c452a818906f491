"""`vla demos --workers N`: attempts in N spawned processes, handed back in seed order.

:func:`ordered_map` runs ``fn(item)`` for consecutive items in ``workers`` spawned processes (each set up once by
``initializer(*initargs)``), keeps at most ``2 * workers`` items in flight and yields the results strictly in item
order. ``envs.recording`` passes its own worker functions (one env and one expert per process; a successful
attempt's episode file is written by the worker, so only a small dict crosses the process boundary) and commits
the results one by one exactly as it does with one worker, so the folder does not depend on N. Every episode
starts from ``env.reset(seed=s)`` on a freshly built PhysX scene, so its content depends only on its seed.

Knows nothing of recording itself (no import of ``envs.recording``).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_worker(workers: int) -> int:
    """Math-library threads for each of ``workers`` processes so that together they use the cores once."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, workers))


def limit_threads(threads: int) -> None:
    """Cap this process's math-library threads (call in a fresh process before torch is used)."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    import torch

    torch.set_num_threads(threads)


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """Daemon thread of a worker: exit when the parent process is gone (killed with SIGKILL, the pool's own
    shutdown never runs and an idle worker would otherwise block on its queue forever as an orphan)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(parent: int, initializer: Callable[..., None], initargs: tuple) -> None:
    _exit_with_parent(parent)
    initializer(*initargs)


def ordered_map(
    fn: Callable[[Any], Any], items: Sequence[Any], workers: int, initializer: Callable[..., None], initargs: tuple = ()
) -> Iterator[Any]:
    """``fn(item)`` for each item, run in ``workers`` spawned processes, yielded in item order. ``fn`` and
    ``initializer`` must be module-level (spawn pickles them by name). Closing the generator cancels queued items
    and waits for the running ones; a worker whose parent is killed exits within a second.

    Raises:
        RuntimeError: a worker process died (the message names the item); any exception ``fn`` raised.
    """
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    futures: dict[int, concurrent.futures.Future] = {}
    submitted = 0
    try:
        for index, item in enumerate(items):
            while submitted < len(items) and len(futures) < 2 * workers:
                futures[submitted] = pool.submit(fn, items[submitted])
                submitted += 1
            try:
                yield futures.pop(index).result()
            except concurrent.futures.process.BrokenProcessPool as err:
                raise RuntimeError(
                    f"a worker process died while {item!r} was running ({err}); rerun the same command to continue"
                ) from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
