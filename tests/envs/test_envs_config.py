"""Task table and `vla demos` config validation (no simulator)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from envs.config import DemosConfig, parse_cameras
from envs.specs import TASKS, get_task, task_table


def test_every_task_has_seen_and_unseen_phrasings():
    assert set(TASKS) == {
        "TwoRobotPickCube-v1",
        "TwoRobotStackCube-v1",
        "DualArmLiftBar-v1",
        "DualArmPlaceShoe-v1",
        "DualArmPickColorCube-v1",
        "DualArmPickSideCube-v1",
    }
    for spec in TASKS.values():
        assert len(spec.seen) >= 2 and len(spec.unseen) >= 2, spec.name
        assert not set(spec.seen) & set(spec.unseen), f"{spec.name}: unseen phrasings must be held out"


def test_unknown_task_names_the_closest():
    with pytest.raises(ValueError, match="did you mean 'TwoRobotPickCube-v1'"):
        get_task("TwoRobotPickCub-v1")


def test_task_table_is_json_ready():
    rows = json.loads(json.dumps(task_table()))
    assert {r["name"] for r in rows} == set(TASKS)
    assert all(r["cameras"] == ["head", "left_wrist", "right_wrist", "low"] for r in rows)


def test_cameras_accept_commas_and_reject_unknown():
    assert parse_cameras(("head,left_wrist",)) == ("head", "left_wrist")
    assert parse_cameras(("head", "low")) == ("head", "low")
    with pytest.raises(ValueError, match=r"unknown camera\(s\) \['front'\]"):
        parse_cameras(("head,front",))
    with pytest.raises(ValueError, match="listed twice"):
        parse_cameras(("head,head",))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"episodes": 0}, "episodes must be >= 1"),
        ({"image_size": 8}, "image_size must be in"),
        ({"seed_start": -1}, "seed_start must be >= 0"),
        ({"max_attempts": 1, "episodes": 2}, "max_attempts"),
        ({"instruction_split": "both"}, "instruction_split"),
        ({"workers": 0}, "workers must be >= 1, got 0"),
        ({"visual_quality": "low"}, r"visual_quality must be one of \['fast', 'full'\], got 'low'"),
    ],
)
def test_demos_config_validation(tmp_path, kwargs, message):
    base = {"task": "DualArmLiftBar-v1", "episodes": 1, "out": tmp_path}
    with pytest.raises(ValueError, match=message):
        DemosConfig(**{**base, **kwargs})


def test_vla_envs_lists_every_task_as_json():
    out = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "envs", "--json"], capture_output=True, text=True, check=True
    )
    assert {r["name"] for r in json.loads(out.stdout)} == set(TASKS)


def test_vla_demos_help_comes_from_field_docstrings():
    out = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "demos", "--help"], capture_output=True, text=True, check=True
    )
    assert "Number of successful episodes to write" in out.stdout
    assert "--seed-start" in out.stdout and "--image-size" in out.stdout
