"""Helpers of the serving tests: a tiny trained checkpoint (chunk 8 x 14), `vla serve` as a subprocess on a free
loopback port, fixed observations, and a minimal foreign openpi-protocol server (no `vla serve` metadata) that
can drop a connection on purpose.

The checkpoint is trained once per test process (``tiny_checkpoint`` is cached) with the micro model of
``tests/train/trainer_fixtures.py``: head + left_wrist cameras at 32 px, proprio, chunk 8.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "train"))  # trainer_fixtures, synthetic_episodes

from trainer_fixtures import micro_config, write_dataset  # noqa: E402

from policies.base import Observation, PolicyMetadata  # noqa: E402

CHUNK = 8
CAMERAS = ("head", "left_wrist")
SIZE = 32


@functools.lru_cache(maxsize=1)
def tiny_checkpoint() -> Path:
    """A trained micro checkpoint directory (chunk 8, cameras head + left_wrist, 32 px); deleted at exit."""
    from train.trainer import train

    root = Path(tempfile.mkdtemp(prefix="vla-serving-ckpt-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    data = write_dataset(root / "data", episodes=3)
    result = train(micro_config(data, root / "run", steps=2, chunk_size=CHUNK))
    return Path(result.last_checkpoint).resolve()


class SumPolicy:
    """actions[b, h, d] = proprio[b, d] + 10 h + mean(head[b]) / 255 + len(instruction[b]): one sample's actions
    depend on that sample only, so merged and unbatched calls must agree exactly. ``fail_word`` in an
    instruction raises; ``delay_s`` slows each call (so concurrent requests queue up)."""

    def __init__(self, delay_s: float = 0.0, fail_word: str = "explode") -> None:
        self.metadata = PolicyMetadata(
            name="sum",
            cameras=("head", "left_wrist"),
            chunk_size=4,
            image_size=16,
            weights_digest="ab" * 32,
            trained_visual_quality=("fast",),
            extra={"norm_mode": "bounds_q99"},
        )
        self.delay_s, self.fail_word, self.batch_sizes = delay_s, fail_word, []

    def reset(self) -> None:
        pass

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        self.batch_sizes.append(obs.batch_size)
        if any(self.fail_word in s for s in obs.instruction):
            raise RuntimeError(f"instruction contains {self.fail_word!r}\nsecond line of detail")
        time.sleep(self.delay_s)
        base = np.asarray(obs.proprio, np.float64)
        base = base + np.asarray(obs.images["head"]).reshape(obs.batch_size, -1).mean(1, keepdims=True) / 255.0
        base = base + np.array([[len(s)] for s in obs.instruction])
        return (base[:, None, :] + 10.0 * np.arange(4)[None, :, None]).astype(np.float32)


MERGED_RTOL = 2e-6
"""Merged-batch tolerance, relative to the chunk's largest |action|. A sample computed in a batch of N differs from
the same sample computed alone by float32 rounding (CPU matmul kernels differ between batch 1 and batch N: measured
up to 2.1e-5 on actions up to 34 in size with the micro checkpoint, i.e. ~1e-6 of the action scale), whatever
serves it; a mixed-up reply differs by orders of magnitude more."""


def assert_merged_close(actual: np.ndarray, expected: np.ndarray, msg: str = "") -> None:
    """``actual`` (from a possibly merged batch) equals ``expected`` (a batch-1 call) to float32 rounding."""
    atol = MERGED_RTOL * float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0, err_msg=msg)


def sample_obs(n: int = 1, seed: int = 0, size: int = SIZE, cameras: tuple[str, ...] = CAMERAS) -> Observation:
    """A batched Observation of ``n`` random frames, proprio near the synthetic data's range and instructions of
    different lengths (so that merged batches pad their prompts)."""
    rng = np.random.default_rng(seed)
    phrases = ["pick up the cube", "lift", "raise the block up high now please"]
    return Observation(
        images={c: rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for c in cameras},
        proprio=rng.normal(5.0, 3.0, (n, 14)).astype(np.float32),
        instruction=[phrases[(seed + i) % len(phrases)] for i in range(n)],
    )


def native_request(obs: Observation, i: int = 0) -> dict:
    """Sample ``i`` of ``obs`` as an unbatched native wire map (HWC images)."""
    return {
        "images": {c: np.asarray(v[i]) for c, v in obs.images.items()},
        "proprio": np.asarray(obs.proprio[i]),
        "instruction": obs.instruction[i],
    }


def aloha_request(obs: Observation, i: int = 0) -> dict:
    """Sample ``i`` of ``obs`` under openpi's ALOHA keys with CHW images (as openpi's aloha example sends)."""
    from policies.serving.keys import ALOHA_CAMERAS

    return {
        "images": {ALOHA_CAMERAS[c]: np.ascontiguousarray(np.moveaxis(v[i], -1, 0)) for c, v in obs.images.items()},
        "state": np.asarray(obs.proprio[i]),
        "prompt": obs.instruction[i],
    }


def server_env(threads: int = 1) -> dict[str, str]:
    """Environment of a server subprocess: one math thread (the test machine has 2 shared cores)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
    return env


class VlaServe:
    """``vla serve --policy SPEC --port 0 ARGS...`` as a subprocess; ``url`` is read from its ready line."""

    def __init__(self, spec: str, *args: str, timeout: float = 180.0) -> None:
        cmd = [sys.executable, "-m", "scripts.cli", "serve", "--policy", spec, "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.url = self._wait_ready(timeout)
        self.port = int(self.url.rsplit(":", 1)[1])

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if " on ws://" in line:
                return line.split(" on ", 1)[1].split(" ", 1)[0]
        self.stop()
        raise RuntimeError("vla serve did not start:\n" + "".join(self.stderr_lines)[-3000:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        """Resident memory of the server process (MiB, from /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> VlaServe:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ForeignServer:
    """A minimal openpi-protocol server that is not `vla serve`: its metadata is ``metadata`` (default {}, like
    openpi's serve_policy.py without policy metadata), and every request gets ``reply(request, n)`` as actions
    (default (10, 14) zeros + request count). ``drop_on`` request numbers are answered by aborting the TCP
    connection instead (a crashed server or a network cut). Runs on a thread; ``requests`` holds what arrived."""

    def __init__(
        self,
        metadata: dict | None = None,
        reply: Callable[[dict, int], np.ndarray] | None = None,
        drop_on: tuple[int, ...] = (),
    ) -> None:
        self.metadata = metadata if metadata is not None else {}
        self.reply = reply or (lambda req, n: np.full((10, 14), float(n), np.float32))
        self.drop_on, self.requests, self.connections = set(drop_on), [], 0
        self._ready, self._stop = threading.Event(), None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        from policies.serving.protocol import packb, unpackb

        self.connections += 1
        await ws.send(packb(self.metadata))
        try:
            async for message in ws:
                request = unpackb(message)
                self.requests.append(request)
                n = len(self.requests)
                if n in self.drop_on:
                    ws.transport.abort()
                    return
                await ws.send(packb({"actions": self.reply(request, n)}))
        except ConnectionClosed:
            pass

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with serve(self._handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> ForeignServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("foreign server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
