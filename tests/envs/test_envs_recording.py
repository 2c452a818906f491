"""`vla demos`: the recorded HDF5 layout key by key, the manifest, failures, resume (real ManiSkill)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from envs.config import DemosConfig
from envs.layout import ACTION_LAYOUT
from envs.recording import MANIFEST, record_demos

pytestmark = [pytest.mark.maniskill, pytest.mark.render]

TASK = "DualArmLiftBar-v1"  # shortest expert episodes (~73 steps)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    cfg = DemosConfig(task=TASK, episodes=2, out=out, image_size=32, cameras=("head,right_wrist",), progress=False)
    manifest = record_demos(cfg)
    return out, manifest


def test_episode_files_match_the_seed_layout(recorded):
    out, _ = recorded
    files = sorted(p.name for p in out.glob("*.hdf5"))
    assert files == ["episode_0.hdf5", "episode_1.hdf5"]
    with h5py.File(out / "episode_0.hdf5", "r") as f:
        expected = {
            "head_camera_image": np.uint8,
            "right_wrist_image": np.uint8,
            "action": np.float64,
            "relative_action": np.float64,
            "proprio": np.float64,
            "seen": object,
            "unseen": object,
        }
        assert set(f.keys()) == set(expected), f"keys {sorted(f.keys())}"
        t = f["action"].shape[0]
        assert t > 20
        for key in ("head_camera_image", "right_wrist_image"):
            assert f[key].shape == (t, 32, 32, 3) and f[key].dtype == np.uint8, key
            assert f[key][0].std() > 1.0, f"{key}: blank frame"
        for key in ("action", "relative_action", "proprio"):
            assert f[key].shape == (t, 14) and f[key].dtype == np.float64, key
        action = f["action"][:]
        np.testing.assert_allclose(f["relative_action"][:-1], action[1:] - action[:-1])
        np.testing.assert_allclose(f["relative_action"][-1], f["relative_action"][-2])
        seen = [s.decode() for s in f["seen"][:]]
        assert f.attrs["instruction"] in seen and len(f["unseen"]) >= 2
        assert f.attrs["task"] == TASK and f.attrs["seed"] == 0 and f.attrs["control_mode"] == "pd_ee_pose"
        assert json.loads(f.attrs["action_layout"]) == list(ACTION_LAYOUT)
        assert json.loads(f.attrs["cameras"]) == ["head", "right_wrist"]
        assert f.attrs["num_steps"] == t and f.attrs["control_freq"] == 20
        assert "mani-skill" in json.loads(f.attrs["package_versions"])
        # The expert lifts the bar: both grippers close and the z targets rise.
        assert action[-1, 6] == -1.0 and action[-1, 13] == -1.0
        assert action[-1, 2] > action[0, 2] - 0.05 and action[-1, 2] > 0.15


def test_manifest_lists_episodes_and_attempts(recorded):
    out, manifest = recorded
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk["episodes"] == manifest["episodes"]
    assert [e["seed"] for e in on_disk["episodes"]] == [0, 1]
    assert on_disk["attempts"] == 2 and on_disk["failures"] == 0 and on_disk["next_seed"] == 2
    assert not list(out.glob("*.tmp"))


def test_resume_continues_after_an_interrupted_run(recorded, tmp_path):
    import shutil

    src, _ = recorded
    out = tmp_path / "resume"
    shutil.copytree(src, out)
    # Simulate a run killed after renaming episode_1 but before rewriting the manifest, plus a stale temp file.
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["episodes"] = manifest["episodes"][:1]
    manifest["attempts"], manifest["next_seed"] = 1, 1
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "episode_2.hdf5.tmp").write_bytes(b"partial")
    cfg = DemosConfig(task=TASK, episodes=3, out=out, image_size=32, cameras=("head", "right_wrist"), progress=False)
    result = record_demos(cfg)
    assert [e["seed"] for e in result["episodes"]] == [0, 1, 2], "episode_1 must be adopted, not re-recorded"
    assert sorted(p.name for p in out.glob("episode_*")) == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert result["attempts"] == 3


def test_incompatible_folder_is_refused(recorded):
    out, _ = recorded
    cfg = DemosConfig(task=TASK, episodes=3, out=out, image_size=64, cameras=("head", "right_wrist"), progress=False)
    with pytest.raises(ValueError, match="image_size=32"):
        record_demos(cfg)


def test_failed_attempts_are_counted_never_written(tmp_path, monkeypatch):
    import envs.experts as experts
    from envs.experts.base import ScriptedExpert

    class IdleExpert(ScriptedExpert):
        task = TASK

        def plan(self, state, proprio):
            return {}

        @property
        def done(self):
            return self._arms is not None  # stop after one step: the bar never moves

    monkeypatch.setattr(experts, "make_expert", lambda task: IdleExpert())
    cfg = DemosConfig(
        task=TASK, episodes=1, out=tmp_path, image_size=32, cameras=("head",), max_attempts=2, progress=False
    )
    with pytest.raises(RuntimeError, match="max_attempts=2"):
        record_demos(cfg)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["failures"] == 2 and manifest["failed_seeds"] == [0, 1] and manifest["episodes"] == []
    assert not list(tmp_path.glob("*.hdf5")) and not list(tmp_path.glob("*.tmp"))


def test_two_workers_write_the_same_folder_as_one(recorded, tmp_path):
    """Attempts run in 2 processes but are committed in seed order: same files, same contents, same manifest."""
    src, manifest = recorded
    cfg = DemosConfig(
        task=TASK, episodes=2, out=tmp_path, image_size=32, cameras=("head", "right_wrist"), workers=2, progress=False
    )
    parallel = record_demos(cfg)
    assert parallel["episodes"] == manifest["episodes"] and parallel["attempts"] == manifest["attempts"]
    for i in range(2):
        with h5py.File(src / f"episode_{i}.hdf5", "r") as a, h5py.File(tmp_path / f"episode_{i}.hdf5", "r") as b:
            assert set(a.keys()) == set(b.keys())
            for key in a.keys():
                np.testing.assert_array_equal(a[key][:], b[key][:], err_msg=f"episode_{i}: {key}")
            assert a.attrs["seed"] == b.attrs["seed"] and b.attrs["visual_quality"] == "fast"
    assert not (tmp_path / ".pending").exists(), "uncommitted attempts must be cleaned up"


def test_episodes_are_the_same_whatever_ran_before_them():
    """The env rebuilds its PhysX scene on every reset after the first: a seed's episode does not depend on the
    episodes before it (PhysX contact caches made grasps differ by millimetres otherwise)."""
    from envs.experts import make_expert
    from envs.recording import run_expert_episode
    from envs.wrapper import make_env

    used = make_env(TASK, cameras=())
    run_expert_episode(used, make_expert(TASK), 0, record=False)
    after = run_expert_episode(used, make_expert(TASK), 2, record=True)
    fresh = run_expert_episode(make_env(TASK, cameras=()), make_expert(TASK), 2, record=True)
    np.testing.assert_array_equal(after["proprio"], fresh["proprio"])
    np.testing.assert_array_equal(after["action"], fresh["action"])
