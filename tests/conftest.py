"""Session-wide test settings: a private cache folder (low-poly URDF, bf16 probe) instead of ~/.cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config) -> None:
    if "VLA_CACHE_DIR" not in os.environ:  # inherited by every subprocess the tests start
        os.environ["VLA_CACHE_DIR"] = tempfile.mkdtemp(prefix="vla-test-cache-")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the test session (2 CPUs, no dashboard); its workers import the test fakes."""
    ray = pytest.importorskip("ray")
    here = str(Path(__file__).parent / "harness")
    repo = str(Path(__file__).resolve().parents[1])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([here, repo])}},
    )
    yield ray
    ray.shutdown()
