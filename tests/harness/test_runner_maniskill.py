"""The harness on real ManiSkill tasks (state-only unless marked render): scripted success, determinism across
workers, errors, mismatch, replay, videos, and SIGKILL + --resume of `vla bench`."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from bench_fixtures import vla_bench_argv
from fakes import make_flaky_maniskill_env

from harness.bench import run_bench
from harness.config import BenchConfig
from policies.base import PolicyMismatchError

pytestmark = pytest.mark.maniskill
REPO = Path(__file__).resolve().parents[2]
TASK = "DualArmLiftBar-v1"  # the expert succeeds at step 51
VOLATILE = ("timing_ms", "wall_s", "finished_at", "worker")


def _cfg(out: Path, **kw) -> BenchConfig:
    base = dict(
        policy="scripted", out=out, tasks=(TASK,), seeds="0:2", video="none", progress=False, max_episode_steps=70
    )
    base.update(kw)
    return BenchConfig(**base)


def _records(out: Path) -> dict:
    recs = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return {(r["task"], r["seed"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in recs}


def test_scripted_succeeds_and_workers_do_not_change_outcomes(tmp_path: Path) -> None:
    assert run_bench(_cfg(tmp_path / "one", fail_under=1.0)) == 0
    assert run_bench(_cfg(tmp_path / "two", workers=2)) == 0
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert one == two, "per-episode outcomes (success, length, calls, instruction) must not depend on workers"
    assert all(r["status"] == "ok" and r["success_once"] and r["success_at_end"] for r in one.values())
    assert all(r["episode_len"] == 61 for r in one.values()), "first success at 51 + 10 post-success steps"
    res = json.loads((tmp_path / "one" / "results.json").read_text())
    assert res["overall"]["success_rate"] == 1.0 and res["provenance"]["vulkan"] is not None


def test_env_exception_mid_episode_is_recorded_and_run_continues(tmp_path: Path) -> None:
    factory = functools.partial(make_flaky_maniskill_env, fail_seed=1, fail_at_step=5)
    assert run_bench(_cfg(tmp_path / "o", seeds="0:3"), env_factory=factory) == 0
    recs = _records(tmp_path / "o")
    assert [recs[(TASK, s)]["status"] for s in range(3)] == ["ok", "error", "ok"]
    assert "injected simulator failure at step 5" in recs[(TASK, 1)]["error"]
    assert recs[(TASK, 1)]["episode_len"] == 4 and recs[(TASK, 2)]["success_once"]
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["overall"]["errors"] == 1 and res["overall"]["episodes"] == 2 and res["overall"]["success_rate"] == 1.0


def _record_expert(folder: Path, seed: int) -> int:
    from envs.experts import make_expert
    from envs.wrapper import make_env

    env = make_env(TASK, cameras=(), max_episode_steps=70)
    obs, _ = env.reset(seed=seed)
    expert, actions = make_expert(TASK), []
    expert.reset()
    for _ in range(61):
        a = expert.act({"privileged": {k: v[0] for k, v in obs["privileged"].items()}, "proprio": obs["proprio"][0]})
        actions.append(a)
        obs, *_ = env.step(a)
    env.close()
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / f"episode_{seed}.hdf5", "w") as f:
        f.create_dataset("action", data=np.asarray(actions, np.float32))
        f.attrs["task"], f.attrs["seed"], f.attrs["control_mode"] = TASK, seed, "pd_ee_pose"
    return len(actions)


def test_replay_of_expert_actions_succeeds_and_mismatch_is_caught_first(tmp_path: Path) -> None:
    demos = tmp_path / "demos"
    _record_expert(demos, 0)
    assert run_bench(_cfg(tmp_path / "replay", policy=f"replay:{demos}", seeds="0")) == 0
    rec = _records(tmp_path / "replay")[(TASK, 0)]
    assert rec["success_once"] and rec["success_at_end"] and rec["policy_calls"] == rec["episode_len"]
    with pytest.raises(PolicyMismatchError, match="not one the policy was trained on"):
        run_bench(_cfg(tmp_path / "wrong", policy=f"replay:{demos}", tasks=("TwoRobotPickCube-v1",), seeds="0"))
    assert not (tmp_path / "wrong" / "episodes.jsonl").exists()


@pytest.mark.render
def test_rendered_episode_with_video(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run_bench(_cfg(out, seeds="0", video="all", image_size=64, max_episode_steps=60)) == 0
    rec = _records(out)[(TASK, 0)]
    assert rec["video"] == f"videos/{TASK}--seed0--success.mp4" and (out / rec["video"]).stat().st_size > 1000
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["resolved"]["cameras"] == ["head"] and res["timing_ms"]["observation"]["mean"] > 1.0


def test_sigkill_and_resume_with_vla_bench(tmp_path: Path) -> None:
    out = tmp_path / "o"
    cmd = vla_bench_argv(out, "scripted", TASK, "0:10", "--max-episode-steps", "70")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path, deadline = out / "episodes.jsonl", time.monotonic() + 180
    while (not path.exists() or path.read_text().count("\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "bench ended before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = path.read_text().splitlines()
    keys = [(json.loads(x)["task"], json.loads(x)["seed"]) for x in lines]
    assert sorted(keys) == [(TASK, s) for s in range(10)], "every episode exactly once"


@pytest.mark.gpu
def test_gpu_sub_envs_batched(tmp_path: Path) -> None:
    """The GPU path: B ManiSkill GPU sub-envs in one process, one seed each, batched scripted inference."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (ManiSkill GPU simulation)")
    assert run_bench(_cfg(tmp_path / "cpu", seeds="0:3")) == 0
    assert run_bench(_cfg(tmp_path / "gpu", seeds="0:3", num_envs=2)) == 0  # items of 2 + 1 (padded) seeds
    cpu, gpu = _records(tmp_path / "cpu"), _records(tmp_path / "gpu")
    assert sorted(gpu) == sorted(cpu)
    for key, rec in gpu.items():
        assert rec["status"] == "ok" and rec["success_once"], rec
        assert rec["instruction"] == cpu[key]["instruction"], "each sub-env was reset with its own seed"


