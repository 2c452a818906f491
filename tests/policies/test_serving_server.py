"""The policy server in-process with a fast fake policy: metadata frame, replies, health check, API key, error
frames + close 1011, the frame size limit, dynamic batching (merged, identical to unbatched, errors isolated) and
the config checks. The real checkpoint and the real openpi client: test_serving_openpi.py."""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import numpy as np
import pytest
from serving_fixtures import SumPolicy
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from policies.base import Observation, PolicyMetadata
from policies.serving.batching import DynamicBatcher
from policies.serving.config import ServeConfig
from policies.serving.protocol import packb, unpackb
from policies.serving.server import PolicyServer, bind_warning, serving


def _request(seed: int, instruction: str = "lift") -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {c: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for c in ("head", "left_wrist")},
        "proprio": rng.normal(size=14).astype(np.float32),
        "instruction": instruction,
    }


def _expected(request: dict) -> np.ndarray:
    obs = Observation(
        images={k: v[None] for k, v in request["images"].items()},
        proprio=request["proprio"][None],
        instruction=[request["instruction"]],
    )
    return SumPolicy().predict_action_chunk(obs)[0]


def _infer(ws, request: dict) -> dict:
    ws.send(packb(request))
    reply = ws.recv(timeout=10)
    assert isinstance(reply, bytes), f"expected actions, got the error frame {reply!r}"
    return unpackb(reply)


def test_metadata_then_replies_and_healthz() -> None:
    with serving(SumPolicy()) as srv, connect(srv.url, compression=None) as ws:
        md = unpackb(ws.recv(timeout=10))
        assert md["cameras"] == ["head", "left_wrist"] and md["chunk_size"] == 4 and md["image_size"] == 16
        assert md["action_dim"] == 14 and len(md["action_layout"]) == 14 and md["action_layout"][0] == "left_x"
        assert md["sha256"] == "ab" * 32 and md["norm_mode"] == "bounds_q99" and md["control_mode"] == "pd_ee_pose"
        assert md["trained_visual_quality"] == ["fast"] and md["uses_privileged_state"] is False
        assert md["observation_keys"] == ["native", "aloha"] and md["batched"] is True
        for seed in range(3):
            req = _request(seed)
            out = _infer(ws, req)
            assert out["actions"].shape == (4, 14) and out["actions"].dtype == np.float32
            np.testing.assert_array_equal(out["actions"], _expected(req))
            assert out["server_timing"]["infer_ms"] >= 0 and out["server_timing"]["batch_size"] == 1
        assert "prev_total_ms" in out["server_timing"]
        batched = {
            "images": {c: np.stack([_request(s)["images"][c] for s in (0, 1)]) for c in ("head", "left_wrist")},
            "proprio": np.stack([_request(s)["proprio"] for s in (0, 1)]),
            "instruction": ["lift", "lift"],
        }
        out = _infer(ws, batched)
        assert out["actions"].shape == (2, 4, 14)
        np.testing.assert_array_equal(out["actions"][1], _expected(_request(1)))
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server.port}/healthz", timeout=10) as resp:
            assert resp.status == 200 and resp.read() == b"OK\n"


def _error_frame(url: str, frame) -> tuple[str, int]:
    with connect(url, compression=None) as ws:
        ws.recv(timeout=10)
        ws.send(frame)
        text = ws.recv(timeout=10)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        return text, closed.value.rcvd.code


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"\x93\x01", "bad observation: undecodable msgpack frame"),
        ("a text frame", "bad observation: expected a binary msgpack frame, got a text frame"),
        (packb({"images": {}, "proprio": np.zeros(14), "instruction": "x"}), "images.head: missing camera"),
        (packb({**_request(0), "proprio": np.full(14, np.nan)}), "proprio: expected finite values"),
        (packb({**_request(0), "instruction": "please explode"}), "policy error: RuntimeError: instruction contains"),
    ],
)
def test_errors_get_one_text_frame_then_close_1011_and_the_server_goes_on(frame, message) -> None:
    with serving(SumPolicy()) as srv:
        text, code = _error_frame(srv.url, frame)
        assert isinstance(text, str) and message in text
        assert "Traceback" not in text and "second line" not in text and "\n" not in text
        assert code == 1011
        with connect(srv.url, compression=None) as ws:  # the next client is served
            ws.recv(timeout=10)
            np.testing.assert_array_equal(_infer(ws, _request(5))["actions"], _expected(_request(5)))


