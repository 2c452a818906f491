"""Build the low-poly visual meshes of the ``panda_wristcam`` arm: ``python -m envs.lowpoly_build``.

The stock arm's visual meshes cost almost all of a CPU frame: lavapipe's cost is proportional to triangles, and the
stock DualArm scene has 1.14 M of them, 850 k in the two RealSense D415 meshes on the hands and 25-43 k in every
Panda link (``benchmarks/results/render.json``). This module writes decimated copies of exactly the meshes the
stock URDF (``mani_skill/assets/robots/panda/panda_v3.urdf``) lists under ``<visual>``; collision meshes,
kinematics and controllers are never touched (``envs.visuals`` builds the URDF that uses these meshes).

Method, per mesh:

* Franka links (``franka_description/meshes/visual/*.glb``): every part (one per material) is decimated on its own
  with quadric edge collapse (``fast_simplification``, Garland & Heckbert 1997, "Surface Simplification Using
  Quadric Error Metrics") to ``ratio`` of its faces (at least ``MIN_PART_FACES``), keeps its PBR material and
  node transform, and gets normals split at creases sharper than ``CREASE_DEG`` (trimesh ``smooth_shade``).
* RealSense D415 (``realsense2_description/meshes/d415.stl``, 425 k faces in 1084 disconnected parts): quadric
  collapse cannot remove open boundaries, so it stalls at ~14 k faces; its convex hull (the body is a rounded
  box; the parts it drops -- lens rims, screws, vents -- are under 3 px at 128 px) is decimated instead, to
  ``CAMERA_FACES`` faces. The URDF keeps giving it its ``aluminum`` material.

The output is deterministic (same inputs, same library versions -> same bytes) and is committed in
``envs/assets/panda_lowpoly/`` with ``manifest.json`` (source and output SHA-256, face counts, parameters and
library versions): the meshes are 0.3 MB, every machine renders the same pixels without needing the decimation
library, and ``tests/envs/test_visuals.py`` fails when the installed ManiSkill's source meshes no longer match
the manifest (then rerun this module).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

MIN_PART_FACES = 160
CREASE_DEG = 30.0
CAMERA_FACES = 240
CAMERA_GRID_M = 0.001
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Decimation settings (defaults: the committed meshes)."""

    out: Path = Path(__file__).parent / "assets" / "panda_lowpoly"
    """Folder that receives the meshes and manifest.json."""
    ratio: float = 0.1
    """Fraction of faces every Franka link part keeps (quadric edge collapse)."""
    camera_faces: int = CAMERA_FACES
    """Faces of the decimated D415 convex hull."""

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.camera_faces < 12:
            raise ValueError(f"camera_faces must be >= 12, got {self.camera_faces}")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return sha256_bytes(Path(path).read_bytes())


