"""What this machine is and what it is fast at: the CPU's model and SIMD flags, and a measured bf16 probe.

PyTorch's CPU bfloat16 is fast only where the CPU has native bf16 matrix instructions (AVX512-BF16, AMX on Intel
Xeon 4th gen and later); elsewhere (an AMD EPYC with AVX2 only) a 512 x 512 bf16 matmul took 352 ms against 4.7 ms
in float32, 75x slower. So nothing here assumes: :func:`bf16_probe` times both dtypes on this machine, once, and
caches the result per (CPU model, flags, torch version, threads) in ``$VLA_CACHE_DIR/bf16_probe.json``;
:func:`resolve_precision` turns ``auto`` into bf16 only where the probe (or CUDA) says bf16 is faster.

Used by ``vla train --mixed-precision auto``, the checkpoint policy's ``dtype=auto`` and ``vla doctor``. Light at
import (torch is imported inside the functions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from common.files import write_json_atomic

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
"""The /proc/cpuinfo flags that decide CPU float32/bf16 speed (recorded with every benchmark)."""
PROBE_SIZE = 512
"""Side of the square matmul the probe times (the size of the issue's 75x measurement)."""
PROBE_BUDGET_S = 0.5
"""Wall-clock seconds the probe may spend per dtype (it stops early once the answer is clear)."""
BF16_MARGIN = 0.9
"""bf16 counts as fast when its matmul takes at most this fraction of float32's (autocast adds casts, so a tie is
not a win)."""
PROBE_FILE = "bf16_probe.json"
ISA_CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
"""oneDNN's instruction-set caps: ``ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512/AMX machine makes its bf16 matmul as
slow as on an AVX2-only CPU (how benchmarks.bench_precision measures the AVX2 kind there), so they are part of the
probe's cache key and of every benchmark's machine record."""


def isa_caps() -> dict[str, str]:
    """The oneDNN ISA caps set in the environment (``{}`` when none), see ISA_CAP_VARS."""
    return {name: os.environ[name] for name in ISA_CAP_VARS if os.environ.get(name)}


def cpu_info() -> dict[str, Any]:
    """``{"model": str, "flags": [SIMD flags present], "cores": int}`` from /proc/cpuinfo (platform elsewhere)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "flags": [f for f in SIMD_FLAGS if f in flags], "cores": os.cpu_count()}


@dataclasses.dataclass(frozen=True)
class Bf16Probe:
    """One measurement: median ms of a PROBE_SIZE^2 matmul in float32 and bf16 with ``threads`` torch threads.

    ``ratio`` = bf16_ms / fp32_ms (below 1: bf16 is faster); ``fast`` = ratio <= BF16_MARGIN.
    """

    fp32_ms: float
    bf16_ms: float
    threads: int
    cpu: str
    flags: tuple[str, ...]
    torch: str
    cached: bool = False

    @property
    def ratio(self) -> float:
        return self.bf16_ms / self.fp32_ms

    @property
    def fast(self) -> bool:
        return self.ratio <= BF16_MARGIN

    def summary(self) -> str:
        """One line: ``bf16 0.61 ms vs float32 1.02 ms (0.60x) -> bf16 fast`` (or slow)."""
        verdict = "bf16 fast" if self.fast else "bf16 slow: float32"
        return (
            f"bf16 {self.bf16_ms:.2f} ms vs float32 {self.fp32_ms:.2f} ms per {PROBE_SIZE}x{PROBE_SIZE} matmul "
            f"({self.ratio:.2f}x, {self.threads} threads) -> {verdict}"
        )


def _time_matmul(dtype, threads: int) -> float:
    import torch

    a = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
    torch.matmul(a, b)  # first call: kernel selection, allocations
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < 15 and (len(samples) < 3 or time.perf_counter() - start < PROBE_BUDGET_S):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() - start > 4 * PROBE_BUDGET_S:  # one call is seconds long: the answer is clear
            break
    return 1e3 * statistics.median(samples)


def _cache_path() -> Path:
    from envs.visuals import cache_dir

    return cache_dir() / PROBE_FILE


def _cache_key(cpu: dict, threads: int, torch_version: str) -> str:
    raw = json.dumps([cpu["model"], cpu["flags"], threads, torch_version, isa_caps()])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def bf16_probe(refresh: bool = False) -> Bf16Probe:
    """Measure (or read from the per-machine cache) float32 vs bf16 matmul time with torch's current thread count.

    Takes about a second when measured; ``refresh`` ignores the cache. A cache that cannot be read or written is
    skipped (the probe is measured again), never an error.
    """
    import torch

    cpu, threads = cpu_info(), torch.get_num_threads()
    key = _cache_key(cpu, threads, torch.__version__)
    path = _cache_path()
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict):
        return Bf16Probe(**{**cache[key], "flags": tuple(cache[key]["flags"]), "cached": True})
    probe = Bf16Probe(
        fp32_ms=round(_time_matmul(torch.float32, threads), 4),
        bf16_ms=round(_time_matmul(torch.bfloat16, threads), 4),
        threads=threads,
        cpu=cpu["model"],
        flags=tuple(cpu["flags"]),
        torch=torch.__version__,
    )
    cache[key] = {k: v for k, v in dataclasses.asdict(probe).items() if k != "cached"}
    try:
        write_json_atomic(path, cache)
    except OSError:  # a read-only cache is not an error: the probe is measured again next time
        pass
    return probe


def resolve_precision(requested: str, device: str) -> tuple[str, str]:
    """Decide the compute precision: returns (``"bf16"`` | ``"no"``, the reason in words).

    ``requested`` is ``auto``, ``bf16`` or ``no``; ``device`` is ``cpu`` or ``cuda``. ``auto`` picks bf16 on a CUDA
    device that supports it, and on a CPU where :func:`bf16_probe` measures bf16 faster than float32; otherwise
    float32 (``no``). An explicit ``bf16`` on a CPU where bf16 is slow is kept but warns with the measured ratio.

    Raises:
        ValueError: an unknown ``requested`` or ``device``.
    """
    import torch

    if requested not in ("auto", "bf16", "no"):
        raise ValueError(f"precision must be auto, bf16 or no, got {requested!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if requested == "no":
        return "no", "float32 requested"
    if device == "cuda":
        ok = torch.cuda.is_bf16_supported()
        if requested == "bf16" or ok:
            return "bf16", "CUDA device with bf16 support" if ok else "bf16 requested"
        return "no", "this CUDA device has no bf16 support"
    probe = bf16_probe()
    if requested == "bf16":
        if not probe.fast:
            warnings.warn(
                f"bf16 was asked for on a CPU where it is slow: {probe.summary()}; use auto (or no) for float32",
                stacklevel=2,
            )
        return "bf16", f"bf16 requested ({probe.summary()})"
    return ("bf16" if probe.fast else "no"), probe.summary()
