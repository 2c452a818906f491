"""`vla bench` with a `remote:ws://` policy: a lost connection marks that episode `error` and the next episode
reconnects; `--workers N` opens one connection per worker; and on a real ManiSkill task the served checkpoint
gives the same episodes -- records and every executed action -- as `--policy checkpoint:...`."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import fake_config, load_run
from fakes import make_fake_env

from harness.bench import run_bench
from harness.config import BenchConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "policies"))
from serving_fixtures import ForeignServer, VlaServe, tiny_checkpoint  # noqa: E402

VOLATILE = ("timing_ms", "wall_s", "finished_at", "worker")
EXECUTED: dict[str, list[np.ndarray]] = {}
"""Actions each in-process run executed, by run name (filled by :func:`recording_env`)."""


def test_lost_connection_is_an_error_episode_and_the_next_one_reconnects(tmp_path: Path) -> None:
    # chunk 10, 40 steps: 4 requests per episode; request 6 (seed 1's second call) is answered by a dropped TCP
    # connection.
    with ForeignServer(metadata={"cameras": ["head"], "chunk_size": 10}, drop_on=(6,)) as srv:
        cfg = fake_config(
            tmp_path / "o", policy=f"remote:{srv.url}", tasks=("DualArmLiftBar-v1",), seeds="0:3", end_on_success=False
        )
        assert run_bench(cfg, env_factory=make_fake_env) == 0
        records, results = load_run(tmp_path / "o")
    status = {r["seed"]: r["status"] for r in records}
    assert status == {0: "ok", 1: "error", 2: "ok"}
    error = next(r for r in records if r["seed"] == 1)
    assert f"remote:{srv.url}: connection lost" in error["error"] and error["episode_len"] == 10
    assert srv.connections == 2, "the episode after the loss reconnected once"
    assert results["overall"]["errors"] == 1 and results["policy"]["extra"]["keys"] == "aloha"


def test_each_worker_opens_its_own_connection(tmp_path: Path) -> None:
    with ForeignServer(metadata={"cameras": ["head"], "chunk_size": 10}) as srv:
        cfg = fake_config(
            tmp_path / "o",
            policy=f"remote:{srv.url}",
            tasks=("DualArmLiftBar-v1",),
            seeds="0:4",
            end_on_success=False,
            workers=2,
        )
        assert run_bench(cfg, env_factory=make_fake_env) == 0
        records, _ = load_run(tmp_path / "o")
    assert sorted(r["status"] for r in records) == ["ok"] * 4
    assert srv.connections == 3, "the parent's policy (for the metadata checks) + one per worker"
    assert len(srv.requests) == 16


class _RecordingEnv:
    """A real env whose executed actions are appended to ``EXECUTED[run]``."""

    def __init__(self, env, run: str) -> None:
        self._env, self._log = env, EXECUTED.setdefault(run, [])

    def __getattr__(self, name):
        return getattr(self._env, name)

    def step(self, action):
        self._log.append(np.array(action, dtype=np.float64))
        return self._env.step(action)


def recording_env(task: str, run: str, **kwargs) -> _RecordingEnv:
    """``envs.wrapper.make_env`` wrapped in :class:`_RecordingEnv` (module-level: an env_factory)."""
    from envs.wrapper import make_env

    return _RecordingEnv(make_env(task, **kwargs), run)


def _records(out: Path) -> dict:
    recs = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return {(r["task"], r["seed"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in recs}


@pytest.mark.maniskill
@pytest.mark.render
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_served_checkpoint_gives_the_same_episodes_as_in_process(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint()
    common = dict(
        tasks=("DualArmLiftBar-v1",), seeds="100000:100002", video="none", progress=False, max_episode_steps=24
    )
    local_cfg = BenchConfig(policy=f"checkpoint:{ckpt}", out=tmp_path / "local", **common)
    assert run_bench(local_cfg, env_factory=functools.partial(recording_env, run="local")) == 0
    with VlaServe(f"checkpoint:{ckpt}") as srv:
        remote_cfg = BenchConfig(policy=f"remote:{srv.url}", out=tmp_path / "remote", **common)
        assert run_bench(remote_cfg, env_factory=functools.partial(recording_env, run="remote")) == 0
    local, remote = _records(tmp_path / "local"), _records(tmp_path / "remote")
    assert list(local) == [("DualArmLiftBar-v1", 100000), ("DualArmLiftBar-v1", 100001)]
    assert all(r["status"] == "ok" and r["policy_calls"] == 3 for r in remote.values()), remote
    assert remote == local, "per-episode outcomes (success, length, calls, instruction) must not depend on serving"
    a, b = np.stack(EXECUTED["local"]), np.stack(EXECUTED["remote"])
    assert a.shape == b.shape == (48, 1, 14)
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0, err_msg="every executed action matches")
    res = json.loads((tmp_path / "remote" / "results.json").read_text())
    assert (
        res["config"]["resolved"]["policy_sha256"]
        == json.loads((tmp_path / "local" / "results.json").read_text())["config"]["resolved"]["policy_sha256"]
    )
