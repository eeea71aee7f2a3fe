"""Wires the sources into a build: plan the cells, process them in chunks, write the splits.

A build streams: the plan (cells, countries, groups, splits) is small; samples are processed
in chunks that are written to ``<out>/.<region>.partial/chunks/`` as they finish, so memory
does not grow with N and a killed build resumes where it stopped (same config: same plan,
same chunks; a chunk is either complete on disk or absent). The split files fill, in chunk
order, in a folder of the unfinished build as chunks finish (:mod:`urp_data.build.splitfiles`); when
every chunk is done the manifest joins them and the folder atomically replaces
``<out>/<region>``, so a failed build never leaves partial split files behind.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from urp_data.build.chunks import write_chunk
from urp_data.build.engines.local import run_chunks_in_workers, worker_pool
from urp_data.build.identity import config_key, library_versions, manifest_inputs, state_key
from urp_data.build.plan import apply_overrides, make_plan
from urp_data.build.sources import before_network, open_sources
from urp_data.build.splitfiles import SplitFiles
from urp_data.config.build import BuildConfig
from urp_data.config.regions import RegionConfig, load_region
from urp_data.contract import MANIFEST_NAME, Manifest, ScoreScale, arrow_schema
from urp_data.errors import NoImageryError, OutputError
from urp_data.net import http
from urp_data.outputs.card import write_card
from urp_data.sources.places.gazetteer import group_labels
from urp_data.util.fs import atomic_write_text, inside, remove_tree, replace_dir

logger = logging.getLogger(__name__)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".urp-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out}: {exc.strerror or exc}; choose another --out") from exc


def build(cfg: BuildConfig, progress: Callable[[int, int], None] | None = None) -> Path:
    """Build one region; returns the build folder ``<out>/<region>``.

    ``progress(done, total)`` is called after each chunk (the CLI draws a bar with it).
    """
    t0 = time.time()
    region = apply_overrides(load_region(cfg.region), cfg)
    out = Path(cfg.out)
    _check_writable(out)
    if cfg.engine != "local" or cfg.workers == 1:
        return _build(cfg, region, out, None, progress, t0)
    with worker_pool(cfg.workers - 1, region) as pool:
        return _build(cfg, region, out, pool, progress, t0)


def _build(cfg: BuildConfig, region: RegionConfig, out: Path, pool: Any,
           progress: Callable[[int, int], None] | None, t0: float) -> Path:
    """:func:`build` from its sources on, with a pool of the other chunk workers or None."""
    src = open_sources(region)
    plan = make_plan(region, src)
    before_network(src, len(plan.cells))
    indicators = [i.name for i in src.indicators]
    schema = arrow_schema(indicators)

    partial = out / f".{region.name}.partial"
    inside(out, partial)  # the region name is validated; this also refuses a link that leads elsewhere
    inputs = manifest_inputs(region, src)
    versions = library_versions()
    key = config_key(region, cfg.chunk_size, inputs, versions)
    state = partial / "state.json"
    if partial.exists() and state_key(state) != key:
        logger.warning("discarding an unfinished build of %s made with another config, inputs or library "
                       "versions", region.name)
        remove_tree(out, partial)
    chunks_dir = partial / "chunks"
    chunks_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state, json.dumps({"key": key, "cells": len(plan.cells)}))

    n = len(plan.cells)
    chunks = [(chunks_dir / f"chunk-{k:06d}.parquet", range(start, min(start + cfg.chunk_size, n)))
              for k, start in enumerate(range(0, n, cfg.chunk_size))]
    done = sum(len(rows) for path, rows in chunks if path.is_file())
    todo = [(path, rows) for path, rows in chunks if not path.is_file()]
    if progress is not None:
        progress(done, n)
    final = partial / "final"
    remove_tree(out, final)
    final.mkdir()
    with SplitFiles(final, schema, [path for path, _ in chunks]) as splits:
        splits.chunk_done()  # those of an earlier run
        if cfg.engine == "ray":
            from urp_data.build.engines.ray import (
                run_chunks_on_ray,  # an optional extra: imported only when chosen
            )

            finished = run_chunks_on_ray(cfg.ray_address, region, plan, schema, todo)
        elif pool is not None and len(todo) > 1:
            finished = run_chunks_in_workers(pool, cfg.workers - 1, region, src, plan, schema, todo)
        else:
            finished = (write_chunk(region, src, plan, schema, path, rows) for path, rows in todo)
        for count in finished:
            splits.chunk_done()
            done += count
            if progress is not None:
                progress(done, n)
        counts = splits.counts()
    if sum(counts["per_split"].values()) == 0:
        raise NoImageryError(f"no sample of region {region.name} has imagery (all {n} skipped); "
                             "check that the imagery covers the area")
    counts["buffer_dropped"] = len(plan.buffer_cells)
    counts["sampled"] = n + len(plan.buffer_cells)  # = rows written + buffer_dropped + skipped_no_imagery
    scales = _fit_scales(final / "train.parquet", indicators)
    infos = {}
    for ind in src.indicators:
        info = ind.info
        info.scale = list(scales[ind.name].quantiles) if ind.name in scales else None
        infos[ind.name] = info
    manifest = Manifest(
        region=region.name,
        resolution=region.sampling.resolution,
        indicators=infos,
        config={"build": {k: v for k, v in vars(cfg).items()}, "region": region.to_dict(),
                "unseen_groups": sorted(plan.unseen_groups), "buffer_cells": sorted(plan.buffer_cells),
                "splits": plan.splits},
        inputs=inputs,
        counts=counts,
        versions=versions,
        build_time=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=[f"built in {time.time() - t0:.1f} s"],
        group_labels=group_labels(plan.group, plan.lat, plan.lon, plan.country, region.splits.group_by,
                                  src.gazetteer),
    )
    (final / MANIFEST_NAME).write_text(http.redact(manifest.to_json()))  # no API key from a source URL
    write_card(final, manifest)
    target = out / region.name
    replace_dir(out, final, target)
    remove_tree(out, partial)
    logger.info("built %s: %s", target, counts["per_split"])
    return target


def _fit_scales(train: Path, indicators: list[str]) -> dict[str, ScoreScale]:
    """Score scales fitted on the train split only (never on test data)."""
    if not indicators:
        return {}
    table = pq.read_table(train, columns=indicators)
    out = {}
    for name in indicators:
        vals = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        if np.isfinite(vals).any():
            out[name] = ScoreScale.fit(vals)
    return out


def build_region(region: str, out: str | Path = "build", **overrides: Any) -> Path:
    """Library shortcut: ``build(BuildConfig(region, out, **overrides))``."""
    return build(BuildConfig(region=region, out=str(out), **overrides))