def test_frames_over_the_size_limit_close_with_1009() -> None:
    with serving(SumPolicy(), max_message_mb=0.5) as srv:
        with connect(srv.url, compression=None, max_size=None) as ws:
            ws.recv(timeout=10)
            with pytest.raises(ConnectionClosed) as closed:
                ws.send(b"\x00" * (1 << 20))
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1009
        with connect(srv.url, compression=None) as ws:
            ws.recv(timeout=10)
            assert _infer(ws, _request(1))["actions"].shape == (4, 14)


def test_api_key_is_required_when_configured() -> None:
    with serving(SumPolicy(), api_key="s3cret") as srv:
        for headers in (None, {"Authorization": "Api-Key wrong"}, {"Authorization": "s3cret"}):
            with pytest.raises(InvalidStatus) as refused:
                connect(srv.url, additional_headers=headers)
            assert refused.value.response.status_code == 401
        with connect(srv.url, additional_headers={"Authorization": "Api-Key s3cret"}) as ws:
            assert unpackb(ws.recv(timeout=10))["chunk_size"] == 4
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server.port}/healthz", timeout=10) as resp:
            assert resp.status == 200, "the health check needs no key"


def test_concurrent_requests_are_merged_and_equal_unbatched_calls() -> None:
    policy = SumPolicy(delay_s=0.05)
    results, errors = {}, []

    def client(i: int) -> None:
        try:
            with connect(srv.url, compression=None) as ws:
                ws.recv(timeout=10)
                for k in range(3):
                    req = _request(10 * i + k, instruction="lift" * (i + 1))
                    results[(i, k)] = (_infer(ws, req), _expected(req))
        except Exception as err:  # noqa: BLE001 -- reported below
            errors.append(err)

    with serving(policy, max_batch_size=4, max_wait_ms=20.0) as srv:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors and len(results) == 12
    for (i, k), (out, expected) in results.items():
        np.testing.assert_array_equal(out["actions"], expected, err_msg=f"client {i} request {k}")
    assert max(policy.batch_sizes) > 1, f"no request was merged: {policy.batch_sizes}"
    assert max(policy.batch_sizes) <= 4 and sum(policy.batch_sizes) == 12
    assert any(out["server_timing"]["batch_size"] > 1 for out, _ in results.values())


def test_a_failing_request_in_a_merged_batch_fails_alone() -> None:
    policy = SumPolicy(delay_s=0.0)

    async def main() -> list:
        batcher = DynamicBatcher(policy.predict_action_chunk, max_batch_size=8, max_wait_ms=50.0)
        await batcher.start()
        words = ["lift", "explode now", "raise"]
        images = {c: np.zeros((1, 16, 16, 3), np.uint8) for c in ("head", "left_wrist")}
        obs = [
            Observation(images=images, proprio=np.full((1, 14), float(i), np.float32), instruction=[w])
            for i, w in enumerate(words)
        ]
        out = await asyncio.gather(*(batcher.submit(o) for o in obs), return_exceptions=True)
        await batcher.stop()
        return out

    out = asyncio.run(main())
    assert isinstance(out[1], RuntimeError) and "explode" in str(out[1])
    assert out[0].actions.shape == (1, 4, 14) and out[2].actions[0, 0, 0] == pytest.approx(2.0 + 5.0)
    assert policy.batch_sizes[0] == 3, "the three requests were first tried as one call"


def test_policies_reading_privileged_state_are_not_served() -> None:
    meta = PolicyMetadata(name="expert", uses_privileged_state=True)
    fake = type("P", (), {"metadata": meta})()
    with pytest.raises(ValueError, match="privileged simulator state"):
        PolicyServer(fake, ServeConfig(policy="scripted"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"port": 70000}, "port must be in"),
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
        ({"max_wait_ms": -1.0}, "max_wait_ms"),
        ({"max_message_mb": 0.0}, "max_message_mb"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"api_key": " spaced "}, "api_key must be"),
    ],
)
def test_serve_config_checks_name_the_field(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        ServeConfig(policy="x", **kwargs)
    assert "spaced" not in str(err.value), "an API key is never echoed"


def test_only_loopback_hosts_count_as_local() -> None:
    assert ServeConfig(policy="x").is_loopback and ServeConfig(policy="x", host="::1").is_loopback
    assert not ServeConfig(policy="x", host="0.0.0.0").is_loopback
    assert ServeConfig(policy="x", max_message_mb=1.0).max_message_bytes == 1 << 20
    assert bind_warning(ServeConfig(policy="x")) is None
    assert "reachable from the network by anyone" in bind_warning(ServeConfig(policy="x", host="0.0.0.0"))
    assert "by anyone" not in bind_warning(ServeConfig(policy="x", host="0.0.0.0", api_key="k"))
