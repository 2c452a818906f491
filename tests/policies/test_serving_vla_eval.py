"""Our checkpoint as a vla-eval model server (HarnessModelServer on vla-eval's PredictModelServer), driven by
vla-eval's OWN client code (vla_eval.connection.Connection: HELLO, EPISODE_START, OBSERVATION -> ACTION): chunked
actions equal to in-process predictions, re-query when the chunk is used up, batched sessions, the error path,
and the `python -m policies.serving.vla_eval` entry point."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from serving_fixtures import CHUNK, REPO, assert_merged_close, sample_obs, server_env

vla_eval = pytest.importorskip("vla_eval")
import anyio  # noqa: E402  (a dependency of vla-eval)
from anyio.from_thread import start_blocking_portal  # noqa: E402
from vla_eval.connection import Connection  # noqa: E402
from vla_eval.model_servers.serve import serve_async  # noqa: E402

from policies.serving.vla_eval import HarnessModelServer  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def _serve(model_server):
    """(portal context, ws URL) with vla-eval's serve_async running in a background event loop."""
    portal_cm = start_blocking_portal()
    portal = portal_cm.__enter__()
    future, port = portal.start_task(serve_async, model_server, "127.0.0.1", 0)
    return portal_cm, future, f"ws://127.0.0.1:{port}"


def _wire(obs, i=0, robotwin=False) -> dict:
    names = {"head": "head_camera", "left_wrist": "left_camera"} if robotwin else {c: c for c in obs.images}
    return {
        "images": {names[c]: np.asarray(v[i]) for c, v in obs.images.items()},
        "task_description": obs.instruction[i],
        "state": np.asarray(obs.proprio[i], np.float64),
    }


class _BatchSizes:
    """Wraps a policy, recording the batch size of every call."""

    def __init__(self, policy) -> None:
        self.policy, self.metadata, self.sizes = policy, policy.metadata, []

    def predict_action_chunk(self, obs):
        self.sizes.append(obs.batch_size)
        return self.policy.predict_action_chunk(obs)


@pytest.fixture(scope="module")
def model_server(ckpt):
    server = HarnessModelServer(policy=f"checkpoint:{ckpt}", max_batch_size=4, max_wait_time=0.05)
    server.policy = _BatchSizes(server.policy)
    return server


@pytest.fixture(scope="module")
def served(model_server):
    portal_cm, future, url = _serve(model_server)
    yield url
    future.cancel()
    portal_cm.__exit__(None, None, None)


def test_vla_eval_client_gets_chunked_actions_equal_to_in_process(served, local) -> None:
    a, b = sample_obs(1, seed=1), sample_obs(1, seed=2)
    chunk_a, chunk_b = local.predict_action_chunk(a)[0], local.predict_action_chunk(b)[0]

    async def episode():
        async with Connection(served, timeout=120) as conn:
            info = conn.server_info
            await conn.start_episode({"task": {"name": "lift"}})
            # step 0 queries with obs a; steps 1..7 are served from that chunk although they send obs b;
            # step 8 (chunk used up) queries again with obs b -- in RoboTwin's camera names this time.
            acts = [(await conn.act(_wire(a)))["actions"]]
            acts += [(await conn.act(_wire(b, robotwin=k % 2 == 0)))["actions"] for k in range(CHUNK)]
            await conn.end_episode({"success": False})
            return info, acts

    info, acts = anyio.run(episode)
    assert info["model_server"] == "HarnessModelServer"
    assert info["action_spec"]["actions"]["dims"] == 14 and "state" in info["observation_spec"]
    assert all(x.shape == (14,) for x in acts)
    np.testing.assert_allclose(np.stack(acts[:CHUNK]), chunk_a, atol=1e-6, rtol=0)
    np.testing.assert_allclose(acts[CHUNK], chunk_b[0], atol=1e-6, rtol=0)


def test_concurrent_sessions_are_batched_and_equal_in_process(served, model_server, local) -> None:
    obs = [sample_obs(1, seed=10 + k) for k in range(3)]
    results: dict = {}

    async def session(k):
        async with Connection(served, timeout=120) as conn:
            await conn.start_episode({"task": {"name": "lift"}})
            results[k] = (await conn.act(_wire(obs[k])))["actions"]

    async def main():
        async with anyio.create_task_group() as tg:
            for k in range(3):
                tg.start_soon(session, k)

    before = len(model_server.policy.sizes)
    anyio.run(main)
    assert max(model_server.policy.sizes[before:]) > 1, "vla-eval did not batch the sessions"
    for k in range(3):  # vla-eval merges the sessions into one predict_batch call: float32 rounding apart
        assert_merged_close(results[k], local.predict_action_chunk(obs[k])[0, 0], f"session {k}")


def test_bad_observation_is_a_vla_eval_error_naming_the_camera(served) -> None:
    wire = _wire(sample_obs(1))
    del wire["images"]["left_wrist"]

    async def episode():
        async with Connection(served, timeout=120) as conn:
            await conn.start_episode({"task": {"name": "lift"}})
            with pytest.raises(RuntimeError, match=r"Server error: .*missing camera\(s\) \['left_wrist'\]"):
                await conn.act(wire)
            ok = await conn.act(_wire(sample_obs(1)))  # the session goes on
            return ok["actions"].shape

    assert anyio.run(episode) == (14,)


def test_module_entry_point_takes_the_policy_spec() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "policies.serving.vla_eval", "--help"],
        cwd=REPO,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--args.policy" in out.stdout and "--address" in out.stdout
