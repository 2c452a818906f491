"""The runner on the fake env: outcomes, determinism, chunk modes, errors, mismatches, batching, resume."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import pytest
from bench_fixtures import FAKE_TASKS, fake_config
from fakes import GoalPolicy, make_fake_env, make_forgetful_policy, make_goal_policy

from harness.bench import run_bench
from policies.base import PolicyMetadata, PolicyMismatchError

SEEDS = range(8)
VOLATILE = ("timing_ms", "wall_s", "finished_at", "worker")


def _expected(seed: int) -> tuple[bool, bool]:
    """(success_once, success_at_end) of the fake env under the goal policy (see fakes.py)."""
    if seed % 3 == 2:
        return False, False
    return True, seed % 7 != 6


def _outcomes(records: list[dict]) -> dict:
    return {(r["task"], r["seed"]): {k: v for k, v in r.items() if k not in VOLATILE} for r in records}


def test_records_and_results_follow_the_schema(tmp_path: Path, run_fake) -> None:
    code, records, results = run_fake(tmp_path / "out")
    assert code == 0
    assert sorted((r["task"], r["seed"]) for r in records) == sorted((t, s) for t in FAKE_TASKS for s in SEEDS)
    for r in records:
        assert r["schema_version"] == 1 and r["status"] == "ok" and r["error"] is None and r["video"] is None
        assert (r["success_once"], r["success_at_end"]) == _expected(r["seed"]), r
        assert r["episode_len"] == (40 if r["seed"] % 3 == 2 else r["episode_len"])
        assert r["policy_calls"] == r["episode_len"]  # chunk_size 1
        assert set(r["timing_ms"]) == {"observation", "inference", "simulation"}
        assert r["timing_ms"]["inference"]["n"] == r["policy_calls"]
        assert r["timing_ms"]["simulation"]["n"] == r["episode_len"] + 1  # + the reset
        assert r["instruction"] == f"reach goal {r['seed'] % 5}"
    assert all(r["episode_len"] <= 20 for r in records if r["success_once"]), "ends 10 steps after success"
    assert results["schema_version"] == 1
    assert results["seeds"] == {t: list(SEEDS) for t in FAKE_TASKS}
    task = results["per_task"][FAKE_TASKS[0]]
    assert (task["episodes"], task["successes"]) == (8, 6) and task["success_rate"] == pytest.approx(0.75)
    assert task["success_at_end_rate"] == pytest.approx(5 / 8) and task["errors"] == 0
    assert results["overall"]["episodes"] == 16 and results["overall"]["successes"] == 12
    assert results["policy"]["name"] == "goal" and results["policy"]["chunk_size"] == 1
    assert results["config"]["resolved"]["max_episode_steps"] == {t: 40 for t in FAKE_TASKS}
    assert results["throughput"]["workers"] == 1 and results["throughput"]["episodes"] == 16
    prov = results["provenance"]
    for key in (
        "git_sha",
        "git_dirty",
        "packages",
        "vulkan",
        "render_backend",
        "sim_backend",
        "device",
        "cpu",
        "checkpoint",
        "python",
        "hostname",
        "command",
    ):
        assert key in prov, key
    assert prov["checkpoint"] is None and prov["packages"]["numpy"]
    assert prov["cpu"]["model"] and isinstance(prov["cpu"]["flags"], list) and prov["cpu"]["cores"] >= 1


def test_same_seeds_give_identical_results(tmp_path: Path, run_fake) -> None:
    _, rec_a, res_a = run_fake(tmp_path / "a")
    _, rec_b, res_b = run_fake(tmp_path / "b")
    assert _outcomes(rec_a) == _outcomes(rec_b)
    for key in ("policy", "seeds", "per_task", "overall", "schema_version"):
        assert res_a[key] == res_b[key], key
    cfg_a, cfg_b = dict(res_a["config"]), dict(res_b["config"])
    assert cfg_a.pop("out") != cfg_b.pop("out") and cfg_a == cfg_b


@pytest.mark.parametrize(("chunk", "k", "coeff"), [(4, None, None), (4, 3, None), (6, 1, None), (4, None, 0.01)])
def test_policy_calls_follow_the_chunk_mode(tmp_path: Path, run_fake, chunk, k, coeff) -> None:
    _, records, _ = run_fake(
        tmp_path / "o",
        policy_kw={"chunk_size": chunk},
        n_action_steps=k,
        temporal_ensemble_coeff=coeff,
        tasks=FAKE_TASKS[:1],
    )
    every = 1 if coeff is not None else (k or chunk)
    for r in records:
        assert r["policy_calls"] == math.ceil(r["episode_len"] / every), r


def test_env_exception_is_an_error_record_and_the_run_goes_on(tmp_path: Path, run_fake) -> None:
    code, records, results = run_fake(tmp_path / "o", env_kw={"fail_seeds": (1,), "fail_at_step": 3})
    bad = [r for r in records if r["seed"] == 1]
    assert len(records) == 16 and len(bad) == 2
    for r in bad:
        assert r["status"] == "error" and r["success_once"] is None and r["episode_len"] == 2
        assert "RuntimeError: FakeEnv: injected failure at step 3" in r["error"]
    others = [r for r in records if r["seed"] != 1]
    assert all(r["status"] == "ok" for r in others), "the env is rebuilt after an error; later seeds run normally"
    task = results["per_task"][FAKE_TASKS[0]]
    assert task["errors"] == 1 and task["episodes"] == 7 and task["successes"] == 5, "errors are not failures"
    assert code == 0


def test_policy_exception_and_obs_mutation_are_errors(tmp_path: Path, run_fake) -> None:
    _, records, _ = run_fake(tmp_path / "a", policy_kw={"fail_on_call": 5}, tasks=FAKE_TASKS[:1])
    assert [r["status"] for r in records].count("error") == 1  # the policy's 5th call overall
    assert "GoalPolicy: injected failure" in next(r for r in records if r["status"] == "error")["error"]
    _, records, _ = run_fake(tmp_path / "b", policy_kw={"mutate": True}, tasks=FAKE_TASKS[:1], seeds="0:2")
    assert all(r["status"] == "error" and "read-only" in r["error"] for r in records)


def test_mismatch_raises_before_any_episode(tmp_path: Path) -> None:
    calls = []

    def env_factory(task, **kw):
        calls.append(task)
        return make_fake_env(task, **kw)

    class JointPolicy(GoalPolicy):
        def __init__(self):
            super().__init__()
            self.metadata = PolicyMetadata(name="joint", control_mode="pd_joint_pos")

    out = tmp_path / "o"
    with pytest.raises(PolicyMismatchError, match="control_mode"):
        run_bench(fake_config(out), env_factory=env_factory, policy_factory=JointPolicy)
    sized = functools.partial(make_goal_policy, cameras=("head",), image_size=224)
    with pytest.raises(PolicyMismatchError, match="image_size"):
        run_bench(fake_config(out, image_size=128), env_factory=env_factory, policy_factory=sized)
    assert calls == [] and not (out / "episodes.jsonl").exists()


def test_policy_reset_before_every_episode(tmp_path: Path, run_fake) -> None:
    policy = GoalPolicy()
    run_fake(tmp_path / "a", policy_factory=lambda: policy, tasks=FAKE_TASKS[:1])
    assert policy.resets == 8
    _, records, _ = run_fake(tmp_path / "b", policy_factory=make_forgetful_policy)
    assert [(r["success_once"], r["success_at_end"]) for r in records] == [_expected(r["seed"]) for r in records]


@pytest.mark.parametrize("num_envs", [3, 8])
def test_batched_sub_envs_equal_serial(tmp_path: Path, run_fake, num_envs: int) -> None:
    """The GPU path's bookkeeping (B sub-envs, per-env ends) on the fake env: same per-episode outcomes."""
    _, serial, _ = run_fake(tmp_path / "serial", policy_kw={"chunk_size": 2})
    _, batched, res = run_fake(tmp_path / "batched", policy_kw={"chunk_size": 2}, num_envs=num_envs)
    strip = lambda recs: {k: {f: v for f, v in r.items() if f != "policy_calls"} for k, r in _outcomes(recs).items()}  # noqa: E731
    assert strip(serial) == strip(batched)
    for r in batched:  # a sub-env's calls are those made while its episode ran
        assert r["policy_calls"] == math.ceil(r["episode_len"] / 2)
    assert res["overall"]["successes"] == 12


