"""Policy server benchmark -> benchmarks/results/server.json: round-trip overhead of `vla serve` over in-process
inference, and throughput with dynamic batching on and off at 1, 2 and 4 concurrent clients.

    .venv/bin/python -m benchmarks.bench_server --checkpoint runs/demo/checkpoints/last

* In-process: ``CheckpointPolicy.predict_action_chunk`` on one observation (batch 1, the checkpoint's cameras at
  its image size, proprio), ``--requests`` timed calls after warm-up, in this process with ``--threads`` threads.
* Round trip: the same observation sent by one client to ``vla serve`` (a subprocess, ``--threads`` threads,
  batching off) over loopback: client wall time from send to decoded reply. ``overhead`` is round trip minus
  in-process (p50 and p95 of each); ``wire_ms`` pairs every round trip with the server's own ``infer_ms`` for that
  request (codec + WebSocket + queueing, without the model).
* Throughput: ``--clients`` threads of this process, each with its own connection, send ``--requests`` requests
  back to back (distinct observations per client) to a server with batching off (``--max-batch-size 1``) or on
  (``--batch-size``, each of ``--max-wait-ms``). Requests per second over the wall time of all clients, per-request latency
  p50/p95, and the mean number of samples per policy call reported by the server.

The client is a plain ``websockets`` sync connection with ``policies.serving.protocol`` (byte-identical to openpi's
msgpack_numpy, so it costs what ``openpi_client.WebsocketClientPolicy`` costs). On this project's 2-core CPU the
clients and the server share the cores, so the throughput numbers are for the whole machine.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import result_header, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "server.json"
ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class ServerBenchConfig:
    """Server benchmark settings."""

    checkpoint: Path
    """Checkpoint directory to serve (e.g. runs/demo/checkpoints/last from `make demo`)."""
    out: Path = RESULTS
    """Result JSON."""
    requests: int = 100
    """Timed requests per client (and timed in-process calls)."""
    warmup: int = 10
    """Untimed requests / calls first."""
    clients: tuple[int, ...] = (1, 2, 4)
    """Concurrent client counts for the throughput rows."""
    batch_size: int = 8
    """--max-batch-size of the batching-on server."""
    max_wait_ms: tuple[float, ...] = (0.0, 2.0)
    """--max-wait-ms values of the batching-on servers (0 is vla serve's default)."""
    threads: int = 2
    """Math threads of the in-process policy and of the server process."""

    def __post_init__(self) -> None:
        self.checkpoint = Path(self.checkpoint).resolve()  # the server subprocess runs in the repository root
        for name in ("requests", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.clients or min(self.clients) < 1:
            raise ValueError(f"clients must be counts >= 1, got {self.clients}")


def _stats(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    return {"p50": round(statistics.median(xs), 3), "p95": round(xs[min(len(xs) - 1, int(0.95 * len(xs)))], 3),
            "mean": round(statistics.fmean(xs), 3), "n": len(xs)}


def _observation(meta: Any, seed: int):
    from policies.base import Observation

    size = meta.image_size or 128
    rng = np.random.default_rng(seed)
    return Observation(images={c: rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8) for c in meta.cameras},
                       proprio=rng.normal(0.0, 0.2, (1, 14)).astype(np.float32), instruction=["lift the bar"])


def in_process_ms(cfg: ServerBenchConfig) -> tuple[dict, Any]:
    """(stats of in-process chunk latency in ms, the policy's metadata)."""
    import torch

    from policies.base import make_policy

    torch.set_num_threads(cfg.threads)
    policy = make_policy(f"checkpoint:{cfg.checkpoint}")
    obs = _observation(policy.metadata, 0)
    for _ in range(cfg.warmup):
        policy.predict_action_chunk(obs)
    times = []
    for _ in range(cfg.requests):
        t0 = time.perf_counter()
        policy.predict_action_chunk(obs)
        times.append((time.perf_counter() - t0) * 1000.0)
    return _stats(times), policy.metadata


class _Server:
    """``vla serve --policy checkpoint:... --port 0 ARGS`` as a subprocess with ``threads`` math threads."""

    def __init__(self, checkpoint: Path, threads: int, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "scripts.cli", "serve", "--policy", f"checkpoint:{checkpoint}", "--port", "0",
               "--log-level", "WARNING", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for line in self.proc.stdout:
            if " on ws://" in line:
                self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
                return
        raise RuntimeError(f"vla serve did not start (exit {self.proc.wait()})")

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _request(obs: Any) -> dict:
    return {"images": {c: np.asarray(v[0]) for c, v in obs.images.items()}, "proprio": np.asarray(obs.proprio[0]),
            "instruction": obs.instruction[0]}


def _client_run(url: str, frames: list[bytes], warmup: int, out: list) -> None:
    """Send ``frames`` back to back on one connection; append (total ms, server infer_ms, batch_size) per reply."""
    from websockets.sync.client import connect

    from policies.serving.protocol import unpackb

    with connect(url, compression=None, max_size=None) as ws:
        ws.recv()
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            ws.send(frame)
            reply = unpackb(ws.recv())
            if i >= warmup:
                timing = reply["server_timing"]
                out.append(((time.perf_counter() - t0) * 1000.0, timing["infer_ms"], timing["batch_size"]))


def run_clients(url: str, frames_per_client: list[list[bytes]], warmup: int) -> tuple[list, float]:
    """Run one client thread per frame list; returns (per-request tuples, wall seconds of the timed part)."""
    results: list[list] = [[] for _ in frames_per_client]
    if warmup:  # warm every connection's path once, untimed
        warm = [threading.Thread(target=_client_run, args=(url, f[:warmup], warmup, [])) for f in frames_per_client]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
    threads = [threading.Thread(target=_client_run, args=(url, f[warmup:], 0, r))
               for f, r in zip(frames_per_client, results)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for r in results for x in r], time.perf_counter() - t0


def throughput_row(cfg: ServerBenchConfig, url: str, meta: Any, clients: int, batching: str) -> dict:
    """One throughput measurement (``clients`` concurrent clients, ``cfg.requests`` requests each)."""
    from policies.serving.protocol import packb

    frames = [[packb(_request(_observation(meta, 1000 * c + k))) for k in range(cfg.warmup + cfg.requests)]
              for c in range(clients)]
    rows, wall = run_clients(url, frames, cfg.warmup)
    total = [r[0] for r in rows]
    return {"batching": batching, "clients": clients, "requests": len(rows), "wall_s": round(wall, 3),
            "requests_per_s": round(len(rows) / wall, 2), "latency_ms": _stats(total),
            "mean_batch_size": round(statistics.fmean(r[2] for r in rows), 2)}


def measure(cfg: ServerBenchConfig) -> dict:
    """Every number of server.json (see the module docstring)."""
    from policies.serving.protocol import packb

    local, meta = in_process_ms(cfg)
    print(f"in-process: p50 {local['p50']:.2f} ms, p95 {local['p95']:.2f} ms")
    frame = packb(_request(_observation(meta, 0)))
    rows = []
    with _Server(cfg.checkpoint, cfg.threads, "--max-batch-size", "1") as srv:
        trips, _ = run_clients(srv.url, [[frame] * (cfg.warmup + cfg.requests)], cfg.warmup)
        round_trip = _stats([t[0] for t in trips])
        wire = _stats([t[0] - t[1] for t in trips])
        print(f"round trip: p50 {round_trip['p50']:.2f} ms, p95 {round_trip['p95']:.2f} ms "
              f"(wire p50 {wire['p50']:.2f})")
        rows += [throughput_row(cfg, srv.url, meta, n, "off") for n in cfg.clients]
    for wait in cfg.max_wait_ms:
        with _Server(cfg.checkpoint, cfg.threads, "--max-batch-size", str(cfg.batch_size), "--max-wait-ms",
                     str(wait)) as srv:
            rows += [{**throughput_row(cfg, srv.url, meta, n, "on"), "max_wait_ms": wait} for n in cfg.clients]
    for r in rows:
        print(f"batching {r['batching']:3s} (wait {r.get('max_wait_ms', '-')}) {r['clients']} client(s): "
              f"{r['requests_per_s']:7.1f} req/s, "
              f"p50 {r['latency_ms']['p50']:.1f} ms, mean batch {r['mean_batch_size']}")
    return {
        "policy": {"name": meta.name, "cameras": list(meta.cameras), "image_size": meta.image_size,
                   "chunk_size": meta.chunk_size, "sha256": meta.extra.get("sha256"), "dtype": meta.extra.get("dtype")},
        "in_process_ms": local, "round_trip_ms": round_trip,
        "overhead_ms": {"p50": round(round_trip["p50"] - local["p50"], 3),
                        "p95": round(round_trip["p95"] - local["p95"], 3)},
        "wire_ms": wire,
        "throughput": rows,
        "batching_on": {"max_batch_size": cfg.batch_size, "max_wait_ms": list(cfg.max_wait_ms)},
    }


def main(argv: list[str] | None = None) -> int:
    import tyro

    cfg = tyro.cli(ServerBenchConfig, args=argv)
    payload = {**result_header("vla serve: round-trip overhead over in-process inference; throughput with dynamic "
                               "batching on/off at 1/2/4 clients", "benchmarks.bench_server", argv),
               "threads": cfg.threads, **measure(cfg)}
    write_result(cfg.out, payload)
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
