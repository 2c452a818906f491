"""`vla bench --executor ray` on a local Ray cluster (2 CPUs, one per test session): the same outcomes as
--workers 1, an actor killed mid-item, an actor that keeps dying, a driver killed with SIGKILL and resumed, env
errors, timeouts, and actors that cannot build their policy."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from bench_fixtures import FAKE_TASKS, run_and_sigkill, vla_bench_argv
from fakes import make_dying_fake_env, make_pid_bound_policy

import harness.ray_executor as ray_executor
from harness.config import BenchConfig

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("timing_ms", "wall_s", "finished_at", "worker")


def _outcomes(records: list[dict]) -> dict:
    return {(r["task"], r["seed"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in records}


def _keys(records: list[dict]) -> list[tuple[str, int]]:
    return [(r["task"], r["seed"]) for r in records]


def test_two_actors_equal_one_worker_with_videos(tmp_path: Path, run_fake) -> None:
    kw = dict(seeds="0:4", video="all")
    _, one, res_one = run_fake(tmp_path / "one", **kw)
    _, two, res_two = run_fake(tmp_path / "ray", executor="ray", workers=2, env_kw={"step_sleep": 0.01}, **kw)
    assert len(two) == 8 and _outcomes(one) == _outcomes(two)
    assert {r["worker"] for r in two} == {0, 1}, "both actors ran episodes"
    assert res_one["per_task"] == res_two["per_task"]
    assert res_two["throughput"]["executor"] == "ray" and res_two["throughput"]["workers"] == 2
    videos = sorted(p.name for p in (tmp_path / "ray" / "videos").glob("*.mp4"))
    assert videos == sorted(p.name for p in (tmp_path / "one" / "videos").glob("*.mp4")) and len(videos) == 8
    for rec in two:  # the driver wrote every actor's video where its record points
        assert (tmp_path / "ray" / rec["video"]).stat().st_size > 1000


def _kill_actor_running(pool_box: list, item: tuple, marker: Path, stop: threading.Event) -> None:
    """Wait until ``item`` runs (its env wrote attempt-1), then ray.kill the actor whose running item it is."""
    import ray

    while not stop.is_set() and not (marker / "attempt-1").exists():
        time.sleep(0.02)
    while not stop.is_set():
        pool = pool_box[0] if pool_box else None
        for actor in list(pool.actors.values()) if pool else []:
            if actor.queue and pool.items[actor.queue[0][1]] == item:
                ray.kill(actor.handle)
                pool_box.append(actor.wid)
                return
        time.sleep(0.02)


def test_an_actor_killed_mid_item_has_its_item_retried(tmp_path: Path, run_fake, monkeypatch) -> None:
    marker = tmp_path / "markers"
    pools: list = []
    original = ray_executor._RayPool.run
    monkeypatch.setattr(ray_executor._RayPool, "run", lambda self: (pools.append(self), original(self))[1])
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_actor_running, args=(pools, (FAKE_TASKS[0], (2,)), marker, stop), daemon=True
    )
    killer.start()
    env = functools.partial(
        make_dying_fake_env, die_seed=2, die_task=FAKE_TASKS[0], marker_dir=str(marker), mode="stall", stall_s=120
    )
    try:
        # videos on: the killed actor also held records of an earlier item whose video was still encoding
        code = _run_with_env(tmp_path / "o", run_fake, env, seeds="0:4", executor="ray", workers=2, video="all")
    finally:
        stop.set()
    records, results = code
    assert sorted(_keys(records)) == sorted((t, s) for t in FAKE_TASKS for s in range(4)), "8 unique records"
    assert all(r["status"] == "ok" for r in records)
    assert len(list(marker.glob("attempt-*"))) == 2, "the killed item ran once more"
    retried = next(r for r in records if (r["task"], r["seed"]) == (FAKE_TASKS[0], 2))
    assert pools[1:] and retried["worker"] != pools[1], "the retry ran on another actor than the killed one"
    assert results["overall"]["errors"] == 0
    assert all((tmp_path / "o" / r["video"]).exists() for r in records), "every record has its video"
    assert len(list((tmp_path / "o" / "videos").glob("*.mp4"))) == 8


def _run_with_env(out: Path, run_fake, env_factory, **overrides):
    """run_fake with a ready-made env factory (run_fake binds env_kw onto make_fake_env)."""
    from bench_fixtures import fake_config, load_run
    from fakes import make_goal_policy

    from harness.bench import run_bench

    run_bench(fake_config(out, **overrides), env_factory=env_factory, policy_factory=make_goal_policy)
    return load_run(out)


def test_an_item_that_kills_its_actor_twice_is_recorded_as_error(tmp_path: Path, run_fake) -> None:
    marker = tmp_path / "markers"
    env = functools.partial(make_dying_fake_env, die_seed=1, marker_dir=str(marker), times=10)
    records, results = _run_with_env(
        tmp_path / "o", run_fake, env, tasks=FAKE_TASKS[:1], seeds="0:4", executor="ray", workers=2
    )
    status = {r["seed"]: r["status"] for r in records}
    assert status == {0: "ok", 1: "error", 2: "ok", 3: "ok"} and len(records) == 4
    assert "died" in next(r for r in records if r["seed"] == 1)["error"]
    assert len(list(marker.glob("attempt-*"))) == 2, "retried once, then recorded"
    assert results["per_task"][FAKE_TASKS[0]]["errors"] == 1


def test_env_errors_and_timeouts_are_recorded_and_the_run_completes(tmp_path: Path, run_fake) -> None:
    code, records, results = run_fake(
        tmp_path / "o",
        tasks=FAKE_TASKS[:1],
        seeds="0:5",
        executor="ray",
        workers=2,
        episode_timeout=4.0,
        env_kw={"fail_seeds": (1,), "hang_seeds": (3,), "hang_s": 120.0},
    )
    status = {r["seed"]: r["status"] for r in records}
    assert status == {0: "ok", 1: "error", 2: "ok", 3: "timeout", 4: "ok"} and code == 0
    assert "injected failure" in next(r for r in records if r["seed"] == 1)["error"]
    assert "episode-timeout" in next(r for r in records if r["seed"] == 3)["error"]


def test_an_actor_that_cannot_build_its_policy_aborts_with_its_traceback(tmp_path: Path, run_fake) -> None:
    policy = functools.partial(make_pid_bound_policy, driver_pid=os.getpid())
    with pytest.raises(RuntimeError, match="cannot be built outside process"):
        run_fake(tmp_path / "o", policy_factory=policy, seeds="0:2", executor="ray", workers=1)


def test_more_actors_than_cluster_cpus_is_refused(tmp_path: Path, run_fake) -> None:
    with pytest.raises(ValueError, match="3 Ray actors of 1 CPU each, but the cluster has 2"):
        run_fake(tmp_path / "o", seeds="0:2", executor="ray", workers=3)


def test_ray_flags_are_checked(tmp_path: Path) -> None:
    base = dict(policy="random", out=tmp_path / "o", tasks=FAKE_TASKS[:1], seeds="0:2")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        BenchConfig(**base, workers=0)
    with pytest.raises(ValueError, match="need --executor ray"):
        BenchConfig(**base, ray_address="auto")
    assert BenchConfig(**base, workers=0, executor="ray").workers == 0


def _bench_cmd(out: Path, resume: bool) -> list[str]:
    cmd = vla_bench_argv(out, "random", ",".join(FAKE_TASKS), "0:4", "--env-factory", "fakes:make_slower_fake_env")
    cmd += ["--max-episode-steps", "25", "--executor", "ray", "--workers", "2"]
    return cmd + (["--resume"] if resume else [])


def test_driver_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)])}
    episodes = out / "episodes.jsonl"
    killed_at = run_and_sigkill(_bench_cmd(out, False), out, 2, env)
    assert 2 <= killed_at < 8, f"{killed_at} episodes were done at the kill"
    first = episodes.read_text().splitlines()[:killed_at]
    done = subprocess.run(_bench_cmd(out, True), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = episodes.read_text().splitlines()
    keys = _keys([json.loads(line) for line in lines])
    assert len(keys) == len(set(keys)) == 8, "8 unique records: none lost, none doubled"
    assert lines[:killed_at] == first
