"""Cutting one chunk: read each sample's chip, address, places and indicator values, and write the rows."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from urp_data.build.plan import Plan
from urp_data.build.sources import Sources
from urp_data.config.regions import ChipConfig, RegionConfig
from urp_data.errors import NoImageryError, SampleSkipped
from urp_data.sources.base import CellBatch, Chip, ImagerySource, NetworkSource, encode_image, footprint_array
from urp_data.util.fs import atomic_write_table

logger = logging.getLogger(__name__)


def process_chunk(region: RegionConfig, src: Sources, plan: Plan, rows: range,
                  schema: pa.Schema) -> tuple[pa.Table, int, Counter[str]]:
    """Samples ``rows`` of the plan as an Arrow table, how many were skipped for lack of imagery, and
    how many failed (no readable scene), per reason."""
    chip = region.chip
    keep, images, fps, scenes = [], [], [], []
    failed: Counter[str] = Counter()
    for i, got in zip(rows, read_chips(src.imagery, plan.lat[rows], plan.lon[rows], chip), strict=True):
        if isinstance(got, str):
            failed[got] += 1
            continue
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
        scenes.append(got.scene)
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
        "scene_id": [s.id if s else None for s in scenes],
        "scene_datetime": [s.datetime if s else None for s in scenes],
        "scene_cloud_cover": [s.cloud_cover if s else None for s in scenes],
    }
    for ind in src.indicators:
        v = ind.values(batch) if len(idx) else np.array([], np.float64)
        cols[ind.name] = pa.array(v, pa.float64(), mask=~np.isfinite(v))  # NaN/nodata -> null, never 0
    cols["geometry"] = [shapely.to_wkb(f) for f in fps]
    return pa.table(cols, schema=schema), len(rows) - len(idx) - sum(failed.values()), failed


def read_chips(imagery: list[ImagerySource], lat: np.ndarray, lon: np.ndarray,
               chip: ChipConfig) -> Iterator[Chip | str | None]:
    """Per sample (lat/lon degrees), the chip of the first imagery source that covers it well enough, or None;
    a sample a source holds but cannot read (:class:`SampleSkipped`) is the reason, ``"<source>: <reason>"``.

    Chips are read by up to ``max(max_in_flight)`` threads, so a network source keeps that many
    requests in flight and a build waits on its host's politeness limit (paced in
    :mod:`urp_data.net.http`, shared by threads and processes), not on round trips. Each source is
    entered by at most its own ``max_in_flight`` threads at once (1, i.e. one at a time, for a
    local source: a GDAL handle is not thread-safe). Results come back in
    sample order and each sample tries the sources in the same order, so the chips equal those
    of a sequential read. They are yielded as they come, at most a few per thread ahead of the
    caller, so a chunk never holds all its decoded chips at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    sizes = [max(1, s.max_in_flight) if isinstance(s, NetworkSource) else 1 for s in imagery]
    slots = [threading.BoundedSemaphore(n) for n in sizes]

    def first(k: int) -> Any:
        for source, slot in zip(imagery, slots, strict=True):
            with slot:
                try:
                    c = source.read_chip(float(lat[k]), float(lon[k]), chip.footprint_m, chip.size_px)
                except SampleSkipped as exc:
                    logger.warning("sample at lat=%.5f, lon=%.5f skipped: %s", lat[k], lon[k], exc)
                    return f"{source.name}: {exc.reason}"
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


def write_chunk(region: RegionConfig, src: Sources, plan: Plan, schema: pa.Schema, path: Path,
                 rows: range) -> int:
    """Process one chunk and write it atomically; returns how many planned cells it covered."""
    table, skipped, failed = process_chunk(region, src, plan, rows, schema)
    atomic_write_table(table, path, {"urp_skipped_no_imagery": str(skipped), "urp_failed": json.dumps(failed)})
    return len(rows)
