"""Fixtures shared by every package's tests: one local Ray for the Ray engine's tests."""

from __future__ import annotations

import logging
import os

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray shared by the Ray tests: 2 CPUs, a 100 MiB object store, on 127.0.0.1 only.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when it is imported: 0 keeps a single node on
    the loopback address instead of this machine's network address.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, namespace="urp",
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