def test_resume_skips_finished_and_checks_settings(tmp_path: Path, run_fake) -> None:
    out = tmp_path / "o"
    _, first, _ = run_fake(out, seeds="0:4")
    with pytest.raises(ValueError, match="--resume"):
        run_fake(out, seeds="0:8")
    with pytest.raises(ValueError, match="post_success_steps: was 10, now 3"):
        run_fake(out, seeds="0:8", resume=True, post_success_steps=3)
    _, records, results = run_fake(out, seeds="0:8", resume=True)
    keys = [(r["task"], r["seed"]) for r in records]
    assert len(keys) == len(set(keys)) == 16
    assert records[: len(first)] == first, "finished episodes are kept as they were"
    assert results["overall"]["episodes"] == 16 and results["throughput"]["episodes"] == 8


class _WeightsPolicy(GoalPolicy):
    """GoalPolicy that reports a weights digest, as checkpoint policies do."""

    def __init__(self, sha256: str):
        super().__init__()
        self.metadata = dataclasses.replace(self.metadata, weights_digest=sha256)


def test_resume_refuses_other_weights_under_the_same_policy_string(tmp_path: Path, run_fake) -> None:
    out = tmp_path / "o"
    run_fake(out, seeds="0:2", policy_factory=functools.partial(_WeightsPolicy, "aaa"))
    with pytest.raises(ValueError, match="policy_sha256: was 'aaa', now 'bbb'"):
        run_fake(out, seeds="0:4", resume=True, policy_factory=functools.partial(_WeightsPolicy, "bbb"))
    _, records, _ = run_fake(out, seeds="0:4", resume=True, policy_factory=functools.partial(_WeightsPolicy, "aaa"))
    assert len(records) == 2 * 4


