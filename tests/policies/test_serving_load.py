"""Load and abuse test of `vla serve` (tiny checkpoint, dynamic batching on): 4 concurrent openpi clients x 200
requests in under 60 s with every reply checked against its own request and the server's memory flat; then
malformed frames, a 100 MB frame and an abrupt disconnect mid-request, after which a well-formed client is still
answered correctly."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest
from serving_fixtures import CHUNK, MERGED_RTOL, VlaServe, native_request, sample_obs, tiny_checkpoint
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from policies.base import make_policy
from policies.serving.protocol import packb

openpi_client = pytest.importorskip("openpi_client.websocket_client_policy")

# openpi-client 0.1.2 calls websockets' connect() the pre-17 way; websockets 17 warns about it (harmless)
OPENPI_WARNING = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), OPENPI_WARNING]
CLIENTS, REQUESTS, POOL = 4, 200, 16
RSS_GROWTH_MB = 16.0


@pytest.fixture(scope="module")
def setup():
    ckpt = tiny_checkpoint()
    local = make_policy(f"checkpoint:{ckpt}")
    pool = [sample_obs(1, seed=100 + k) for k in range(POOL)]
    expected = [local.predict_action_chunk(o)[0] for o in pool]
    gaps = [np.abs(expected[a] - expected[b]).max() for a in range(POOL) for b in range(a)]
    tol = MERGED_RTOL * max(float(np.abs(e).max()) for e in expected)
    assert min(gaps) > 100 * tol, "pool replies must be told apart for the mix-up check to mean anything"
    with VlaServe(f"checkpoint:{ckpt}", "--max-batch-size", "8") as srv:
        yield srv, [native_request(o) for o in pool], expected


def _client_loop(url: str, cid: int, requests: list, expected: list, n: int, failures: list) -> None:
    client = openpi_client.WebsocketClientPolicy(host=url)
    for j in range(n):
        k = (cid * 7 + j * 3) % POOL  # each client walks the pool in its own order
        out = client.infer(requests[k])["actions"]
        atol = MERGED_RTOL * float(np.abs(expected[k]).max())  # merged batches: float32 rounding (fixtures)
        if out.shape != (CHUNK, 14) or not np.allclose(out, expected[k], atol=atol, rtol=0):
            failures.append((cid, j, k, out.shape))


def _run_clients(url: str, requests: list, expected: list, n: int) -> list:
    failures: list = []
    threads = [
        threading.Thread(target=_client_loop, args=(url, c, requests, expected, n, failures)) for c in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return failures


def test_four_clients_200_requests_each_without_loss_or_mixup_and_flat_memory(setup) -> None:
    srv, requests, expected = setup
    assert _run_clients(srv.url, requests, expected, 25) == []  # warm-up: allocator pools, thread stacks
    rss_before = srv.rss_mb()
    t0 = time.monotonic()
    failures = _run_clients(srv.url, requests, expected, REQUESTS)
    wall = time.monotonic() - t0
    rss_after = srv.rss_mb()
    print(f"\n{CLIENTS} x {REQUESTS} requests in {wall:.1f} s; server RSS {rss_before:.1f} -> {rss_after:.1f} MiB")
    assert failures == [], f"{len(failures)} wrong replies, first: {failures[:3]}"
    assert wall < 60.0, f"{CLIENTS} x {REQUESTS} requests took {wall:.1f} s"
    assert rss_after - rss_before < RSS_GROWTH_MB, f"server RSS {rss_before:.1f} -> {rss_after:.1f} MiB"
    assert srv.proc.poll() is None


def _expect_error_then_close(url: str, frame, needle: str) -> None:
    with connect(url, compression=None, max_size=None) as ws:
        ws.recv(timeout=30)  # metadata
        ws.send(frame)
        text = ws.recv(timeout=30)
        assert isinstance(text, str) and needle in text and "Traceback" not in text, text
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


def test_malformed_frames_huge_frame_and_abrupt_disconnect_leave_the_server_serving(setup) -> None:
    srv, requests, expected = setup
    good = packb(requests[0])
    short = {b"__ndarray__": True, b"data": b"\x00" * 52, b"dtype": "<f4", b"shape": [14]}  # 13 floats for 14
    bad_array = packb({**requests[0], "proprio": short})
    for frame, needle in [
        (b"\xc1\xc1\xc1", "undecodable msgpack frame"),
        ('{"json": 1}', "got a text frame"),
        (packb([1, 2, 3]), "observation: expected a map"),
        (bad_array, "needs 56 bytes, got 52"),
        (good[: len(good) // 2], "undecodable msgpack frame"),
    ]:
        _expect_error_then_close(srv.url, frame, needle)

    rss = srv.rss_mb()
    with connect(srv.url, compression=None, max_size=None) as ws:  # 100 MB: refused on its header (1009)
        ws.recv(timeout=30)
        with pytest.raises((ConnectionClosed, OSError)):
            ws.send(b"\x00" * (100 << 20))
            ws.recv(timeout=30)
        assert ws.close_code == 1009, f"expected close 1009 (message too big), got {ws.close_code}"
    assert srv.rss_mb() - rss < 50, "the server must not buffer a refused frame"

    for _ in range(3):  # a request, then the TCP connection reset before the reply is read
        ws = connect(srv.url, compression=None, legacy=True)
        ws.recv(timeout=30)
        ws.send(good)
        ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.socket.close()

    time.sleep(0.5)
    assert srv.proc.poll() is None, srv.log()[-3000:]
    assert _run_clients(srv.url, requests, expected, 5) == []
    client = openpi_client.WebsocketClientPolicy(host=srv.url)
    np.testing.assert_allclose(client.infer(requests[3])["actions"], expected[3], atol=1e-6, rtol=0)  # alone: exact
    log = srv.log()
    assert "bad request" in log and "Traceback" not in log, log[-3000:]
