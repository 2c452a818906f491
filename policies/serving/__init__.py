"""Serving policies over the openpi WebSocket + msgpack protocol, and using served policies.

* ``policies.serving.protocol``: the msgpack + numpy codec (byte-compatible with openpi's ``msgpack_numpy``).
* ``policies.serving.keys``: observation key conventions (ours, openpi's ALOHA) -> :class:`policies.base.Observation`.
* ``policies.serving.server``: the asyncio server behind ``vla serve`` (metadata frame, request/response, health
  check, errors, API key, dynamic batching).
* ``policies.serving.remote``: the ``remote:ws://HOST:PORT`` policy kind (any openpi-protocol server as a Policy).
* ``policies.serving.vla_eval``: our policies as a vla-eval (``PredictModelServer``) model server (optional extra).

Importing this package imports nothing heavy; each module imports numpy / msgpack / websockets itself.
"""
