"""Visual quality of the simulated arms: ``fast`` (low-poly visual meshes, the default) or ``full`` (stock meshes).

``fast`` swaps only what the renderer draws: the arm agent ``panda_wristcam_lowpoly`` (registered with ManiSkill's
``register_agent`` in ``envs.tasks.agents``) loads a URDF that is the stock ``panda_v3.urdf`` with every
``<visual>`` mesh replaced by its decimated copy from ``envs/assets/panda_lowpoly/`` (built by
``envs.lowpoly_build``). Every ``<collision>`` mesh path points at the stock file, and joints, inertials and the
SRDF (self-collision pairs) are the stock ones, so physics, kinematics, controllers and the scripted experts are
unchanged (``tests/envs/test_visuals.py`` checks that trajectories are bit-identical). The wrist cameras stay
mounted on the same ``camera_link``.

Light module (no ManiSkill import at module level). The generated URDF is written once per install into
``$VLA_CACHE_DIR`` (default ``~/.cache/vla-harness``) under a name that hashes its content.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

from common.files import write_bytes_atomic

VisualQuality = Literal["fast", "full"]
VISUAL_QUALITIES: tuple[str, ...] = ("fast", "full")
STOCK_ROBOT_UID = "panda_wristcam"
LOWPOLY_ROBOT_UID = "panda_wristcam_lowpoly"
STOCK_URDF = "panda_v3.urdf"
LOWPOLY_DIR = Path(__file__).parent / "assets" / "panda_lowpoly"
MANIFEST = LOWPOLY_DIR / "manifest.json"


def check_visual_quality(value: str) -> str:
    """Return ``value`` if it is a known visual quality.

    Raises:
        ValueError: anything but "fast" or "full".
    """
    if value not in VISUAL_QUALITIES:
        raise ValueError(f"visual_quality must be one of {list(VISUAL_QUALITIES)}, got {value!r}")
    return value


def robot_uid(stock_uid: str, quality: str) -> str:
    """The agent uid that renders ``stock_uid`` at ``quality`` (only panda_wristcam has a low-poly variant).

    Raises:
        ValueError: an unknown quality, or ``fast`` for a robot without a low-poly variant.
    """
    check_visual_quality(quality)
    if quality == "full":
        return stock_uid
    if stock_uid != STOCK_ROBOT_UID:
        raise ValueError(f"visual_quality 'fast' has no low-poly variant of robot {stock_uid!r}; use 'full'")
    return LOWPOLY_ROBOT_UID


def stock_panda_dir() -> Path:
    """ManiSkill's Panda asset folder (holds panda_v3.urdf and the meshes it names)."""
    from importlib.util import find_spec

    spec = find_spec("mani_skill")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("mani_skill is not installed")
    return Path(spec.origin).parent / "assets" / "robots" / "panda"


def _meshes(root: ET.Element, kind: str) -> list[ET.Element]:
    return [m for link in root.iter("link") for el in link.iter(kind) for m in el.iter("mesh")]


def stock_visual_meshes(unique: bool = True) -> list[str]:
    """Mesh filenames (relative to :func:`stock_panda_dir`) of the stock URDF's ``<visual>`` elements, sorted;
    ``unique=False`` lists a mesh once per use (the finger mesh is used twice)."""
    root = ET.parse(stock_panda_dir() / STOCK_URDF).getroot()
    names = [m.attrib["filename"] for m in _meshes(root, "visual")]
    return sorted(set(names) if unique else names)


@functools.lru_cache(maxsize=1)
def lowpoly_manifest() -> dict:
    """The committed ``manifest.json`` of the low-poly meshes, checked against the files next to it.

    Raises:
        FileNotFoundError: the manifest or a mesh it lists is missing.
        ValueError: a mesh's SHA-256 differs from the manifest (a partial checkout or a hand edit).
    """
    manifest = json.loads(MANIFEST.read_text())
    for rel, entry in manifest["files"].items():
        path = LOWPOLY_DIR / entry["file"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise ValueError(
                f"{path}: sha256 {digest[:12]}... but {MANIFEST} records {entry['sha256'][:12]}... for "
                f"{rel}; restore the file or rebuild with `python -m envs.lowpoly_build`"
            )
    return manifest


def lowpoly_urdf_text() -> str:
    """The stock URDF with visual meshes -> committed low-poly files and collision meshes -> stock files (absolute
    paths, so the URDF may live anywhere).

    Raises:
        ValueError: the stock URDF names a visual mesh the manifest has no low-poly copy of.
    """
    stock = stock_panda_dir()
    files = lowpoly_manifest()["files"]
    tree = ET.parse(stock / STOCK_URDF)
    for mesh in _meshes(tree.getroot(), "visual"):
        rel = mesh.attrib["filename"]
        if rel not in files:
            raise ValueError(
                f"{stock / STOCK_URDF}: visual mesh {rel!r} has no low-poly copy in {MANIFEST}; "
                "rebuild with `python -m envs.lowpoly_build`"
            )
        mesh.attrib["filename"] = str(LOWPOLY_DIR / files[rel]["file"])
    for mesh in _meshes(tree.getroot(), "collision"):
        mesh.attrib["filename"] = str(stock / mesh.attrib["filename"])
    return ET.tostring(tree.getroot(), encoding="unicode")


def cache_dir() -> Path:
    """``$VLA_CACHE_DIR`` or ``~/.cache/vla-harness`` (created)."""
    path = Path(os.environ.get("VLA_CACHE_DIR") or Path.home() / ".cache" / "vla-harness")
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=1)
def lowpoly_urdf() -> Path:
    """Path of the low-poly URDF (written on first use; the stock SRDF is copied next to it byte for byte, since
    SAPIEN reads the self-collision pairs from ``<urdf stem>.srdf``)."""
    text = lowpoly_urdf_text().encode()
    folder = cache_dir() / "robots" / f"{LOWPOLY_ROBOT_UID}-{hashlib.sha256(text).hexdigest()[:16]}"
    urdf = folder / "panda_v3_lowpoly.urdf"
    if not urdf.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        srdf = (stock_panda_dir() / STOCK_URDF).with_suffix(".srdf")
        write_bytes_atomic(urdf.with_suffix(".srdf"), srdf.read_bytes())  # before the URDF: its presence means complete
        write_bytes_atomic(urdf, text)
    return urdf


def stale_sources() -> list[str]:
    """Stock visual meshes whose bytes differ from what the low-poly copies were built from (empty: up to date).
    Reads ~30 MB of stock meshes; for ``vla doctor`` and the tests, not for every env."""
    stock = stock_panda_dir()
    files = lowpoly_manifest()["files"]
    stale = [rel for rel in stock_visual_meshes() if rel not in files]
    for rel, entry in files.items():
        path = stock / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["source_sha256"]:
            stale.append(rel)
    return sorted(stale)


def scene_triangles(env) -> int:
    """Triangles the renderer draws: every triangle-mesh render shape of the (first) sub-scene of ``env`` (a
    ManiSkill env or a wrapper of one). lavapipe's cost per frame grows with this number."""
    import sapien

    total = 0
    for entity in env.unwrapped.scene.sub_scenes[0].entities:
        body = entity.find_component_by_type(sapien.render.RenderBodyComponent)
        for shape in body.render_shapes if body is not None else ():
            if isinstance(shape, sapien.render.RenderShapeTriangleMesh):
                total += sum(len(part.get_triangles()) for part in shape.parts)
    return total