def _decimate(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge collapse to about ``target`` faces (no-op when already below it). Vertices are welded first:
    the stock GLBs store one vertex per face corner, and unwelded faces all look like open boundaries."""
    import fast_simplification
    import trimesh

    if len(faces) <= target:
        return vertices, faces
    welded = trimesh.Trimesh(vertices, faces, process=True)
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    v, f = fast_simplification.simplify(
        np.ascontiguousarray(welded.vertices, dtype=np.float32),
        np.ascontiguousarray(welded.faces, dtype=np.int32),
        target_count=int(target),
    )
    return np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.int64)


def _shaded(vertices: np.ndarray, faces: np.ndarray):
    """A trimesh mesh with normals split at creases sharper than CREASE_DEG (flat faces stay flat)."""
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=True)
    return trimesh.graph.smooth_shade(mesh, angle=np.deg2rad(CREASE_DEG))


def decimate_glb(source: Path, ratio: float) -> tuple[bytes, int, int]:
    """Decimate every part of a multi-material GLB; returns (GLB bytes, faces before, faces after)."""
    import trimesh

    scene = trimesh.load(source, force="scene")
    out = trimesh.Scene()
    before = after = 0
    # trimesh names loaded nodes with random suffixes: order and name the parts by geometry name instead.
    parts = sorted((scene.graph[node][1], node) for node in scene.graph.nodes_geometry)
    for name, node in parts:
        transform = scene.graph[node][0]
        part = scene.geometry[name]
        target = max(MIN_PART_FACES, int(round(len(part.faces) * ratio)))
        mesh = _shaded(*_decimate(np.asarray(part.vertices), np.asarray(part.faces), target))
        mesh.visual = trimesh.visual.TextureVisuals(material=part.visual.material)
        out.add_geometry(mesh, node_name=name, geom_name=name, transform=transform)
        before, after = before + len(part.faces), after + len(mesh.faces)
    return out.export(file_type="glb"), before, after


def decimate_camera(source: Path, faces: int) -> tuple[bytes, int, int]:
    """The D415 mesh as its decimated convex hull (see the module docstring); returns (binary STL, before, after)."""
    import trimesh

    mesh = trimesh.load(source, force="mesh")
    snapped = np.unique(np.round(np.asarray(mesh.convex_hull.vertices) / CAMERA_GRID_M) * CAMERA_GRID_M, axis=0)
    hull = trimesh.convex.convex_hull(snapped)
    v, f = _decimate(np.asarray(hull.vertices), np.asarray(hull.faces), faces)
    low = trimesh.Trimesh(v, f, process=True)
    buf = io.BytesIO()
    low.export(buf, file_type="stl")
    return buf.getvalue(), len(mesh.faces), len(low.faces)


def build(cfg: BuildConfig) -> dict:
    """Write every low-poly mesh and ``manifest.json`` into ``cfg.out``; returns the manifest.

    Raises:
        FileNotFoundError: the installed ManiSkill lacks a mesh the stock URDF names.
    """
    from envs.visuals import stock_panda_dir, stock_visual_meshes

    root = stock_panda_dir()
    cfg.out.mkdir(parents=True, exist_ok=True)
    files = {}
    for rel in stock_visual_meshes():
        src = root / rel
        if not src.is_file():
            raise FileNotFoundError(f"{src}: named in the stock URDF's <visual> but missing")
        if src.suffix == ".glb":
            data, before, after = decimate_glb(src, cfg.ratio)
            method = f"quadric edge collapse per part to {cfg.ratio:g} of its faces (min {MIN_PART_FACES})"
        else:
            data, before, after = decimate_camera(src, cfg.camera_faces)
            method = (
                f"convex hull of vertices snapped to {CAMERA_GRID_M * 1000:g} mm, quadric edge collapse to "
                f"<= {cfg.camera_faces} faces"
            )
        name = Path(rel).name
        (cfg.out / name).write_bytes(data)
        files[rel] = {
            "file": name,
            "source_sha256": sha256_file(src),
            "sha256": sha256_bytes(data),
            "faces_before": before,
            "faces_after": after,
            "method": method,
        }
    manifest = {
        "format_version": 1,
        "robot": "panda_wristcam (mani_skill/assets/robots/panda/panda_v3.urdf)",
        "built_with": {p: metadata.version(p) for p in ("mani-skill", "trimesh", "fast-simplification", "numpy")},
        "params": {
            "ratio": cfg.ratio,
            "camera_faces": cfg.camera_faces,
            "camera_grid_m": CAMERA_GRID_M,
            "min_part_faces": MIN_PART_FACES,
            "crease_deg": CREASE_DEG,
        },
        "files": files,
        "faces_per_arm": {
            "stock": sum(files[rel]["faces_before"] for rel in stock_visual_meshes(unique=False)),
            "lowpoly": sum(files[rel]["faces_after"] for rel in stock_visual_meshes(unique=False)),
        },
    }
    (cfg.out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m envs.lowpoly_build [--out DIR] [--ratio R] [--camera-faces N]``."""
    import tyro

    cfg = tyro.cli(BuildConfig, args=argv)
    manifest = build(cfg)
    counts = manifest["faces_per_arm"]
    print(f"wrote {len(manifest['files'])} meshes to {cfg.out}: {counts['stock']} -> {counts['lowpoly']} faces per arm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