def test_retry_errors_replaces_error_records(tmp_path: Path, run_fake) -> None:
    out = tmp_path / "o"
    _, records, _ = run_fake(out, env_kw={"fail_seeds": (0,)}, tasks=FAKE_TASKS[:1], seeds="0:3")
    assert [r["status"] for r in records] == ["error", "ok", "ok"]
    _, records, _ = run_fake(out, tasks=FAKE_TASKS[:1], seeds="0:3", resume=True)
    assert [r["status"] for r in records] == ["error", "ok", "ok"], "plain --resume keeps error records"
    _, records, results = run_fake(out, tasks=FAKE_TASKS[:1], seeds="0:3", resume=True, retry_errors=True)
    assert sorted((r["seed"], r["status"]) for r in records) == [(0, "ok"), (1, "ok"), (2, "ok")]
    assert results["overall"]["errors"] == 0


def test_fail_under(tmp_path: Path, run_fake) -> None:
    assert run_fake(tmp_path / "a", fail_under=0.7)[0] == 0  # 75 %
    assert run_fake(tmp_path / "b", fail_under=0.8)[0] == 1


def test_num_envs_without_cuda_is_refused_before_any_episode(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="needs ManiSkill's GPU simulator"):
        run_bench(fake_config(tmp_path / "o", num_envs=2), policy_factory=make_goal_policy)
    assert not (tmp_path / "o" / "episodes.jsonl").exists()


def test_resume_accepts_another_path_to_the_same_checkpoint_weights(tmp_path: Path, run_fake) -> None:
    out = tmp_path / "o"
    factory = functools.partial(_WeightsPolicy, "aaa")
    run_fake(out, seeds="0:2", policy="checkpoint:RUN/checkpoints/last", policy_factory=factory)
    # `last` moved on after more training: the same weights are now reached as step_N
    _, records, _ = run_fake(
        out, seeds="0:3", resume=True, policy="checkpoint:RUN/checkpoints/step_5", policy_factory=factory
    )
    assert len(records) == 2 * 3
    with pytest.raises(ValueError, match="policy: was"):  # other inference options are another policy
        run_fake(
            out,
            seeds="0:3",
            resume=True,
            policy="checkpoint:RUN/checkpoints/step_5?dtype=bfloat16",
            policy_factory=factory,
        )
    other = functools.partial(_WeightsPolicy, "bbb")
    with pytest.raises(ValueError, match="policy_sha256"):
        run_fake(out, seeds="0:3", resume=True, policy="checkpoint:RUN/checkpoints/step_6", policy_factory=other)
