"""The `remote:ws://` policy against our server (in-process, fake policy) and against a minimal foreign openpi
server: metadata, keys, batching, chunk size from metadata / option / a probe reply, errors, reconnection."""

from __future__ import annotations

import numpy as np
import pytest
from serving_fixtures import ForeignServer, SumPolicy

from policies.base import Observation, make_policy
from policies.serving.remote import RemotePolicy, RemotePolicyError, parse_remote_spec
from policies.serving.server import serving


def _obs(n: int = 1, seed: int = 0, size: int = 16, cameras=("head", "left_wrist")) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(
        images={c: rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for c in cameras},
        proprio=rng.normal(size=(n, 14)).astype(np.float32),
        instruction=["lift"] * n,
    )


def test_remote_policy_mirrors_the_served_policy() -> None:
    local = SumPolicy()
    with serving(SumPolicy()) as srv:
        remote = make_policy(f"remote:{srv.url}")
        meta = remote.metadata
        assert meta.name == f"remote:{srv.url}" and meta.cameras == ("head", "left_wrist")
        assert meta.chunk_size == 4 and meta.image_size == 16 and meta.weights_digest == "ab" * 32
        assert meta.trained_visual_quality == ("fast",) and meta.checkpoint_path is None
        assert remote.keys == "native" and remote.batched_requests and not remote.chw
        for n in (1, 3):
            obs = _obs(n, seed=n)
            chunk = remote.predict_action_chunk(obs)
            assert chunk.shape == (n, 4, 14) and chunk.dtype == np.float32
            np.testing.assert_array_equal(chunk, local.predict_action_chunk(obs))
        assert srv.server.batcher.calls == 2, "a batch of 3 is one batched request to our server"
        aloha = make_policy(f"remote:{srv.url}?keys=aloha&chunk=2")
        assert aloha.chw and aloha.metadata.chunk_size == 2
        np.testing.assert_array_equal(aloha.predict_action_chunk(_obs(1)), local.predict_action_chunk(_obs(1))[:, :2])


def test_foreign_server_with_empty_metadata_needs_cameras_and_is_probed_for_the_chunk() -> None:
    with ForeignServer() as srv:
        with pytest.raises(ValueError, match=r"names no cameras; pass \?cameras="):
            make_policy(f"remote:{srv.url}")
        remote = make_policy(f"remote:{srv.url}?cameras=head,right_wrist&image_size=48")
        assert remote.keys == "aloha" and remote.chw and remote.metadata.chunk_size == 10, "probed: (10, 14) reply"
        probe = srv.requests[-1]
        assert set(probe) == {"images", "state", "prompt"} and set(probe["images"]) == {"cam_high", "cam_right_wrist"}
        assert probe["images"]["cam_high"].shape == (3, 48, 48)
        chunk = remote.predict_action_chunk(_obs(2, size=48, cameras=("head", "right_wrist")))
        assert chunk.shape == (2, 10, 14) and [r["state"].shape for r in srv.requests[-2:]] == [(14,), (14,)]
        assert chunk[0, 0, 0] != chunk[1, 0, 0], "one unbatched request per sample"
        short = make_policy(f"remote:{srv.url}?cameras=head&chunk=4&keys=native&chw=0")
        assert short.predict_action_chunk(_obs(1, cameras=("head",))).shape == (1, 4, 14)
        assert srv.requests[-1]["images"]["head"].shape == (16, 16, 3) and "proprio" in srv.requests[-1]


def test_replies_of_the_wrong_shape_are_errors() -> None:
    with ForeignServer(metadata={"cameras": ["head"], "chunk_size": 12}) as srv:
        remote = make_policy(f"remote:{srv.url}")
        with pytest.raises(RemotePolicyError, match=r"returned actions of shape \(10, 14\), expected \(12, 14\)"):
            remote.predict_action_chunk(_obs(1, cameras=("head",)))
    with (
        ForeignServer(metadata={"cameras": ["head"]}, reply=lambda r, n: np.zeros((5, 7), np.float32)) as srv,
        pytest.raises(RemotePolicyError, match=r"\(5, 7\)"),
    ):
        make_policy(f"remote:{srv.url}?chunk=5").predict_action_chunk(_obs(1, cameras=("head",)))


