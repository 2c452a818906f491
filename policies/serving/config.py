"""Config of ``vla serve`` (light: no numpy/torch import, so ``vla --help`` stays fast).

Field docstrings are the ``--help`` text, one sentence each. On connect the server sends one binary frame with the
policy's metadata; then each binary msgpack observation gets one reply {"actions": (H, 14) float32 (or (B, H, 14)
for a batched request), "server_timing": {...}}. A bad observation gets one text frame naming the key, then the
connection is closed with code 1011. GET /healthz answers 200. Observation keys: ours (images.head, proprio,
instruction) or ALOHA's (images.cam_high, state, prompt); images HWC or CHW uint8 at any size. Binding anything
but loopback exposes the policy to the network (a warning is printed): use --api-key and a trusted network; note
that command-line arguments are visible to other local users. Dynamic batching (--max-batch-size > 1) merges
requests of concurrent connections; merged samples equal unbatched calls to float32 rounding (~1e-6 of the action
scale: matmul kernels differ between batch sizes), so it is off by default.
"""

from __future__ import annotations

import dataclasses

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass
class ServeConfig:
    """Serve a policy over the openpi WebSocket + msgpack protocol (openpi_client.WebsocketClientPolicy works)."""

    policy: str
    """Policy spec to serve: checkpoint:PATH (any name registered in policies; `vla bench --help` lists them)."""
    host: str = "127.0.0.1"
    """Interface to bind (anything but loopback prints a warning)."""
    port: int = 8000
    """TCP port (0: any free port; the bound address is printed)."""
    api_key: str | None = None
    """Require the header `Authorization: Api-Key KEY` (what openpi_client sends); others get HTTP 401."""
    max_batch_size: int = 1
    """Most samples merged into one policy call across connections (1: off, bit-identical to in-process calls)."""
    max_wait_ms: float = 0.0
    """How long a batch waits for more requests after the first (0: only what queued up meanwhile)."""
    max_message_mb: float = 32.0
    """Largest accepted incoming frame in MiB; a larger frame closes that connection with code 1009."""
    log_level: str = "INFO"
    """Server log level (DEBUG, INFO, WARNING, ERROR); logs go to stderr."""

    def __post_init__(self) -> None:
        checks = {
            "port": (0 <= self.port <= 65535, "in [0, 65535]"),
            "max_batch_size": (self.max_batch_size >= 1, ">= 1"),
            "max_wait_ms": (0.0 <= self.max_wait_ms <= 10_000.0, "in [0, 10000] ms"),
            "max_message_mb": (0.0 < self.max_message_mb <= 4096.0, "in (0, 4096] MiB"),
            "log_level": (
                self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
                "one of DEBUG, INFO, WARNING, ERROR",
            ),
            "host": (bool(self.host.strip()), "a host name or address"),
            "api_key": (
                self.api_key is None or (self.api_key.strip() == self.api_key and self.api_key != ""),
                "a non-empty key without surrounding spaces",
            ),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                shown = "a key of that form" if name == "api_key" else repr(getattr(self, name))  # never echo a key
                raise ValueError(f"{name} must be {expected}, got {shown}")
        self.log_level = self.log_level.upper()

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def max_message_bytes(self) -> int:
        """``max_message_mb`` in bytes."""
        return int(self.max_message_mb * 2**20)
