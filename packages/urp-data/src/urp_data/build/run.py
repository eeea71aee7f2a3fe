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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from urp_data.build.chunks import write_chunk
from urp_data.build.engines.local import run_chunks_in_workers, worker_pool
from urp_data.build.identity import config_key, library_versions, manifest_inputs, state_key
from urp_data.build.manifest import build_manifest
from urp_data.build.plan import Plan, apply_overrides, make_plan
from urp_data.build.sources import Sources, before_network, open_sources
from urp_data.build.splitfiles import SplitFiles
from urp_data.config.build import BuildConfig
from urp_data.config.regions import RegionConfig, load_region
from urp_data.contract import MANIFEST_NAME, arrow_schema
from urp_data.errors import NoImageryError, OutputError
from urp_data.net import http
from urp_data.outputs.card import write_card
from urp_data.util.fs import atomic_write_text, inside, remove_tree, replace_dir

logger = logging.getLogger(__name__)


Progress = Callable[[int, int], None]
"""``progress(done, total)``: cells done so far of the plan's total, called after each chunk."""
Chunk = tuple[Path, range]
"""A chunk: its file in the unfinished build and the plan rows it holds."""


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".urp-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out}: {exc.strerror or exc}; choose another --out") from exc


def build(cfg: BuildConfig, progress: Progress | None = None) -> Path:
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


def _build(cfg: BuildConfig, region: RegionConfig, out: Path, pool: Any, progress: Progress | None,
           t0: float) -> Path:
    """:func:`build` from its sources on, with a pool of the other chunk workers or None."""
    src = open_sources(region)
    plan = make_plan(region, src)
    before_network(src, len(plan.cells))
    schema = arrow_schema([i.name for i in src.indicators])
    partial = out / f".{region.name}.partial"
    inside(out, partial)  # the region name is validated; this also refuses a link that leads elsewhere
    inputs, versions = manifest_inputs(region, src), library_versions()
    _resume_or_start(out, partial, region, config_key(region, cfg.chunk_size, inputs, versions), len(plan.cells))
    chunks = _chunks(partial / "chunks", len(plan.cells), cfg.chunk_size)
    final = partial / "final"
    remove_tree(out, final)
    final.mkdir()
    counts = _cut(cfg, region, src, plan, schema, chunks, final, pool, progress)
    manifest = build_manifest(cfg, region, src, plan, final, counts, inputs, versions, t0)
    (final / MANIFEST_NAME).write_text(http.redact(manifest.to_json()))  # no API key from a source URL
    write_card(final, manifest)
    target = out / region.name
    replace_dir(out, final, target)
    remove_tree(out, partial)
    logger.info("built %s: %s", target, counts["per_split"])
    return target


def _resume_or_start(out: Path, partial: Path, region: RegionConfig, key: str, cells: int) -> None:
    """Keep an unfinished build's chunks when it was made under the same ``key``; otherwise start afresh."""
    state = partial / "state.json"
    if partial.exists() and state_key(state) != key:
        logger.warning("discarding an unfinished build of %s made with another config, inputs or library "
                       "versions", region.name)
        remove_tree(out, partial)
    (partial / "chunks").mkdir(parents=True, exist_ok=True)
    atomic_write_text(state, json.dumps({"key": key, "cells": cells}))


def _chunks(folder: Path, n: int, size: int) -> list[Chunk]:
    """The plan's ``n`` rows in chunks of ``size``, each with its file (named by index)."""
    return [(folder / f"chunk-{k:06d}.parquet", range(start, min(start + size, n)))
            for k, start in enumerate(range(0, n, size))]


def _cut(cfg: BuildConfig, region: RegionConfig, src: Sources, plan: Plan, schema: pa.Schema, chunks: list[Chunk],
         final: Path, pool: Any, progress: Progress | None) -> dict[str, Any]:
    """Cut the chunks not on disk yet with the chosen engine, filling the split files in ``final`` as
    they finish; returns the split files' counts (refuses a build in which no sample had imagery)."""
    n = len(plan.cells)
    done = sum(len(rows) for path, rows in chunks if path.is_file())
    todo = [(path, rows) for path, rows in chunks if not path.is_file()]
    if progress is not None:
        progress(done, n)
    with SplitFiles(final, schema, [path for path, _ in chunks], region.chip.max_failed_fraction) as splits:
        splits.chunk_done()  # those of an earlier run
        for count in _engine(cfg, region, src, plan, schema, todo, pool):
            splits.chunk_done()
            done += count
            if progress is not None:
                progress(done, n)
        counts = splits.counts()
    if sum(counts["per_split"].values()) == 0:
        raise NoImageryError(f"no sample of region {region.name} has imagery (all {n} skipped); "
                             "check that the imagery covers the area")
    return counts


def _engine(cfg: BuildConfig, region: RegionConfig, src: Sources, plan: Plan, schema: pa.Schema,
            todo: list[Chunk], pool: Any) -> Iterator[int]:
    """Each chunk's cell count as it is written: by Ray, by this process and a worker pool, or here alone."""
    if cfg.engine == "ray":
        from urp_data.build.engines.ray import (
            run_chunks_on_ray,  # an optional extra: imported only when chosen
        )

        return run_chunks_on_ray(cfg.ray_address, region, plan, schema, todo)
    if pool is not None and len(todo) > 1:
        return run_chunks_in_workers(pool, cfg.workers - 1, region, src, plan, schema, todo)
    return (write_chunk(region, src, plan, schema, path, rows) for path, rows in todo)


def build_region(region: str, out: str | Path = "build", **overrides: Any) -> Path:
    """Library shortcut: ``build(BuildConfig(region, out, **overrides))``."""
    return build(BuildConfig(region=region, out=str(out), **overrides))
