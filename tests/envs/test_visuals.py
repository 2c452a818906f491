"""Low-poly arm visuals (``visual_quality fast``): same robot for physics, far fewer triangles for the renderer."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from envs import visuals
from envs.visuals import LOWPOLY_DIR, MANIFEST, lowpoly_manifest, lowpoly_urdf, stock_panda_dir


def test_committed_meshes_match_their_manifest_and_this_maniskill():
    manifest = lowpoly_manifest()  # raises on a changed or missing file
    assert sorted(manifest["files"]) == visuals.stock_visual_meshes()
    assert visuals.stale_sources() == [], "stock meshes changed: rebuild with `python -m envs.lowpoly_build`"
    counts = manifest["faces_per_arm"]
    assert counts["lowpoly"] < 0.05 * counts["stock"], counts


def test_a_changed_mesh_is_named(tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "panda_lowpoly"
    shutil.copytree(LOWPOLY_DIR, copy)
    (copy / "link3.glb").write_bytes(b"not a mesh")
    monkeypatch.setattr(visuals, "LOWPOLY_DIR", copy)
    monkeypatch.setattr(visuals, "MANIFEST", copy / "manifest.json")
    visuals.lowpoly_manifest.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"link3\.glb: sha256 .* franka_description/meshes/visual/link3\.glb"):
            visuals.lowpoly_manifest()
    finally:
        visuals.lowpoly_manifest.cache_clear()


def _strip_visual(root: ET.Element) -> list:
    """Everything in a URDF except <visual> mesh file names, with collision mesh paths made absolute."""
    stock = stock_panda_dir()
    out = []
    for el in root.iter():
        attrs = dict(el.attrib)
        if el.tag == "mesh":
            attrs["filename"] = str((stock / attrs["filename"]).resolve())
        out.append((el.tag, tuple(sorted(attrs.items())), (el.text or "").strip()))
    return out


def test_urdf_differs_from_stock_only_in_visual_meshes():
    stock_root = ET.parse(stock_panda_dir() / visuals.STOCK_URDF).getroot()
    low_root = ET.parse(lowpoly_urdf()).getroot()
    for root in (stock_root, low_root):
        for link in root.iter("link"):
            for visual in link.findall("visual"):
                for mesh in visual.iter("mesh"):
                    mesh.attrib["filename"] = "VISUAL"
    assert _strip_visual(low_root) == _strip_visual(stock_root)
    srdf = lowpoly_urdf().with_suffix(".srdf")
    assert srdf.read_bytes() == (stock_panda_dir() / "panda_v3.srdf").read_bytes(), "self-collision pairs differ"
    for mesh in ET.parse(lowpoly_urdf()).getroot().iter("mesh"):
        parents = Path(mesh.attrib["filename"]).parents
        assert LOWPOLY_DIR in parents or stock_panda_dir() in parents, mesh.attrib


def test_unknown_quality_and_robot_are_refused():
    with pytest.raises(ValueError, match=r"visual_quality must be one of \['fast', 'full'\], got 'low'"):
        visuals.check_visual_quality("low")
    with pytest.raises(ValueError, match="no low-poly variant of robot 'fetch'"):
        visuals.robot_uid("fetch", "fast")
    assert visuals.robot_uid("fetch", "full") == "fetch"


def test_rebuilding_gives_the_committed_bytes(tmp_path):
    pytest.importorskip("fast_simplification")
    from envs.lowpoly_build import BuildConfig, build

    committed = json.loads(MANIFEST.read_text())
    params = committed["params"]
    built = build(BuildConfig(out=tmp_path, ratio=params["ratio"], camera_faces=params["camera_faces"]))
    for rel, entry in committed["files"].items():
        assert built["files"][rel]["sha256"] == entry["sha256"], f"{rel}: the build is not deterministic"
        assert hashlib.sha256((tmp_path / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]


@pytest.mark.maniskill
@pytest.mark.parametrize("task", ["DualArmLiftBar-v1", "TwoRobotPickCube-v1"])
def test_physics_is_bit_identical_and_triangles_are_few(task):
    from envs.experts import make_expert
    from envs.wrapper import make_env

    runs, triangles = {}, {}
    for quality in ("full", "fast"):
        env = make_env(task, cameras=(), visual_quality=quality)
        expert = make_expert(task)
        obs, _ = env.reset(seed=5)
        expert.reset()
        states = []
        for _ in range(60):
            single = {"privileged": {k: v[0] for k, v in obs["privileged"].items()}, "proprio": obs["proprio"][0]}
            obs, *_ = env.step(expert.act(single))
            states.append(env.unwrapped.get_state().numpy().copy())
        runs[quality], triangles[quality] = np.stack(states), visuals.scene_triangles(env)
        env.close()
    np.testing.assert_array_equal(runs["fast"], runs["full"], err_msg=f"{task}: low-poly visuals changed physics")
    assert triangles["full"] > 1_000_000 and triangles["fast"] < 0.1 * triangles["full"], triangles


@pytest.mark.maniskill
@pytest.mark.render
def test_fast_frames_look_like_the_stock_ones():
    from envs.wrapper import make_env

    frames = {}
    for quality in ("full", "fast"):
        env = make_env("DualArmLiftBar-v1", cameras=("head", "left_wrist"), image_size=64, visual_quality=quality)
        obs, _ = env.reset(seed=2)
        frames[quality] = {c: obs["images"][c][0].astype(np.float64) for c in ("head", "left_wrist")}
        env.close()
    for camera in ("head", "left_wrist"):
        mse = np.mean((frames["fast"][camera] - frames["full"][camera]) ** 2)
        psnr = 10 * np.log10(255**2 / max(mse, 1e-9))
        assert psnr > 20.0, f"{camera}: PSNR {psnr:.1f} dB between low-poly and stock"
    assert not np.array_equal(frames["fast"]["head"], frames["full"]["head"]), "the head view shows no low-poly arm"
