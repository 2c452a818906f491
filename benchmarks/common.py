"""What every performance benchmark records with its numbers: the machine, the load, and an atomic JSON write."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from common.files import write_json_atomic


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def loadavg() -> list[float]:
    """1/5/15-minute load averages, rounded (above the core count means the numbers include contention)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """CPU model and SIMD flags (``envs.machine.cpu_info``: they decide bf16 and lavapipe speed), cores (and those
    this process may use), memory, OS, Python, torch/numpy versions, current load."""
    import numpy as np

    from envs.machine import cpu_info, isa_caps

    try:
        mem_kb = next(
            int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
        )
        mem_gib = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration):
        mem_gib = None
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_flags": cpu_info()["flags"],
        "isa_caps": isa_caps(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "mem_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "loadavg": loadavg(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def result_header(benchmark: str, module: str, argv: list[str] | None) -> dict[str, Any]:
    """The fields every result JSON starts with: what was measured, the exact command (``python -m MODULE ARGS``;
    ``argv`` None means ``sys.argv[1:]``), when (UTC, ISO 8601), the machine and the package versions."""
    from envs.recording import package_versions

    args = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": benchmark,
        "command": shlex.join(["python", "-m", module, *args]),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "packages": package_versions(),
    }


def write_result(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically (temp file + rename); creates the folder."""
    return write_json_atomic(path, payload)


def vla_command(*args: str) -> list[str]:
    """``vla ARGS`` as an argv list for ``subprocess`` (this interpreter, ``-m scripts.cli``)."""
    return [sys.executable, "-m", "scripts.cli", *args]


def record_demo_data(out: Path, episodes: int, task: str = "DualArmLiftBar-v1") -> Path:
    """Record ``episodes`` expert demos of ``task`` (head camera, 128 px: the demo recipe's data) into ``out``.

    Raises:
        subprocess.CalledProcessError: ``vla demos`` failed (its output is attached).
    """
    import subprocess

    args = ["demos", "--task", task, "--episodes", str(episodes), "--out", str(out), "--image-size", "128"]
    subprocess.run(vla_command(*args, "--cameras", "head", "--no-progress"), check=True, capture_output=True)
    return out
