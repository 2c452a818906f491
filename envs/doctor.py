"""`vla doctor`: check that this machine can simulate, render, train and review; say exactly what is missing.

Rendering needs a Vulkan driver that SAPIEN 3 accepts: an NVIDIA driver (GPU machines) or Mesa's lavapipe CPU
driver >= 24.3 (earlier lavapipe lacks the ray-tracing extensions ``VK_KHR_acceleration_structure`` /
``VK_KHR_ray_tracing_pipeline`` that SAPIEN's renderer (libsvulkan2) asks for; Debian bookworm ships 22.3, its
backports 25.0). Every probe that could crash (driver loading) runs in a subprocess.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata

MIN_MESA = (24, 3)
RT_EXTENSIONS = ("VK_KHR_acceleration_structure", "VK_KHR_ray_tracing_pipeline")
ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d")
DEBIAN_FIX = (
    "add the bookworm-backports suite (same mirror as your other Debian sources), then: "
    "apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1 "
    "(scripts/setup.sh does this when run as root)"
)


@dataclasses.dataclass
class Check:
    """One line of the report: ``status`` is ok | warn | fail; ``fix`` says what to do when not ok."""

    name: str
    status: str
    detail: str
    fix: str = ""


def _run(cmd: list[str], timeout: float = 60.0) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 1, str(err)
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def check_packages() -> list[Check]:
    """Python packages, including the numpy < 2 pin that keeps mplib 0.1.1 (from mani-skill) from segfaulting."""
    out = [
        Check(
            "python",
            "ok" if sys.version_info[:2] >= (3, 10) else "fail",
            platform.python_version(),
            "use Python >= 3.10",
        )
    ]
    for pkg in (
        "torch",
        "mani-skill",
        "sapien",
        "transformers",
        "peft",
        "accelerate",
        "h5py",
        "imageio-ffmpeg",
        "tyro",
    ):
        v = _version(pkg)
        out.append(
            Check(pkg, "ok" if v else "fail", v or "not installed", "run scripts/setup.sh (or pip install -e .)")
        )
    np_v = _version("numpy") or "0"
    major = int(np_v.split(".")[0])
    out.append(
        Check(
            "numpy",
            "ok" if major < 2 else "fail",
            np_v,
            "mani-skill 3.0.1 pins mplib 0.1.1, which segfaults with numpy 2: pip install 'numpy<2'",
        )
    )
    for bad in ("timm", "torchvision"):
        if _version(bad):
            out.append(
                Check(
                    bad,
                    "warn",
                    f"{_version(bad)} installed",
                    f"not used here; a CUDA {bad} wheel next to CPU torch breaks `import transformers`: "
                    f"pip uninstall {bad}",
                )
            )
    return out


def mesa_version() -> tuple[tuple[int, int] | None, str]:
    """Mesa's Vulkan driver version from dpkg (Debian/Ubuntu) or vulkaninfo's driverInfo; (None, why) if unknown."""
    code, text = _run(["dpkg-query", "-W", "-f=${Version}", "mesa-vulkan-drivers"])
    if code == 0 and text.strip():
        m = re.match(r"(?:\d+:)?(\d+)\.(\d+)", text.strip())
        if m:
            return (int(m.group(1)), int(m.group(2))), f"mesa-vulkan-drivers {text.strip()} (dpkg)"
    if shutil.which("vulkaninfo"):
        code, text = _run(["vulkaninfo", "--summary"])
        m = re.search(r"driverInfo\s*=\s*Mesa (\d+)\.(\d+)", text)
        if m:
            return (int(m.group(1)), int(m.group(2))), f"Mesa {m.group(1)}.{m.group(2)} (vulkaninfo)"
    return None, "Mesa Vulkan driver not found"


def check_vulkan() -> list[Check]:
    """Vulkan loader, installed drivers (ICDs), Mesa version and the extensions SAPIEN needs."""
    out = []
    loader = [
        p
        for p in ("/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "/usr/lib64/libvulkan.so.1", "/usr/lib/libvulkan.so.1")
        if os.path.exists(p)
    ]
    out.append(
        Check(
            "vulkan loader",
            "ok" if loader else "warn",
            loader[0]
            if loader
            else "libvulkan.so.1 not found (SAPIEN ships its own loader, but drivers are found through the system's)",
            "apt-get install libvulkan1",
        )
    )
    icds = sorted(p for d in ICD_DIRS for p in glob.glob(os.path.join(d, "*.json")))
    icds += [p for p in os.environ.get("VK_ICD_FILENAMES", os.environ.get("VK_DRIVER_FILES", "")).split(":") if p]
    names = [os.path.basename(p) for p in icds]
    has_nvidia = any("nvidia" in n for n in names)
    has_lvp = any("lvp" in n for n in names)
    out.append(
        Check(
            "vulkan drivers",
            "ok" if icds else "fail",
            ", ".join(names) or "no ICD json found",
            "install an NVIDIA driver with Vulkan, or Mesa lavapipe: " + DEBIAN_FIX,
        )
    )
    version, detail = mesa_version()
    if has_lvp or version:
        ok = version is not None and version >= MIN_MESA
        status = "ok" if ok else ("warn" if has_nvidia else "fail")
        out.append(
            Check("mesa lavapipe", status, detail + f" (need >= {MIN_MESA[0]}.{MIN_MESA[1]} on CPU)", DEBIAN_FIX)
        )
    elif not has_nvidia:
        out.append(Check("mesa lavapipe", "fail", detail, DEBIAN_FIX))
    if shutil.which("vulkaninfo"):
        _, text = _run(["vulkaninfo"])
        missing = [e for e in RT_EXTENSIONS if e not in text]
        out.append(
            Check(
                "vulkan extensions",
                "ok" if not missing else "fail",
                "present: " + ", ".join(e for e in RT_EXTENSIONS if e not in missing)
                if not missing
                else f"missing {missing}",
                f"a driver exposing {', '.join(RT_EXTENSIONS)} (Mesa >= 24.3 lavapipe or NVIDIA)",
            )
        )
    return out


_SAPIEN_PROBE = "import sapien, json; print('SUMMARY' + json.dumps(sapien.render.get_device_summary()))"

_RENDER_PROBE = """
import json, numpy as np
from envs.wrapper import make_env
env = make_env("TwoRobotPickCube-v1", cameras=("head",), image_size=64)
obs, _ = env.reset(seed=0)
img = obs["images"]["head"][0]
print("RENDER" + json.dumps({"std": float(img.std()), "device": str(env.unwrapped._render_device),
      "sim": str(env.unwrapped.device)}))
