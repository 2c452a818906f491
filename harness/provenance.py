"""Provenance of a benchmark run: code version, packages, rendering device, checkpoint hash, command line.

Everything here is best effort and never fails a run: a missing tool is recorded as null with the reason.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from envs.machine import cpu_info, isa_caps

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "vla-harness",
    "torch",
    "numpy",
    "mani-skill",
    "sapien",
    "gymnasium",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "imageio",
    "imageio-ffmpeg",
    "opencv-python",
)
_VULKAN_KEYS = ("deviceName", "deviceType", "driverName", "driverInfo", "apiVersion")


def _run(cmd: list[str], timeout: float = 20.0) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_info() -> dict[str, Any]:
    """``{"git_sha": str | None, "git_dirty": bool | None}`` of the repository this package runs from
    (dirty = tracked files modified)."""
    sha = _run(["git", "rev-parse", "HEAD"])
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"git_sha": sha.strip() if sha else None, "git_dirty": None if status is None else bool(status.strip())}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def vulkan_info() -> dict[str, Any]:
    """The first Vulkan device as ``vulkaninfo --summary`` reports it (Mesa/lavapipe version in driverInfo)."""
    info: dict[str, Any] = {"icd_filenames": os.environ.get("VK_ICD_FILENAMES")}
    if shutil.which("vulkaninfo") is None:
        return {**info, "error": "vulkaninfo not found"}
    text = _run(["vulkaninfo", "--summary"])
    if text is None:
        return {**info, "error": "vulkaninfo --summary failed"}
    for key in _VULKAN_KEYS:
        m = re.search(rf"^\s*{key}\s*=\s*(.+)$", text, flags=re.MULTILINE)
        info[key] = m.group(1).strip() if m else None
    return info


def compute_device() -> str:
    """``cuda:<name>`` when torch sees a CUDA device, else ``cpu``."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def checkpoint_info(meta: Any) -> dict[str, Any] | None:
    """``{"path", "sha256"}`` of a policy with weights (its ``PolicyMetadata.checkpoint_path`` /
    ``weights_digest``); None for policies without weights."""
    if meta.checkpoint_path is None and meta.weights_digest is None:
        return None
    return {"path": meta.checkpoint_path, "sha256": meta.weights_digest}


def collect_provenance(meta: Any, sim_backend: str, render_backend: str, probe_vulkan: bool = True) -> dict[str, Any]:
    """The ``provenance`` block of results.json (keys: git_sha, git_dirty, packages, vulkan, render_backend,
    sim_backend, device, cpu, checkpoint, python, hostname, command).

    ``cpu`` is ``envs.machine.cpu_info()`` (model, SIMD flags, cores) plus ``isa_caps`` (oneDNN ISA caps set in
    the environment): the timings in results.json (policy latency, episodes/hour) depend on them (bf16 and
    lavapipe speed differ ~75x / ~2.5x between AVX-512 and AVX2-only CPUs)."""
    return {
        **git_info(),
        "packages": package_versions(),
        "vulkan": vulkan_info() if probe_vulkan else None,
        "render_backend": render_backend,
        "sim_backend": sim_backend,
        "device": compute_device(),
        "cpu": {**cpu_info(), "isa_caps": isa_caps()},
        "checkpoint": checkpoint_info(meta),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "command": shlex.join(sys.argv),
    }