@pytest.mark.render
@pytest.mark.parametrize("video,stride,renders", [("none", 1, 2 * 5), ("all", 1, 2 * 41), ("all", 8, 2 * 6)])
def test_cameras_render_only_when_consumed(tmp_path: Path, video: str, stride: int, renders: int) -> None:
    """Open-loop chunks of 8 over 40 steps: without video the policy's camera renders once per query (5 of 40
    steps: 1/8); a video with stride 1 keeps frames 0..40 (the queries reuse them); stride 8 keeps 0, 8, .., 40."""
    import fakes

    fakes.BUILT_ENVS.clear()
    cfg = _cfg(tmp_path / "o", n_action_steps=8, video=video, video_stride=stride, max_episode_steps=40, image_size=32)
    assert run_bench(cfg, env_factory=fakes.make_counted_maniskill_env, policy_factory=fakes.make_hold_policy) == 0
    (env,) = fakes.BUILT_ENVS
    records = list(_records(tmp_path / "o").values())
    steps = sum(r["episode_len"] for r in records)
    calls = sum(r["policy_calls"] for r in records)
    assert steps == 2 * 40 and calls == 2 * 5, (steps, calls)
    assert env.render_counts["head"] == renders, f"{env.render_counts['head']} head renders for {steps} steps"
    if video == "all":
        (video_file,) = {r["video"] for r in records if r["seed"] == 0}
        import imageio.v2 as imageio

        with imageio.get_reader(tmp_path / "o" / video_file) as reader:
            count = sum(1 for _ in reader)
            fps = reader.get_meta_data()["fps"]
        assert (count, fps) == (renders // 2, 20.0 / stride), "frames and fps of the video"
