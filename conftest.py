"""Fixtures shared by every package's tests: one local Ray for the Ray engine's tests."""

from __future__ import annotations

import logging
import os

import pytest

# Ray reads these when it is first imported, and collecting urp-train's tests imports it (TRL ->
# vLLM -> ray), so they are set here, before any test module. 0 keeps a single node on the loopback
# address instead of this machine's network address; 0 turns off Ray's `uv run` hook, which would
# zip this checkout and start every worker through `uv run` in a copy of it (under `uv run
# --no-sync`, in an empty environment where the workers die at start and a Ray test hangs).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray shared by the Ray tests: 2 CPUs, a 100 MiB object store, on 127.0.0.1 only."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, namespace="urp",
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
