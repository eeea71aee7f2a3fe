"""Ray, connected: the one piece of Ray that urp-data and urp-eval share (``ray_session``).

It imports nothing of the build, so ``urp-eval predict --engine ray`` needs Ray and not the
build stack (GDAL, geopandas)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from urp_data.errors import InputError

NAMESPACE = "urp"


def _ray() -> Any:
    # Ray's uv hook would zip the working folder (which may hold builds) and re-create the
    # environment for every worker; urp's workers run the environment the cluster was set up with.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError as exc:
        raise InputError("--engine ray needs Ray: pip install 'urp-data[ray]' (or uv sync --extra ray)") from exc
    return ray


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected: joins the cluster at ``address``, or starts a local Ray sized to this machine.

    A session that is already connected (a notebook, a test) is used as it is and left open;
    one started here is shut down on exit (a joined cluster keeps running).
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        # Workers' logs stay in Ray's log folder: the CLI's stderr keeps to progress and one-line errors.
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    except (ConnectionError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot join the Ray cluster at {address}: {first_line(exc)}; start one with "
                         "`ray start --head` or drop --ray-address for a local Ray") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
