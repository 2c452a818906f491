"""Dynamic batching of concurrent requests into one policy call, on one inference thread.

Requests from every connection go into one queue. The batcher takes the oldest request, then keeps taking queued
requests while their samples fit in ``max_batch_size`` -- waiting up to ``max_wait_ms`` after the first one for
more to arrive -- and runs them as one ``predict_action_chunk`` call whose (B, H, A) result is split back per
request. Requests are only merged when their images have the same cameras and sizes (always true once they are
resized to the policy's image size). While a call runs, new requests queue up and form the next batch, so with
``max_wait_ms = 0`` batching adds no latency and batches grow with the load.

Merging does not change what a sample means (the policy protocol is per-sample; the VLA masks padded prompt
tokens), but a sample computed in a batch of N is not bit-identical to the same sample computed alone: matmul
kernels (oneDNN/MKL on CPU, cuBLAS on GPU) differ between batch sizes, so results agree to float32 rounding --
measured up to 2.1e-5 on actions up to 34 in size with the tests' micro checkpoint (~1e-6 of the action scale),
exactly what the in-process policy gives for the same batch. ``max_batch_size = 1`` (``vla serve``'s default)
never merges, and replies are then bit-identical to in-process calls. If a merged call raises, each of its
requests is run again alone, so an error reaches only the request that caused it.

The policy runs on a single worker thread (policies are not thread-safe, and one model call at a time is what a
GPU or the CPU's cores do best); the event loop stays free for other connections and health checks meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from policies.base import Observation

log = logging.getLogger("policies.serving")


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """The part of a policy call that belongs to one request.

    Attributes:
        actions: (B, H, A) float32, B = the request's samples.
        infer_ms: wall time of the policy call that computed it (ms; shared by the merged requests).
        queue_ms: time from the request being queued to its policy call starting (ms).
        batch_size: samples in that policy call (>= B).
    """

    actions: np.ndarray
    infer_ms: float
    queue_ms: float
    batch_size: int


@dataclasses.dataclass
class _Request:
    obs: Observation
    future: asyncio.Future
    queued_at: float

    @property
    def rows(self) -> int:
        return self.obs.batch_size

    @property
    def signature(self) -> tuple:
        return tuple((cam, np.shape(img)[1:]) for cam, img in sorted(self.obs.images.items()))


def merge_observations(observations: Sequence[Observation]) -> Observation:
    """Concatenate observations with the same cameras and image sizes along the batch axis."""
    first = observations[0]
    return Observation(
        images={cam: np.concatenate([np.asarray(o.images[cam]) for o in observations]) for cam in first.images},
        proprio=np.concatenate([np.asarray(o.proprio) for o in observations]),
        instruction=[s for o in observations for s in o.instruction],
    )


class DynamicBatcher:
    """Queue + single inference thread in front of ``predict`` ((B, ...) Observation -> (B, H, A) array).

    Create, then ``await start()`` on the event loop that will call :meth:`submit`; ``await stop()`` at the end.

    Args:
        predict: the policy's ``predict_action_chunk``.
        max_batch_size: most samples per call (1: every request alone, no merging).
        max_wait_ms: how long to wait for more requests after the first one of a batch.
    """

    def __init__(
        self, predict: Callable[[Observation], np.ndarray], max_batch_size: int = 8, max_wait_ms: float = 0.0
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._predict = predict
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self._pending: collections.deque[_Request] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.calls = 0
        """Policy calls made so far (a merged batch counts once)."""

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla-serve-infer")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="vla-serve-batcher")

    async def stop(self) -> None:
        """Stop the loop; requests still queued fail with RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for req in self._pending:
            if not req.future.done():
                req.future.set_exception(RuntimeError("server is shutting down"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, obs: Observation) -> BatchResult:
        """Queue ``obs`` and wait for its share of a policy call.

        Raises:
            whatever the policy raised for this request (after it was retried alone), or RuntimeError when the
            policy returned an array of the wrong shape or the server is stopping.
        """
        if self._wake is None:
            raise RuntimeError("DynamicBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(obs, future, time.perf_counter()))
        self._wake.set()
        return await future

    async def _next_batch(self) -> list[_Request]:
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        first = self._pending.popleft()
        batch, rows = [first], first.rows
        deadline = time.perf_counter() + self.max_wait_s
        while rows < self.max_batch_size:
            if not self._pending:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            nxt = self._pending[0]
            if rows + nxt.rows > self.max_batch_size or nxt.signature != first.signature:
                break  # it starts the next batch (requests are served in arrival order)
            batch.append(self._pending.popleft())
            rows += nxt.rows
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            batch = [r for r in batch if not r.future.done()]  # a client that left gets nothing computed
            if not batch:
                continue
            try:
                await self._run(batch)
            except Exception as err:  # noqa: BLE001 -- a batcher bug must fail these requests, not stall the loop
                log.exception("batching %d request(s) failed", len(batch))
                for req in batch:
                    _settle(req, err)

    async def _call(self, obs: Observation) -> tuple[np.ndarray, float]:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        actions = await loop.run_in_executor(self._executor, self._predict, obs)
        self.calls += 1
        actions = np.asarray(actions)
        if actions.ndim != 3 or actions.shape[0] != obs.batch_size:
            raise RuntimeError(f"policy returned actions of shape {actions.shape}, expected (B={obs.batch_size}, H, A)")
        return actions.astype(np.float32, copy=False), (time.perf_counter() - t0) * 1000.0

    async def _run(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        obs = batch[0].obs if len(batch) == 1 else merge_observations([r.obs for r in batch])
        try:
            actions, infer_ms = await self._call(obs)
        except Exception as err:  # noqa: BLE001 -- handed to the waiting request(s), never swallowed
            if len(batch) == 1:
                _settle(batch[0], err)
                return
            log.warning("a merged call of %d requests raised %s: running each alone", len(batch), type(err).__name__)
            for req in batch:
                await self._run([req])
            return
        start = 0
        for req in batch:
            part = actions[start : start + req.rows]
            start += req.rows
            _settle(req, BatchResult(part, infer_ms, (started - req.queued_at) * 1000.0, obs.batch_size))


def _settle(req: _Request, outcome: BatchResult | BaseException) -> None:
    if req.future.done():  # the client went away meanwhile
        return
    if isinstance(outcome, BaseException):
        req.future.set_exception(outcome)
    else:
        req.future.set_result(outcome)
