"""Worker processes on the fake env: workers 1 vs 2, episode timeouts, and SIGKILL + --resume of `vla bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_fixtures import FAKE_TASKS, episode_lines, run_and_sigkill, vla_bench_argv
from fakes import make_forgetful_policy

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("timing_ms", "wall_s", "finished_at", "worker")


def _outcomes(records: list[dict]) -> dict:
    return {(r["task"], r["seed"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in records}


def test_two_workers_equal_one(tmp_path: Path, run_fake) -> None:
    # The forgetful policy fails any episode not preceded by its own reset(): a policy shared or not reset
    # across workers' episodes would change outcomes.
    _, one, res_one = run_fake(tmp_path / "one", policy_factory=make_forgetful_policy)
    _, two, res_two = run_fake(
        tmp_path / "two", policy_factory=make_forgetful_policy, workers=2, env_kw={"step_sleep": 0.01}
    )  # slow enough that both workers get episodes
    assert _outcomes(one) == _outcomes(two)
    assert {r["worker"] for r in two} == {0, 1}, "both workers ran episodes"
    assert res_one["per_task"] == res_two["per_task"] and res_two["throughput"]["workers"] == 2


def test_episode_timeout_kills_and_replaces_the_worker(tmp_path: Path, run_fake) -> None:
    start = time.monotonic()
    code, records, results = run_fake(
        tmp_path / "o",
        env_kw={"hang_seeds": (3,), "hang_s": 120.0},
        tasks=FAKE_TASKS[:1],
        seeds="0:6",
        episode_timeout=4.0,
    )
    assert time.monotonic() - start < 90, "the hung episode must not block the run"
    status = {r["seed"]: r["status"] for r in records}
    assert status == {0: "ok", 1: "ok", 2: "ok", 3: "timeout", 4: "ok", 5: "ok"}
    hung = next(r for r in records if r["seed"] == 3)
    assert hung["success_once"] is None and "episode-timeout" in hung["error"]
    task = results["per_task"][FAKE_TASKS[0]]
    assert task["timeouts"] == 1 and task["episodes"] == 5 and task["errors"] == 0
    assert code == 0


def _bench_cmd(out: Path, workers: int, resume: bool) -> list[str]:
    cmd = vla_bench_argv(out, "random", ",".join(FAKE_TASKS), "0:10", "--env-factory", "fakes:make_slow_fake_env")
    cmd += ["--max-episode-steps", "25", "--workers", str(workers)]
    return cmd + (["--resume"] if resume else [])


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path: Path, workers: int) -> None:
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)])}
    episodes = out / "episodes.jsonl"
    killed_at = run_and_sigkill(_bench_cmd(out, workers, False), out, 4, env)
    assert 4 <= killed_at < 20, f"{killed_at} episodes were done at the kill"
    first = [json.loads(line) for line in episodes.read_text().splitlines()[:killed_at]]
    done = subprocess.run(
        _bench_cmd(out, workers, True), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in episodes.read_text().splitlines()]
    keys = [(r["task"], r["seed"]) for r in records]
    assert len(keys) == len(set(keys)), "no episode recorded twice"
    assert set(keys) == {(t, s) for t in FAKE_TASKS for s in range(10)}, "no episode lost"
    assert records[:killed_at] == first
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["episodes"] + results["overall"]["errors"] == 20


def test_worker_threads_split_the_cores_and_keep_user_settings(monkeypatch) -> None:
    from harness.workers import limit_threads, threads_per_worker

    assert threads_per_worker(1, cpus=2) == 2 and threads_per_worker(2, cpus=2) == 1
    assert threads_per_worker(4, cpus=2) == 1 and threads_per_worker(3, cpus=16) == 5
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # torch not imported yet: only the env is set
    limit_threads(1)
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "7"


def _wait_both(procs: dict[str, subprocess.Popen]) -> dict[str, tuple[int, str, bool]]:
    """name -> (exit code, stderr, whether another process was still running when it ended)."""
    done: dict[str, tuple[int, str, bool]] = {}
    deadline = time.monotonic() + 300
    while len(done) < len(procs) and time.monotonic() < deadline:
        for name, proc in procs.items():
            if name not in done and proc.poll() is not None:
                others = any(p.poll() is None for n, p in procs.items() if n != name)
                done[name] = (proc.returncode, proc.stderr.read().decode(), others)
        time.sleep(0.02)
    assert len(done) == len(procs), "a bench did not finish"
    return done


@pytest.mark.parametrize("second", ["at once", "resume while running"])
def test_two_benches_on_one_folder_one_runs_the_other_stops_at_once(tmp_path: Path, second: str) -> None:
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)])}
    start = lambda resume: subprocess.Popen(  # noqa: E731
        _bench_cmd(out, 1, resume), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    procs = {"a": start(False)}
    if second == "resume while running":
        deadline = time.monotonic() + 120
        while episode_lines(out / "episodes.jsonl") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    procs["b"] = start(second != "at once")
    done = _wait_both(procs)
    (winner, (win_code, _, _)), (loser, (code, err, others_running)) = sorted(
        done.items(), key=lambda kv: kv[1][0] != 0
    )
    assert win_code == 0 and code == 2, done
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "in use by vla bench" in lines[0], err
    assert f"PID {procs[winner].pid}" in lines[0] and "started 20" in lines[0], lines[0]
    assert others_running, "the refused bench must stop while the other still runs"
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    keys = [(r["task"], r["seed"]) for r in records]
    assert sorted(keys) == sorted({(t, s) for t in FAKE_TASKS for s in range(10)}), "each (task, seed) once"
    assert json.loads((out / "results.json").read_text())["overall"]["episodes"] == len(records)
