"""BenchConfig validation, seed/task parsing, and the named benchmark registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.specs import TASKS
from harness.benchmark_specs import available_benchmarks, load_benchmark
from harness.config import BenchConfig, parse_seeds, parse_tasks


def test_parse_seeds() -> None:
    assert parse_seeds("3:6") == [3, 4, 5]
    assert parse_seeds("9,1,4") == [1, 4, 9]
    assert parse_seeds("7") == [7]
    for bad, msg in (("5:5", "empty range"), ("a:b", "expected"), ("-1", ">= 0"), ("1,1", "twice"), ("", "no seed")):
        with pytest.raises(ValueError, match=msg):
            parse_seeds(bad)


def test_parse_tasks() -> None:
    assert parse_tasks(("all",)) == tuple(TASKS)
    assert parse_tasks(("DualArmLiftBar-v1,TwoRobotPickCube-v1",)) == ("DualArmLiftBar-v1", "TwoRobotPickCube-v1")
    with pytest.raises(ValueError, match="did you mean 'DualArmLiftBar-v1'"):
        parse_tasks(("DualArmLiftBar",))


def test_bench_config_validation(tmp_path: Path) -> None:
    ok = BenchConfig(policy="scripted", out=tmp_path, benchmark="smoke")
    assert ok.video == "all" and ok.end_on_success and ok.post_success_steps == 10
    cases = [
        (dict(), "give --benchmark NAME, or both --tasks and --seeds"),
        (dict(tasks=("all",)), "both --tasks and --seeds"),
        (dict(benchmark="smoke", seeds="0:2"), "drop --tasks/--seeds"),
        (dict(benchmark="smoke", workers=0), "workers must be >= 1 \\(0 only with --executor ray\\), got 0"),
        (dict(benchmark="smoke", fail_under=95.0), r"fail_under must be a fraction in \[0, 1\]"),
        (dict(benchmark="smoke", n_action_steps=2, temporal_ensemble_coeff=0.01), "n_action_steps must be 1"),
        (dict(benchmark="smoke", num_envs=4, workers=2), "workers must be 1"),
        (dict(benchmark="smoke", retry_errors=True), "--resume"),
        (dict(benchmark="smoke", video_cameras=("top",)), "video_cameras: unknown"),
        (dict(benchmark="smoke", env_factory="nocolon"), "module:function"),
        (dict(benchmark="smoke", video_stride=0), "video_stride must be >= 1, got 0"),
        (dict(benchmark="smoke", visual_quality="hi"), "visual_quality must be one of"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            BenchConfig(policy="scripted", out=tmp_path, **kw)


def test_named_benchmarks() -> None:
    assert {"smoke", "dual-arm-v1"} <= set(available_benchmarks())
    smoke = load_benchmark("smoke")
    assert smoke.tasks == tuple(TASKS) and len(smoke.seeds) == 2
    assert all(smoke.max_episode_steps[t] < TASKS[t].max_episode_steps for t in TASKS), "short horizons"
    assert smoke.video_cameras == ("head",) and smoke.image_size == 128
    full = load_benchmark("dual-arm-v1")
    assert full.tasks == tuple(TASKS) and full.seeds == tuple(range(100000, 100100))
    assert full.max_episode_steps == {t: s.max_episode_steps for t, s in TASKS.items()}
    assert not set(full.seeds) & set(range(1000)), "eval seeds are disjoint from the default demo seeds"


def test_unknown_and_invalid_benchmarks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark 'smok'; known: .*did you mean 'smoke'"):
        load_benchmark("smok")
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ntasks: [NoSuchTask-v1]\nseeds: '0:2'\n")
    with pytest.raises(ValueError, match=r"mine.yaml: key 'tasks': unknown task"):
        load_benchmark(str(bad))
    bad.write_text("name: other\ntasks: all\nseeds: '0:2'\n")
    with pytest.raises(ValueError, match="key 'name' is 'other'"):
        load_benchmark(str(bad))
    bad.write_text("name: mine\ntasks: all\nseeds: '0:2'\nhorizon: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['horizon'\]"):
        load_benchmark(str(bad))
    bad.write_text("name: mine\ntasks: all\nseeds: '2:1'\n")
    with pytest.raises(ValueError, match="key 'seeds'.*empty range"):
        load_benchmark(str(bad))