"""


def check_sapien(render_check: bool) -> list[Check]:
    """SAPIEN's own view of the render devices, and (optionally) one real rendered frame of a task."""
    out = []
    code, text = _run([sys.executable, "-c", _SAPIEN_PROBE])
    line = next((ln for ln in text.splitlines() if ln.startswith("SUMMARY")), None)
    if code != 0 or line is None:
        out.append(
            Check(
                "sapien devices", "fail", text.strip().splitlines()[-1] if text.strip() else f"exit {code}", DEBIAN_FIX
            )
        )
        return out
    summary = json.loads(line[len("SUMMARY") :])
    rt = "rayTrace:  1" in summary or "rayTrace: 1" in summary
    gpus = re.findall(r"GPU: (.+)", summary)
    out.append(
        Check(
            "sapien devices",
            "ok" if gpus and rt else "fail",
            "; ".join(gpus) + (" (ray tracing supported)" if rt else " (no ray-tracing support)"),
            DEBIAN_FIX,
        )
    )
    if render_check:
        code, text = _run([sys.executable, "-c", _RENDER_PROBE], timeout=300)
        line = next((ln for ln in text.splitlines() if ln.startswith("RENDER")), None)
        if code != 0 or line is None:
            tail = text.strip().splitlines()[-1] if text.strip() else f"exit {code}"
            out.append(Check("render a frame", "fail", tail, "see the Vulkan checks above"))
        else:
            info = json.loads(line[len("RENDER") :])
            ok = info["std"] > 1.0
            out.append(
                Check(
                    "render a frame",
                    "ok" if ok else "fail",
                    f"TwoRobotPickCube-v1 head camera, pixel std {info['std']:.1f}, render device {info['device']}",
                    "frames are constant: the renderer produced no image",
                )
            )
    return out


def check_visuals() -> list[Check]:
    """The committed low-poly arm meshes (``visual_quality fast``): intact and built from this ManiSkill's meshes."""
    try:
        from envs.visuals import lowpoly_manifest, stale_sources

        counts = lowpoly_manifest()["faces_per_arm"]
        stale = stale_sources()
    except (ImportError, OSError, ValueError) as err:
        return [
            Check(
                "low-poly visuals",
                "fail",
                f"{type(err).__name__}: {err}",
                "restore envs/assets/panda_lowpoly (git checkout) or use --visual-quality full",
            )
        ]
    if stale:
        return [
            Check(
                "low-poly visuals",
                "warn",
                f"built from other stock meshes than this ManiSkill's: {stale}",
                "rebuild: python -m envs.lowpoly_build (needs fast-simplification)",
            )
        ]
    return [
        Check(
            "low-poly visuals",
            "ok",
            f"{counts['lowpoly']} faces per arm (stock {counts['stock']}); visual_quality fast is the default",
        )
    ]


def check_devices() -> list[Check]:
    """CUDA for the VLA and ManiSkill's GPU simulator; ffmpeg for videos; Chromium for the gallery test."""
    out = []
    try:
        import torch

        if torch.cuda.is_available():
            out.append(Check("cuda", "ok", f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"))
        else:
            out.append(Check("cuda", "ok", f"none (torch {torch.__version__}); CPU training and CPU simulation only"))
    except ImportError:
        out.append(Check("cuda", "fail", "torch not importable", "run scripts/setup.sh"))
    try:
        from envs.machine import bf16_probe, cpu_info

        cpu = cpu_info()
        out.append(
            Check("cpu", "ok", f"{cpu['model']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags']) or 'none'}")
        )
        probe = bf16_probe()
        use = "bf16" if probe.fast else "float32"
        out.append(
            Check(
                "bf16 probe",
                "ok",
                f"{probe.summary()}{' (cached)' if probe.cached else ''}; "
                f"--mixed-precision auto and dtype=auto use {use} on this CPU",
            )
        )
    except ImportError:
        pass
    try:
        import imageio_ffmpeg

        out.append(Check("ffmpeg", "ok", imageio_ffmpeg.get_ffmpeg_exe()))
    except (ImportError, RuntimeError) as err:
        out.append(Check("ffmpeg", "fail", str(err), "pip install imageio-ffmpeg"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    out.append(
        Check(
            "chromium",
            "ok" if chromium else "warn",
            chromium or "not found (only the gallery browser test needs it)",
            "apt-get install chromium",
        )
    )
    return out


def run_doctor(cfg) -> int:
    """Print every check; return 1 if any failed, else 0."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    checks = check_packages() + check_vulkan() + check_sapien(cfg.render_check) + check_visuals() + check_devices()
    table = Table(title="vla doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for c in checks:
        table.add_row(
            c.name, f"[{style[c.status]}]{c.status}[/]", escape(c.detail), "" if c.status == "ok" else escape(c.fix)
        )
    Console().print(table)
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}")
        return 1
    print("\nall checks passed")
    return 0
