"""The Ray engine of ``urp-data build --engine ray``: the local engine's chunks, cut across a cluster.

Why Ray core actors and not Ray Data: the local engine's chunk is already the unit of work, of
resume and of output (a Parquet file the worker writes atomically to the partial folder), so
there is no dataset to stream between stages. What a worker needs is its sources opened once
(GDAL handles, the gazetteer's trees, OSM indexes take seconds to load) and reused for every
chunk it cuts: that is an actor. The driver plans exactly as the local engine does and hands
each actor one chunk at a time (plus one queued, so no actor idles between chunks), each with
only its rows of the plan, so an actor's memory does not grow with the build. Finished chunks
on disk are skipped before any of this, so a killed Ray build resumes like a local one, and the
split files are written by the driver from the same chunk files: the output is the local
engine's, byte for byte.

A chunk whose task raises or whose actor dies is retried by Ray (``CHUNK_RETRIES`` more
times, on a restarted actor if it died); then the build stops with one line naming the chunk.

Per-host politeness of network sources (XYZ tiles) holds for the whole cluster: every worker's
:mod:`urp_data.net.http` asks one named, detached :class:`urp_data.net.pacing.Pacer` actor for its send
slots, so N workers together wait as long between requests to a host as one process would.

On a multi-node cluster every path (region inputs, ``--out``, ``URP_CACHE_DIR``) must name the
same shared storage on every node; the README's "Scale out" section says how.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from urp_data.build.chunks import write_chunk
from urp_data.build.plan import Plan
from urp_data.build.sources import open_sources
from urp_data.config.regions import RegionConfig
from urp_data.errors import ChunkError
from urp_data.net.pacing import Pacer, set_pacer
from urp_data.ray import NAMESPACE, first_line, ray_session

logger = logging.getLogger(__name__)

CHUNK_RETRIES = 2
PACER_NAME = "urp-http-pacer"
QUEUED_PER_ACTOR = 2


def urp_env() -> dict[str, str]:
    """The driver's ``URP_*`` settings (:mod:`urp_data.util.settings`), passed on to every worker."""
    return {k: v for k, v in os.environ.items() if k.startswith("URP_")}


class ChunkWorker:
    """One worker of a build: opens the region's sources once, then cuts chunk after chunk."""

    def __init__(self, region: RegionConfig, schema: pa.Schema, pacer: Any) -> None:
        import ray

        # The actor hands out send times; the wait is counted here, after the round trip.
        set_pacer(lambda host, min_interval_s: ray.get(pacer.reserve_at.remote(host, min_interval_s))
                  - time.time())
        self.region, self.schema = region, schema
        self.src = open_sources(region)

    def write(self, path: str, plan: Plan) -> int:
        """Cut a chunk's rows of the plan (:meth:`Plan.take`) into the chunk file ``path`` (atomically);
        returns its cell count."""
        return write_chunk(self.region, self.src, plan, self.schema, Path(path), range(len(plan.cells)))


def run_chunks_on_ray(address: str | None, region: RegionConfig, plan: Plan, schema: pa.Schema,
                      todo: list[tuple[Path, range]]) -> Iterator[int]:
    """Yield each chunk's cell count as the cluster finishes it (any order: files are named by index)."""
    if not todo:
        return
    with ray_session(address) as ray:
        pacer = ray.remote(num_cpus=0)(Pacer).options(
            name=PACER_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()
        n_actors = max(1, min(int(ray.cluster_resources().get("CPU", 1)), len(todo)))
        worker_cls = ray.remote(num_cpus=1, max_restarts=CHUNK_RETRIES, max_task_retries=CHUNK_RETRIES)(ChunkWorker)
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        logger.info("cutting %d chunks with %d Ray workers on %d nodes", len(todo), n_actors, nodes)
        env = {"env_vars": urp_env()}
        actors = [worker_cls.options(runtime_env=env).remote(region, schema, pacer)
                  for _ in range(n_actors)]
        queue = list(reversed(todo))
        pending: dict[Any, tuple[Any, Path, range]] = {}

        def submit(actor: Any) -> None:
            if queue:
                path, rows = queue.pop()
                # Absolute: a worker's working folder is not the driver's (region paths already are).
                ref = actor.write.options(retry_exceptions=True).remote(str(path.resolve()), plan.take(rows))
                pending[ref] = (actor, path, rows)

        try:
            for actor in actors:
                for _ in range(QUEUED_PER_ACTOR):
                    submit(actor)
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                actor, path, rows = pending.pop(ready)
                try:
                    count = ray.get(ready)
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None) or exc
                    raise ChunkError(f"chunk {path.name} (plan rows {rows.start}-{rows.stop - 1}) failed "
                                     f"{1 + CHUNK_RETRIES} times; last error: {first_line(cause)}") from exc
                submit(actor)
                yield count
        finally:
            for actor in actors:
                ray.kill(actor)
