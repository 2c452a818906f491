"""The policy server behind ``vla serve``: the openpi WebSocket + msgpack protocol on asyncio ``websockets``.

Protocol (openpi ``src/openpi/serving/websocket_policy_server.py`` and the client it serves,
``packages/openpi-client/src/openpi_client/websocket_client_policy.py``):

1. The client opens a WebSocket (no compression). ``GET /healthz`` instead answers ``200 OK`` (no key needed).
   With an API key configured, the opening request must carry ``Authorization: Api-Key KEY`` (what
   ``WebsocketClientPolicy(api_key=KEY)`` sends); otherwise the handshake is refused with HTTP 401.
2. The server sends one binary frame: msgpack of :meth:`PolicyServer.metadata` (the PolicyMetadata fields,
   chunk size, action layout, cameras, image size, norm mode, checkpoint sha256, accepted key conventions).
3. Then strictly one reply per request: a binary msgpack observation (``policies.serving.keys``) gets
   ``{"actions": (H, 14) float32, "server_timing": {"infer_ms", "queue_ms", "batch_size", "prev_total_ms"}}``;
   a batched observation (leading B) gets ``(B, H, 14)`` actions.
4. A bad request (undecodable frame, text frame, missing camera, wrong dtype/shape, NaN state) or a policy error
   gets one *text* frame with a one-line reason naming the key and expected vs actual -- the openpi client raises
   ``RuntimeError`` with it -- and the connection is closed with code 1011. Tracebacks are logged here, never sent.
   Frames above ``max_message_mb`` close the connection with code 1009. Other connections are not affected.

Arrays use openpi's msgpack_numpy encoding (``policies.serving.protocol``; no pickle). Concurrent requests are
merged by :class:`policies.serving.batching.DynamicBatcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import itertools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from policies.serving.batching import DynamicBatcher
from policies.serving.config import ServeConfig
from policies.serving.keys import ALOHA_CAMERAS, KEY_CONVENTIONS, ObservationError, to_observation
from policies.serving.protocol import ProtocolError, packb, unpackb

log = logging.getLogger("policies.serving")
CLOSE_INTERNAL_ERROR = 1011
"""The close code after an error text frame (openpi's server closes with INTERNAL_ERROR too)."""
HEALTH_PATH = "/healthz"
MAX_REASON_BYTES = 120  # a WebSocket close reason holds at most 123 bytes of UTF-8


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def policy_metadata_dict(meta: Any, config: ServeConfig) -> dict[str, Any]:
    """The metadata frame's contents for a policy with :class:`policies.base.PolicyMetadata` ``meta``."""
    extra = dict(meta.extra or {})
    return {
        "server": "vla-harness",
        "protocol": "openpi-websocket-msgpack",
        "name": meta.name,
        "cameras": list(meta.cameras),
        "chunk_size": int(meta.chunk_size),
        "action_dim": int(meta.action_dim),
        "action_layout": list(meta.action_layout),
        "control_mode": meta.control_mode,
        "image_size": meta.image_size,
        "uses_privileged_state": bool(meta.uses_privileged_state),
        "tasks": list(meta.tasks),
        "trained_visual_quality": list(meta.trained_visual_quality),
        "norm_mode": extra.get("norm_mode"),
        "sha256": meta.weights_digest or extra.get("sha256"),
        "observation_keys": list(KEY_CONVENTIONS),
        "aloha_cameras": dict(ALOHA_CAMERAS),
        "batched": True,
        "max_batch_size": config.max_batch_size,
        "extra": _json_safe(extra),
    }


class PolicyServer:
    """Serves one policy to any number of connections (see the module docstring).

    Args:
        policy: any :class:`policies.base.Policy` that does not read privileged simulator state.
        config: host, port, API key, batching and size limits.

    Raises:
        ValueError: the policy reads privileged state (an observation on the wire has none).
    """

    def __init__(self, policy: Any, config: ServeConfig) -> None:
        meta = policy.metadata
        if meta.uses_privileged_state:
            raise ValueError(
                f"policy {meta.name!r} reads privileged simulator state, which an observation on the "
                f"wire does not carry: it cannot be served"
            )
        self.policy, self.config, self.meta = policy, config, meta
        self._metadata_frame = packb(policy_metadata_dict(meta, config))
        self._ids = itertools.count(1)
        self.batcher: DynamicBatcher | None = None
        self.port: int | None = None
        self.connections_opened = 0
        """Connections accepted so far (for tests and logs)."""

    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path.split("?", 1)[0] == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        key = self.config.api_key
        if key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {key}".encode()):
                log.warning("refused a connection from %s: missing or wrong API key", connection.remote_address)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    def _decode(self, message: Any) -> tuple[Any, bool]:
        if isinstance(message, str):
            raise ProtocolError("expected a binary msgpack frame, got a text frame")
        raw = unpackb(message)
        return to_observation(raw, self.meta.cameras, self.meta.image_size, self.meta.action_dim)

    async def _fail(self, ws: Any, cid: int, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)
            reason = text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
            await ws.close(code=CLOSE_INTERNAL_ERROR, reason=reason)
        log.info("connection %d closed after an error", cid)

    async def _answer(self, ws: Any, cid: int, message: Any, prev_total_ms: float | None) -> float | None:
        """Reply to one request; returns its total ms, or None when the connection was closed with an error."""
        t0 = time.perf_counter()
        try:
            obs, batched = self._decode(message)
        except (ProtocolError, ObservationError) as err:
            log.warning("connection %d: bad request: %s", cid, err)
            await self._fail(ws, cid, f"bad observation: {err}")
            return None
        try:
            result = await self.batcher.submit(obs)
        except Exception as err:  # noqa: BLE001 -- logged with its traceback; the client gets one line
            log.exception("connection %d: the policy raised", cid)
            await self._fail(ws, cid, f"policy error: {type(err).__name__}: {err}".splitlines()[0])
            return None
        timing = {"infer_ms": result.infer_ms, "queue_ms": result.queue_ms, "batch_size": result.batch_size}
        if prev_total_ms is not None:
            timing["prev_total_ms"] = prev_total_ms
        await ws.send(packb({"actions": result.actions if batched else result.actions[0], "server_timing": timing}))
        return (time.perf_counter() - t0) * 1000.0

    async def handler(self, ws: Any) -> None:
        """One connection: metadata frame, then request/response until the client leaves or errs."""
        from websockets.exceptions import ConnectionClosed

        cid = next(self._ids)
        self.connections_opened += 1
        log.info("connection %d from %s opened", cid, ws.remote_address)
        prev: float | None = None
        try:
            await ws.send(self._metadata_frame)
            async for message in ws:
                prev = await self._answer(ws, cid, message, prev)
                if prev is None:
                    return
        except ConnectionClosed as err:
            log.info("connection %d lost: %s", cid, err)
        except Exception:  # noqa: BLE001 -- a server bug: logged with its traceback, the client gets one line
            log.exception("connection %d: internal server error", cid)
            await self._fail(ws, cid, "internal server error (see the server log)")
        else:
            log.info("connection %d closed by the client", cid)

    async def serve(self, stop: asyncio.Event, ready: Any = None) -> None:
        """Serve until ``stop`` is set; ``ready(host, port)`` is called once the socket is bound."""
        from websockets.asyncio.server import serve

        cfg = self.config
        self.batcher = DynamicBatcher(self.policy.predict_action_chunk, cfg.max_batch_size, cfg.max_wait_ms)
        await self.batcher.start()
        try:
            async with serve(
                self.handler,
                cfg.host,
                cfg.port,
                process_request=self._process_request,
                compression=None,
                max_size=cfg.max_message_bytes,
            ) as server:
                self.port = int(next(iter(server.sockets)).getsockname()[1])
                if ready is not None:
                    ready(cfg.host, self.port)
                await stop.wait()
        finally:
            await self.batcher.stop()


def bind_warning(cfg: ServeConfig) -> str | None:
    """The warning printed when ``cfg.host`` is not a loopback address (None when it is)."""
    if cfg.is_loopback:
        return None
    who = "" if cfg.api_key else " by anyone (no --api-key)"
    return f"WARNING: vla serve binds {cfg.host}: the policy is reachable from the network{who}"


def run_serve(cfg: ServeConfig) -> int:
    """Body of ``vla serve``: build the policy, serve it until SIGINT/SIGTERM; returns the exit status."""
    from policies.base import make_policy

    logging.basicConfig(
        level=cfg.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    warning = bind_warning(cfg)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    server = PolicyServer(make_policy(cfg.policy), cfg)

    def ready(host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(
            f"vla serve: {server.meta.name} on ws://{shown}:{port} (health: http://{shown}:{port}{HEALTH_PATH}, "
            f"chunk {server.meta.chunk_size} x {server.meta.action_dim}, cameras {list(server.meta.cameras)})",
            flush=True,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop, ready)

    asyncio.run(main())
    log.info("server stopped")
    return 0


class ServerThread:
    """A :class:`PolicyServer` on a background thread with its own event loop (tests, benchmarks, notebooks).

    ``with ServerThread(policy, ServeConfig(policy="x", port=0)) as srv: ... srv.url ...``
    """

    def __init__(self, policy: Any, config: ServeConfig) -> None:
        self.server = PolicyServer(policy, config)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="vla-serve", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.serve(self._stop, lambda host, port: self._ready.set())

        try:
            asyncio.run(run())
        except BaseException as err:  # noqa: BLE001 -- re-raised in start()
            self._error = err
            self._ready.set()

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` of the running server."""
        return f"ws://{self.server.config.host}:{self.server.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start and wait until the socket is bound.

        Raises:
            RuntimeError: the server did not start (its error is chained).
        """
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"policy server did not start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def serving(policy: Any, **config: Any) -> Iterator[ServerThread]:
    """``with serving(policy, port=0, max_batch_size=1) as srv:`` -- a ServerThread with a ServeConfig."""
    config.setdefault("port", 0)
    with ServerThread(policy, ServeConfig(policy=policy.metadata.name, **config)) as srv:
        yield srv
