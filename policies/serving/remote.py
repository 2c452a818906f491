"""The ``remote:ws://HOST:PORT`` policy: any openpi-protocol policy server as a Policy of this harness.

    vla bench --policy remote:ws://127.0.0.1:8000 ...                         # a `vla serve` server
    vla bench --policy "remote:ws://gpu:8000?keys=aloha&cameras=head,left_wrist,right_wrist&chunk=25" ...  # openpi

Options (``remote:URL?key=value&...``):

* ``keys``: ``native`` (ours: images.head, proprio, instruction) or ``aloha`` (openpi's: images.cam_high, state,
  prompt; table in ``policies.serving.keys``). Default: native when the server's metadata lists it in
  ``observation_keys`` (a ``vla serve`` server), else aloha (openpi's 14-D dual-arm convention).
* ``cameras``: our camera names to send, comma-separated. Default: the metadata's ``cameras``; required otherwise.
* ``image_size``: px the env renders at. Default: the metadata's ``image_size``, else the run's default.
* ``chunk``: H, the actions used per reply (the first H; a reply with fewer is an error). Default: the metadata's
  ``chunk_size`` (or ``action_horizon``), else the length of the reply to one probe request sent on connect.
* ``chw``: ``1`` sends images as (3, H, W), ``0`` as (H, W, 3). Default: 1 with aloha keys (openpi's ALOHA
  policies transpose from CHW), else 0.
* ``timeout``: seconds to wait for a reply (default 60). ``api_key_env``: the name of an environment variable
  holding the API key, sent as ``Authorization: Api-Key KEY`` (the key itself never appears in the spec, which
  is recorded in results.json).

Per call the (B, H, W, 3) observation is sent as B unbatched requests (the openpi protocol's form; openpi servers
take one observation per request), or as one batched request when the server's metadata says ``batched`` (ours).
The replies' ``actions`` (H', 14) are cut to H and stacked to (B, H, 14) float32; the harness's chunk executor then
runs them like any policy's chunks (``--n-action-steps``, temporal ensembling).

Built on ``websockets`` (sync client) directly, not on ``openpi-client``: the wire format is the same
(``policies.serving.protocol`` is byte-identical to openpi's msgpack_numpy, tested), but openpi-client 0.1.2 has
no reply timeout, no close, no reconnect and an undeclared dependency (typing_extensions), and pulls in dm-tree;
the harness needs each of those. The tests check this client and the real ``openpi_client`` against the same
server.

Errors: a lost connection, a timeout or an error text frame from the server raises :class:`RemotePolicyError`
naming the URL and the reason; the harness records that episode as ``error`` and the run goes on. The connection
is dropped then, and ``reset()`` (called before the next episode) reconnects -- refusing a server that now serves
another policy (other metadata: cameras, chunk size, weights digest). ``vla bench --workers N`` builds one policy,
so one connection, per worker process.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from envs.layout import ACTION_DIM, ACTION_LAYOUT, CAMERAS, CONTROL_MODE
from policies.base import Observation, PolicyMetadata, register_policy
from policies.serving.keys import KEY_CONVENTIONS, from_observation
from policies.serving.protocol import ProtocolError, packb, unpackb

OPTIONS = ("keys", "cameras", "image_size", "chunk", "chw", "timeout", "api_key_env")
PROBE_IMAGE_SIZE = 224
"""Frame side of the probe request when neither the metadata nor ``image_size`` gives one (openpi's size)."""
CLOSE_TIMEOUT_S = 2.0
"""Seconds to wait for the server's side of a closing handshake (openpi's server may be busy inferring)."""
IDENTITY_FIELDS = ("cameras", "chunk_size", "action_dim", "image_size", "sha256")
"""Metadata fields that must not change when the policy reconnects."""


def _positive_int(value: Any) -> int | None:
    """``value`` when it is an int >= 1 (metadata of foreign servers may hold anything), else None."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1 else None


def _strings(value: Any) -> tuple[str, ...]:
    """The strings of a metadata list (anything else: empty)."""
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, (list, tuple)) else ()


class RemotePolicyError(RuntimeError):
    """The policy server could not be reached, went away, timed out or answered with an error."""


class RemotePolicy:
    """A policy served over the openpi protocol (see the module docstring).

    ``metadata`` comes from the server's metadata frame where it has the field (cameras, chunk_size, image_size,
    action_layout, control_mode, tasks, trained_visual_quality, ``sha256`` as ``weights_digest``, so a resumed
    ``vla bench`` checks the served weights too) and from the options otherwise.

    Args:
        url: ``ws://HOST:PORT`` (or ``wss://``).
        keys, cameras, image_size, chunk, chw: see the module docstring (None: from the server's metadata).
        timeout_s: seconds to wait for the server's metadata or a reply.
        api_key: sent as ``Authorization: Api-Key KEY`` when given.

    Raises:
        RemotePolicyError: the server cannot be reached or refuses the connection (e.g. HTTP 401).
        ValueError: a bad option, or metadata that leaves the cameras unknown.
    """

    def __init__(
        self,
        url: str,
        keys: str | None = None,
        cameras: tuple[str, ...] | None = None,
        image_size: int | None = None,
        chunk: int | None = None,
        chw: bool | None = None,
        timeout_s: float = 60.0,
        api_key: str | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"remote policy: expected a ws://HOST:PORT or wss:// URL, got {url!r}")
        self.url, self.timeout_s, self._api_key = url, float(timeout_s), api_key
        self._ws: Any = None
        self.server_metadata = self._connect()
        try:
            self._configure(keys, cameras, image_size, chunk, chw)
        except BaseException:
            self._drop()
            raise

    def _configure(
        self,
        keys: str | None,
        cameras: tuple[str, ...] | None,
        image_size: int | None,
        chunk: int | None,
        chw: bool | None,
    ) -> None:
        url, md = self.url, self.server_metadata
        self.keys = keys or ("native" if "native" in (md.get("observation_keys") or ()) else "aloha")
        if self.keys not in KEY_CONVENTIONS:
            raise ValueError(f"remote:{url}: keys must be one of {list(KEY_CONVENTIONS)}, got {self.keys!r}")
        self.chw = (self.keys == "aloha") if chw is None else bool(chw)
        self.batched_requests = bool(md.get("batched"))
        cams = tuple(cameras) if cameras else tuple(md.get("cameras") or ())
        if not cams:
            raise ValueError(f"remote:{url}: the server's metadata names no cameras; pass ?cameras=head,left_wrist")
        unknown = [c for c in cams if c not in CAMERAS]
        if unknown:
            raise ValueError(f"remote:{url}: unknown camera(s) {unknown}; known: {list(CAMERAS)}")
        size = image_size or _positive_int(md.get("image_size"))
        horizon = chunk or _positive_int(md.get("chunk_size")) or _positive_int(md.get("action_horizon"))
        tasks = _strings(md.get("tasks"))
        self.metadata = PolicyMetadata(
            name=f"remote:{url}",
            cameras=cams,
            chunk_size=1,
            image_size=int(size) if size else None,
            action_layout=tuple(md.get("action_layout") or ACTION_LAYOUT),
            control_mode=md.get("control_mode", CONTROL_MODE),
            tasks=tasks,
            weights_digest=md.get("sha256") if isinstance(md.get("sha256"), str) else None,
            trained_visual_quality=_strings(md.get("trained_visual_quality")),
            extra=self._extra(md),
        )
        self.chunk_size = int(horizon) if horizon else self._probe_chunk_size()
        self.metadata = dataclasses.replace(self.metadata, chunk_size=self.chunk_size)

    def _extra(self, md: dict) -> dict[str, Any]:
        return {
            "url": self.url,
            "keys": self.keys,
            "server_metadata": md,
            "sha256": md.get("sha256"),
            "norm_mode": md.get("norm_mode"),
        }

    def _connect(self) -> dict:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self._api_key}"} if self._api_key else None
        try:
            self._ws = connect(
                self.url,
                compression=None,
                max_size=None,
                additional_headers=headers,
                open_timeout=self.timeout_s,
                close_timeout=CLOSE_TIMEOUT_S,
                legacy=True,
            )  # websockets >= 17: a plain connection, not a context manager
            frame = self._ws.recv(timeout=self.timeout_s)
        except InvalidStatus as err:
            status = err.response.status_code
            hint = " (missing or wrong API key: pass ?api_key_env=VAR)" if status in (401, 403) else ""
            raise RemotePolicyError(
                f"remote:{self.url}: the server refused the connection: HTTP {status}{hint}"
            ) from err
        except (OSError, TimeoutError, WebSocketException) as err:
            self._drop()
            raise RemotePolicyError(f"remote:{self.url}: cannot connect: {type(err).__name__}: {err}") from err
        try:
            metadata = unpackb(frame) if not isinstance(frame, str) else None
        except ProtocolError as err:
            metadata = err
        if not isinstance(metadata, dict):
            self._drop()
            raise RemotePolicyError(
                f"remote:{self.url}: the first frame is not a msgpack metadata map ({metadata!r:.200})"
            )
        return {str(k): v for k, v in metadata.items()}

    def _drop(self) -> None:
        ws, self._ws = getattr(self, "_ws", None), None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 -- closing a dead connection cannot fail usefully
                pass

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        self._drop()

    def __del__(self) -> None:
        self._drop()

    def reset(self) -> None:
        """Reconnect if the connection was lost or closed (the server keeps no per-episode state).

        Raises:
            RemotePolicyError: the server cannot be reached, or now serves a policy with other metadata.
        """
        from websockets.protocol import State

        if self._ws is not None and self._ws.state is State.OPEN:
            return
        self._drop()  # closed by the server since the last episode (restart, idle timeout): connect afresh
        md = self._connect()
        changed = [k for k in IDENTITY_FIELDS if md.get(k) != self.server_metadata.get(k)]
        if changed:
            self._drop()
            diff = "; ".join(f"{k}: was {self.server_metadata.get(k)!r}, now {md.get(k)!r}" for k in changed)
            raise RemotePolicyError(f"remote:{self.url}: the server now serves another policy ({diff})")

    def _request(self, payload: dict) -> np.ndarray:
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            self.reset()
        try:
            self._ws.send(packb(payload))
            reply = self._ws.recv(timeout=self.timeout_s)
        except TimeoutError as err:
            self._drop()  # a late reply must not be read as the next request's
            raise RemotePolicyError(f"remote:{self.url}: no reply within {self.timeout_s:g} s") from err
        except ConnectionClosed as err:
            self._drop()
            raise RemotePolicyError(f"remote:{self.url}: connection lost ({err})") from err
        except OSError as err:
            self._drop()
            raise RemotePolicyError(f"remote:{self.url}: connection lost ({type(err).__name__}: {err})") from err
        if isinstance(reply, str):
            self._drop()
            raise RemotePolicyError(f"remote:{self.url}: server error: {reply}")
        try:
            data = unpackb(reply)
        except ProtocolError as err:
            self._drop()
            raise RemotePolicyError(f"remote:{self.url}: undecodable reply: {err}") from err
        actions = data.get("actions") if isinstance(data, dict) else None
        if not isinstance(actions, np.ndarray) or actions.dtype.kind != "f":
            raise RemotePolicyError(
                f"remote:{self.url}: the reply has no float 'actions' array (got {type(actions).__name__})"
            )
        return actions

    def _probe_chunk_size(self) -> int:
        size = self.metadata.image_size or PROBE_IMAGE_SIZE
        probe = Observation(
            images={c: np.zeros((1, size, size, 3), np.uint8) for c in self.metadata.cameras},
            proprio=np.zeros((1, ACTION_DIM), np.float32),
            instruction=["probe"],
        )
        return int(self._request(from_observation(probe, self.keys, index=0, chw=self.chw)).shape[0])

    def _check(self, actions: np.ndarray, batch: int | None) -> np.ndarray:
        want = (self.chunk_size, ACTION_DIM) if batch is None else (batch, self.chunk_size, ACTION_DIM)
        ok = actions.ndim == len(want) and actions.shape[-1] == ACTION_DIM and actions.shape[-2] >= self.chunk_size
        if batch is not None:
            ok = ok and actions.shape[0] == batch
        if not ok:
            raise RemotePolicyError(
                f"remote:{self.url}: the server returned actions of shape {actions.shape}, "
                f"expected {want} (at least {self.chunk_size} actions of {ACTION_DIM})"
            )
        return actions[..., : self.chunk_size, :].astype(np.float32)

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """(B, H, 14) float32 chunk from the server (see the module docstring).

        Raises:
            RemotePolicyError: connection lost, timeout, server error, or actions of the wrong shape.
        """
        batch = obs.batch_size
        if self.batched_requests and batch > 1:
            return self._check(self._request(from_observation(obs, self.keys, chw=self.chw)), batch)
        rows = [
            self._check(self._request(from_observation(obs, self.keys, index=i, chw=self.chw)), None)
            for i in range(batch)
        ]
        return np.stack(rows)


def parse_remote_spec(arg: str) -> tuple[str, dict[str, Any]]:
    """``URL?key=value&...`` -> (URL, RemotePolicy keyword arguments).

    Raises:
        ValueError: an unknown option, a malformed value, or an unset ``api_key_env`` variable.
    """
    from policies.checkpoint import split_spec_options

    url, options = split_spec_options(arg)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"remote:{arg}: unknown option(s) {unknown}; known: {list(OPTIONS)}")
    kwargs: dict[str, Any] = {}
    try:
        if "keys" in options:
            kwargs["keys"] = options["keys"]
        if "cameras" in options:
            kwargs["cameras"] = tuple(c.strip() for c in options["cameras"].split(",") if c.strip())
        for name, key in (("image_size", "image_size"), ("chunk", "chunk")):
            if name in options:
                kwargs[key] = int(options[name])
                if kwargs[key] < 1:
                    raise ValueError(f"must be >= 1, got {kwargs[key]}")
        if "chw" in options:
            if options["chw"] not in ("0", "1"):
                raise ValueError(f"chw must be 0 or 1, got {options['chw']!r}")
            kwargs["chw"] = options["chw"] == "1"
        if "timeout" in options:
            kwargs["timeout_s"] = float(options["timeout"])
            if not kwargs["timeout_s"] > 0:
                raise ValueError(f"timeout must be > 0 seconds, got {options['timeout']!r}")
    except ValueError as err:
        raise ValueError(f"remote:{arg}: bad option value: {err}") from err
    if "api_key_env" in options:
        var = options["api_key_env"]
        if not os.environ.get(var):
            raise ValueError(f"remote:{arg}: api_key_env={var} but the environment variable {var} is not set")
        kwargs["api_key"] = os.environ[var]
    return url, kwargs


@register_policy("remote", usage="remote:ws://HOST:PORT[?keys=native|aloha]")
def _make_remote_policy(arg: str | None, **_: Any) -> RemotePolicy:
    """``remote:ws://HOST:PORT[?keys=aloha|native&cameras=..&image_size=N&chunk=H&chw=0|1&timeout=S&api_key_env=V]``."""
    if not arg:
        raise ValueError("remote policy needs a URL: remote:ws://127.0.0.1:8000")
    url, kwargs = parse_remote_spec(arg)
    return RemotePolicy(url, **kwargs)
