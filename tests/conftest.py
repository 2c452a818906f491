"""Session-wide test settings: a private cache folder (low-poly URDF, bf16 probe) instead of ~/.cache."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config) -> None:
    if "VLA_CACHE_DIR" not in os.environ:  # inherited by every subprocess the tests start
        os.environ["VLA_CACHE_DIR"] = tempfile.mkdtemp(prefix="vla-test-cache-")
