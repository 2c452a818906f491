"""`vla serve` with a tiny checkpoint written by the test, on a free loopback port, driven by the REAL openpi client
(openpi_client.WebsocketClientPolicy, ActionChunkBroker): metadata, (8, 14) actions equal to in-process
predict_action_chunk, ALOHA keys, batched requests, chunk brokering, the error path and the API key."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from serving_fixtures import (
    CAMERAS,
    CHUNK,
    VlaServe,
    aloha_request,
    assert_merged_close,
    native_request,
    sample_obs,
)

openpi_client = pytest.importorskip("openpi_client")
from openpi_client.action_chunk_broker import ActionChunkBroker  # noqa: E402
from openpi_client.base_policy import BasePolicy  # noqa: E402
from openpi_client.websocket_client_policy import WebsocketClientPolicy  # noqa: E402

# openpi-client 0.1.2 calls websockets' connect() the pre-17 way; websockets 17 warns about it (harmless)
OPENPI_WARNING = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
pytestmark = [pytest.mark.timeout(600), OPENPI_WARNING]


@pytest.fixture(scope="module")
def server(ckpt):
    with VlaServe(f"checkpoint:{ckpt}", "--max-batch-size", "4", "--max-wait-ms", "50") as srv:
        yield srv


def test_metadata_describes_the_checkpoint(server, local) -> None:
    md = WebsocketClientPolicy(host="127.0.0.1", port=server.port).get_server_metadata()
    assert md["chunk_size"] == CHUNK and md["action_dim"] == 14 and md["cameras"] == list(CAMERAS)
    assert md["image_size"] == 32 and md["action_layout"] == list(local.metadata.action_layout)
    assert md["norm_mode"] == local.metadata.extra["norm_mode"] and md["sha256"] == local.metadata.weights_digest
    assert md["name"] == local.metadata.name and md["observation_keys"] == ["native", "aloha"]


def test_infer_equals_in_process_predict_in_both_key_conventions(server, local) -> None:
    client = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    for seed in range(3):
        obs = sample_obs(1, seed=seed)
        expected = local.predict_action_chunk(obs)[0]
        for request in (native_request(obs), aloha_request(obs)):
            out = client.infer(request)
            assert out["actions"].shape == (CHUNK, 14) and out["actions"].dtype == np.float32
            np.testing.assert_allclose(out["actions"], expected, atol=1e-6, rtol=0)
            assert out["server_timing"]["infer_ms"] > 0
    outs = [local.predict_action_chunk(sample_obs(1, seed=s))[0] for s in range(3)]
    assert not np.allclose(outs[0], outs[1], atol=1e-3), "different observations must give different actions"


def test_batched_request_equals_in_process_batch(server, local) -> None:
    obs = sample_obs(3, seed=7)
    request = {
        "images": {c: np.asarray(v) for c, v in obs.images.items()},
        "proprio": np.asarray(obs.proprio),
        "instruction": list(obs.instruction),
    }
    out = WebsocketClientPolicy(host="127.0.0.1", port=server.port).infer(request)
    assert out["actions"].shape == (3, CHUNK, 14)
    np.testing.assert_allclose(out["actions"], local.predict_action_chunk(obs), atol=1e-6, rtol=0)


def test_concurrent_clients_are_merged_and_equal_single_in_process_calls(server, local) -> None:
    import threading

    obs = [sample_obs(1, seed=20 + k) for k in range(3)]  # instructions of different lengths: padded when merged
    replies: dict = {}

    def client(k: int) -> None:
        policy = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
        barrier.wait()
        replies[k] = policy.infer(native_request(obs[k]))

    barrier = threading.Barrier(3)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert max(r["server_timing"]["batch_size"] for r in replies.values()) > 1, "the requests were not merged"
    for k in range(3):
        assert_merged_close(replies[k]["actions"], local.predict_action_chunk(obs[k])[0], f"client {k}")


def test_larger_frames_are_resized_to_the_policy_size(server, local) -> None:
    import cv2

    big = sample_obs(1, seed=3, size=64)
    small = type(big)(
        images={c: np.stack([cv2.resize(v[0], (32, 32), interpolation=cv2.INTER_AREA)]) for c, v in big.images.items()},
        proprio=big.proprio,
        instruction=big.instruction,
    )
    out = WebsocketClientPolicy(host="127.0.0.1", port=server.port).infer(aloha_request(big))
    np.testing.assert_allclose(out["actions"], local.predict_action_chunk(small)[0], atol=1e-6, rtol=0)


class _Counting(BasePolicy):
    def __init__(self, inner: BasePolicy) -> None:
        self.inner, self.calls = inner, 0

    def infer(self, obs: dict) -> dict:
        self.calls += 1
        return self.inner.infer(obs)


def test_action_chunk_broker_requeries_every_8_calls(server, local) -> None:
    counting = _Counting(WebsocketClientPolicy(host="127.0.0.1", port=server.port))
    broker = ActionChunkBroker(counting, action_horizon=CHUNK)
    obs = [sample_obs(1, seed=s) for s in range(3)]
    calls = []
    for step in range(3 * CHUNK):
        current = obs[step // CHUNK]
        action = broker.infer(native_request(current))["actions"]
        calls.append(counting.calls)
        assert action.shape == (14,)
        expected = local.predict_action_chunk(current)[0, step % CHUNK]
        np.testing.assert_allclose(action, expected, atol=1e-6, rtol=0, err_msg=f"step {step}")
    assert calls == [1 + s // CHUNK for s in range(3 * CHUNK)], "one query per 8 actions"


@pytest.mark.parametrize(
    "mutate, names",
    [
        (lambda r: r["images"].pop("cam_left_wrist"), "images.cam_left_wrist: missing camera"),
        (lambda r: r.update(state=np.full(14, np.nan, np.float32)), "state: expected finite values"),
        (
            lambda r: r["images"].update(cam_high=np.zeros((3, 32, 32), np.float32)),
            "images.cam_high: expected dtype uint8",
        ),
    ],
)
def test_bad_observation_raises_in_the_client_naming_the_key(server, mutate, names) -> None:
    client = WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    request = aloha_request(sample_obs(1))
    mutate(request)
    with pytest.raises(RuntimeError, match="Error in inference server") as err:
        client.infer(request)
    assert names in str(err.value) and "Traceback" not in str(err.value)
    fresh = WebsocketClientPolicy(host="127.0.0.1", port=server.port)  # the server keeps serving
    assert fresh.infer(native_request(sample_obs(1)))["actions"].shape == (CHUNK, 14)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as resp:
        assert resp.status == 200


def test_api_key_accepted_and_refused(ckpt) -> None:
    from websockets.exceptions import InvalidStatus

    with VlaServe(f"checkpoint:{ckpt}", "--api-key", "k3y-for-tests") as srv:
        ok = WebsocketClientPolicy(host="127.0.0.1", port=srv.port, api_key="k3y-for-tests")
        assert ok.infer(native_request(sample_obs(1)))["actions"].shape == (CHUNK, 14)
        for wrong in (None, "other"):
            with pytest.raises(InvalidStatus, match="401"):
                WebsocketClientPolicy(host="127.0.0.1", port=srv.port, api_key=wrong)
        assert "k3y-for-tests" not in srv.log(), "the key is never logged"
