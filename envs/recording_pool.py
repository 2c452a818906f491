"""`vla demos --workers N`: expert attempts in N spawned processes, handed back in seed order.

Each worker process builds one env and one expert (``envs.recording.make_recording_env``) and runs whole attempts
(``envs.recording.attempt``): a successful episode is written by the worker to ``OUT/.pending/seed_{seed}.hdf5``,
so only a small dict crosses the process boundary. The parent keeps at most ``2 N`` seeds in flight and yields
results strictly in seed order; ``envs.recording.record_demos`` commits them one by one exactly as it does with one
worker, so the folder (episode numbering, manifest, attempts, failures) does not depend on N. Every episode
starts from ``env.reset(seed=s)``, so its content depends only on its seed.

Each worker gets ``cores // N`` math-library threads (more would oversubscribe the cores).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
from collections.abc import Iterator
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_STATE: dict[str, Any] = {}


def _init_worker(cfg, threads: int) -> None:
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    import torch

    torch.set_num_threads(threads)
    from envs.experts import make_expert
    from envs.recording import make_recording_env, package_versions

    _STATE.update(cfg=cfg, env=make_recording_env(cfg), expert=make_expert(cfg.task), versions=package_versions())


def _run(seed: int) -> dict[str, Any]:
    from envs.recording import attempt

    return attempt(_STATE["cfg"], _STATE["env"], _STATE["expert"], seed, _STATE["versions"])


def parallel_attempts(cfg, first_seed: int, budget: int) -> Iterator[dict[str, Any]]:
    """Attempts of seeds ``first_seed .. first_seed + budget - 1`` in ``cfg.workers`` processes, yielded in seed
    order (dicts as ``envs.recording.attempt`` returns). Closing the generator cancels queued seeds and waits for
    the ones running.

    Raises:
        RuntimeError: a worker process died (its exit breaks the pool); the message names the seed.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cpus // cfg.workers)
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn"),
                                                  initializer=_init_worker, initargs=(cfg, threads))
    futures: dict[int, concurrent.futures.Future] = {}
    next_submit, end = first_seed, first_seed + max(0, budget)
    try:
        for seed in range(first_seed, end):
            while next_submit < end and len(futures) < 2 * cfg.workers:
                futures[next_submit] = pool.submit(_run, next_submit)
                next_submit += 1
            try:
                yield futures.pop(seed).result()
            except concurrent.futures.process.BrokenProcessPool as err:
                raise RuntimeError(f"{cfg.task}: a recording worker process died while seed {seed} was running "
                                   f"({err}); rerun the same command to continue") from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
