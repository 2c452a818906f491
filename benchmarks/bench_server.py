"""Policy server benchmark -> benchmarks/results/server.json: round-trip overhead of `vla serve` over in-process
inference, and throughput with dynamic batching on and off at 1, 2 and 4 concurrent clients.

    .venv/bin/python -m benchmarks.bench_server --checkpoint runs/demo/checkpoints/last

* In-process vs round trip, paired: ``--requests`` iterations, each one ``CheckpointPolicy.predict_action_chunk``
  call in this process (batch 1, the checkpoint's cameras at its image size, proprio; ``--threads`` threads) and
  then the same observation sent by one client to ``vla serve`` (a subprocess with ``--threads`` threads, batching
  off) over loopback, timed from send to decoded reply. Alternating the two lets both see the same machine load
  (other jobs share these cores). ``overhead_ms`` is the per-iteration difference (round trip - in-process), p50 /
  p95; ``wire_ms`` is round trip minus the server's own ``infer_ms`` of that request (codec + WebSocket + queueing,
  no model), the overhead without the noise of comparing two separate model calls.
* Throughput: ``--clients`` threads of this process, each with its own connection, send ``--requests`` requests
  back to back (distinct observations per client) to a server with batching off (``--max-batch-size 1``) or on
  (``--batch-size``, each of ``--max-wait-ms``). All servers run at once (idle ones cost nothing) and the cells
  are interleaved over ``--rounds`` rounds; each row is the median round. Requests per second over the wall time
  of all clients, per-request latency p50/p95, and the mean number of samples per policy call (server-reported).

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

from benchmarks.common import loadavg, result_header, write_result

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
    """Timed requests per client in each throughput cell, and timed in-process / round-trip pairs."""
    warmup: int = 10
    """Untimed requests / calls first."""
    clients: tuple[int, ...] = (1, 2, 4)
    """Concurrent client counts for the throughput rows."""
    batch_size: int = 8
    """--max-batch-size of the batching-on server."""
    max_wait_ms: tuple[float, ...] = (0.0, 2.0)
    """--max-wait-ms values of the batching-on servers (0 is vla serve's default)."""
    rounds: int = 3
    """Throughput rounds; every round runs each (setting, clients) cell once, interleaved."""
    threads: int = 1
    """Math threads of the in-process policy and of the server process (1: steadier when other jobs share the
    cores, and it leaves a core to the clients)."""

    def __post_init__(self) -> None:
        self.checkpoint = Path(self.checkpoint).resolve()  # the server subprocess runs in the repository root
        for name in ("requests", "batch_size", "threads", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.clients or min(self.clients) < 1:
            raise ValueError(f"clients must be counts >= 1, got {self.clients}")


def _stats(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    return {
        "p50": round(statistics.median(xs), 3),
        "p95": round(xs[min(len(xs) - 1, int(0.95 * len(xs)))], 3),
        "mean": round(statistics.fmean(xs), 3),
        "n": len(xs),
    }


def _observation(meta: Any, seed: int):
    from policies.base import Observation

    size = meta.image_size or 128
    rng = np.random.default_rng(seed)
    return Observation(
        images={c: rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8) for c in meta.cameras},
        proprio=rng.normal(0.0, 0.2, (1, 14)).astype(np.float32),
        instruction=["lift the bar"],
    )


def paired_overhead(cfg: ServerBenchConfig, policy: Any, url: str) -> dict:
    """Alternate in-process calls and round trips of the same observation (see the module docstring)."""
    from websockets.sync.client import connect

    from policies.serving.protocol import packb, unpackb

    obs = _observation(policy.metadata, 0)
    frame = packb(_request(obs))
    local, trip, wire = [], [], []
    with connect(url, compression=None, max_size=None) as ws:
        ws.recv()
        for i in range(cfg.warmup + cfg.requests):
            t0 = time.perf_counter()
            policy.predict_action_chunk(obs)
            t1 = time.perf_counter()
            ws.send(frame)
            reply = unpackb(ws.recv())
            t2 = time.perf_counter()
            if i >= cfg.warmup:
                local.append((t1 - t0) * 1000.0)
                trip.append((t2 - t1) * 1000.0)
                wire.append(trip[-1] - reply["server_timing"]["infer_ms"])
    return {
        "in_process_ms": _stats(local),
        "round_trip_ms": _stats(trip),
        "overhead_ms": _stats([b - a for a, b in zip(local, trip)]),
        "wire_ms": _stats(wire),
    }


class _Server:
    """``vla serve --policy checkpoint:... --port 0 ARGS`` as a subprocess with ``threads`` math threads."""

    def __init__(self, checkpoint: Path, threads: int, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        cmd = [
            sys.executable,
            "-m",
            "scripts.cli",
            "serve",
            "--policy",
            f"checkpoint:{checkpoint}",
            "--port",
            "0",
            "--log-level",
            "WARNING",
            *args,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for line in self.proc.stdout:
            if " on ws://" in line:
                self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
                return
        raise RuntimeError(f"vla serve did not start (exit {self.proc.wait()})")

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _request(obs: Any) -> dict:
    return {
        "images": {c: np.asarray(v[0]) for c, v in obs.images.items()},
        "proprio": np.asarray(obs.proprio[0]),
        "instruction": obs.instruction[0],
    }


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
    threads = [
        threading.Thread(target=_client_run, args=(url, f[warmup:], 0, r)) for f, r in zip(frames_per_client, results)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for r in results for x in r], time.perf_counter() - t0


def throughput_row(cfg: ServerBenchConfig, url: str, meta: Any, clients: int, batching: str) -> dict:
    """One throughput measurement (``clients`` concurrent clients, ``cfg.requests`` requests each)."""
    from policies.serving.protocol import packb

    frames = [
        [packb(_request(_observation(meta, 1000 * c + k))) for k in range(cfg.warmup + cfg.requests)]
        for c in range(clients)
    ]
    rows, wall = run_clients(url, frames, cfg.warmup)
    total = [r[0] for r in rows]
    return {
        "batching": batching,
        "clients": clients,
        "requests": len(rows),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(rows) / wall, 2),
        "latency_ms": _stats(total),
        "mean_batch_size": round(statistics.fmean(r[2] for r in rows), 2),
    }


def _settings(cfg: ServerBenchConfig) -> list[tuple[str, float | None, tuple[str, ...]]]:
    """(batching, max_wait_ms, vla serve args) of every throughput server: off first, then on per wait."""
    on = [("on", w, ("--max-batch-size", str(cfg.batch_size), "--max-wait-ms", str(w))) for w in cfg.max_wait_ms]
    return [("off", None, ("--max-batch-size", "1")), *on]


def throughput_rows(cfg: ServerBenchConfig, servers: list, meta: Any) -> list[dict]:
    """Every (setting, clients) cell ``cfg.rounds`` times, interleaved so all settings see the same machine load;
    each row reports the median round (by requests/s) and every round's requests/s."""
    runs: dict[tuple[int, int], list[dict]] = {}
    for _ in range(cfg.rounds):
        for n in cfg.clients:
            for i, ((batching, wait, _), srv) in enumerate(zip(_settings(cfg), servers)):
                runs.setdefault((i, n), []).append(
                    {**throughput_row(cfg, srv.url, meta, n, batching), "max_wait_ms": wait}
                )
    rows = []
    for _key, found in sorted(runs.items()):
        found.sort(key=lambda r: r["requests_per_s"])
        rows.append({**found[len(found) // 2], "rounds_requests_per_s": [r["requests_per_s"] for r in found]})
    return rows


def measure(cfg: ServerBenchConfig) -> dict:
    """Every number of server.json (see the module docstring)."""
    import contextlib

    import torch

    from policies.base import make_policy

    torch.set_num_threads(cfg.threads)
    policy = make_policy(f"checkpoint:{cfg.checkpoint}")
    meta = policy.metadata
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(_Server(cfg.checkpoint, cfg.threads, *args)) for _, _, args in _settings(cfg)]
        paired = paired_overhead(cfg, policy, servers[0].url)  # the batching-off server
        print("  ".join(f"{k} p50 {v['p50']:.2f} p95 {v['p95']:.2f}" for k, v in paired.items()))
        rows = throughput_rows(cfg, servers, meta)
    for r in rows:
        print(
            f"batching {r['batching']:3s} (wait {r['max_wait_ms']}) {r['clients']} client(s): "
            f"{r['requests_per_s']:7.1f} req/s (rounds {r['rounds_requests_per_s']}), "
            f"p50 {r['latency_ms']['p50']:.1f} ms, mean batch {r['mean_batch_size']}"
        )
    return {
        "policy": {
            "name": meta.name,
            "cameras": list(meta.cameras),
            "image_size": meta.image_size,
            "chunk_size": meta.chunk_size,
            "sha256": meta.weights_digest,
            "dtype": meta.extra.get("dtype"),
        },
        **paired,
        "throughput": rows,
        "batching_on": {"max_batch_size": cfg.batch_size, "max_wait_ms": list(cfg.max_wait_ms)},
    }


def main(argv: list[str] | None = None) -> int:
    import tyro

    cfg = tyro.cli(ServerBenchConfig, args=argv)
    payload = {
        **result_header(
            "vla serve: round-trip overhead over in-process inference; throughput with dynamic "
            "batching on/off at 1/2/4 clients",
            "benchmarks.bench_server",
            argv,
        ),
        "threads": cfg.threads,
        **measure(cfg),
    }
    payload["loadavg_after"] = loadavg()
    write_result(cfg.out, payload)
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