def test_lost_connection_raises_and_reset_reconnects() -> None:
    with ForeignServer(metadata={"cameras": ["head"], "chunk_size": 10}, drop_on=(2,)) as srv:
        remote = make_policy(f"remote:{srv.url}")
        obs = _obs(1, cameras=("head",))
        assert remote.predict_action_chunk(obs)[0, 0, 0] == 1.0
        with pytest.raises(RemotePolicyError, match=f"remote:{srv.url}: connection lost"):
            remote.predict_action_chunk(obs)
        remote.reset()
        assert srv.connections == 2 and remote.predict_action_chunk(obs)[0, 0, 0] == 3.0


def test_server_errors_and_refusals_are_clear() -> None:
    with serving(SumPolicy(), api_key="k") as srv:
        with pytest.raises(RemotePolicyError, match="HTTP 401 .*api_key_env"):
            make_policy(f"remote:{srv.url}")
        remote = RemotePolicy(srv.url, api_key="k")
        bad = _obs(1)
        bad = Observation(images=bad.images, proprio=bad.proprio, instruction=["explode"])
        with pytest.raises(RemotePolicyError, match="server error: policy error: RuntimeError: instruction contains"):
            remote.predict_action_chunk(bad)
        remote.reset()  # reconnects after the server closed the connection
        assert remote.predict_action_chunk(_obs(1)).shape == (1, 4, 14)
    with pytest.raises(RemotePolicyError, match="cannot connect"):
        RemotePolicy(srv.url, timeout_s=2)


def test_reset_reconnects_after_the_server_restarted_between_episodes() -> None:
    import time

    with serving(SumPolicy()) as srv:
        remote = make_policy(f"remote:{srv.url}")
        port = srv.server.port
    time.sleep(0.2)  # the server's close reaches the client's connection
    with serving(SumPolicy(), port=port) as again:
        remote.reset()
        np.testing.assert_array_equal(remote.predict_action_chunk(_obs(1)), SumPolicy().predict_action_chunk(_obs(1)))
        assert again.server.connections_opened == 1


def test_reconnecting_to_another_policy_is_refused() -> None:
    with serving(SumPolicy()) as srv:
        remote = make_policy(f"remote:{srv.url}")
        port = srv.server.port
    other = SumPolicy()
    other.metadata = type(other.metadata)(**{**other.metadata.__dict__, "chunk_size": 6})
    with serving(other, port=port):
        remote.close()
        with pytest.raises(RemotePolicyError, match="now serves another policy .*chunk_size: was 4, now 6"):
            remote.reset()


def test_spec_options_are_checked(monkeypatch) -> None:
    assert parse_remote_spec("ws://h:1?keys=aloha&cameras=head,low&chunk=5&chw=0&timeout=3") == (
        "ws://h:1",
        {"keys": "aloha", "cameras": ("head", "low"), "chunk": 5, "chw": False, "timeout_s": 3.0},
    )
    for spec, message in [
        ("ws://h:1?colour=red", r"unknown option\(s\) \['colour'\]"),
        ("ws://h:1?chunk=0", "must be >= 1"),
        ("ws://h:1?chunk=x", "bad option value"),
        ("ws://h:1?chw=yes", "chw must be 0 or 1"),
        ("ws://h:1?timeout=-1", "timeout must be > 0"),
        ("ws://h:1?api_key_env=VLA_TEST_UNSET_KEY", "VLA_TEST_UNSET_KEY is not set"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_remote_spec(spec)
    monkeypatch.setenv("VLA_TEST_KEY", "abc")
    assert parse_remote_spec("ws://h:1?api_key_env=VLA_TEST_KEY")[1] == {"api_key": "abc"}
    with pytest.raises(ValueError, match="expected a ws://HOST:PORT"):
        make_policy("remote:http://h:1")
    with pytest.raises(ValueError, match="needs a URL"):
        make_policy("remote")
