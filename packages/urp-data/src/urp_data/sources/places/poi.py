"""Named points of interest from OpenStreetMap (ODbL): local .osm.pbf, local .osm XML, or Overpass.

Every source becomes a ``PlaceTable`` of named objects tagged amenity, shop, office, tourism
or leisure, with ``kind`` set to that tag's value (e.g. ``restaurant``) and ways placed at
the mean of their node locations (Overpass: the middle of their bounding box). Local extracts
are the default; Overpass, for small regions, is explicit.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import shapely

from urp_data.config.sources import read_poi
from urp_data.errors import InputError
from urp_data.net import answers, http
from urp_data.net.budget import RequestBudget
from urp_data.sources.base import NetworkSource
from urp_data.sources.places.gazetteer import PlaceTable
from urp_data.util.fs import one_line
from urp_data.util.geodesy import KM_PER_DEG_LAT, KM_PER_DEG_LON_EQUATOR

logger = logging.getLogger(__name__)

POI_KEYS = ("amenity", "shop", "office", "tourism", "leisure")
OSM_LICENCE = "OpenStreetMap contributors, ODbL 1.0"
OVERPASS_URL = "https://overpass-api.de/api/interpreter"
OVERPASS_MIN_INTERVAL_S = 1.0
"""Seconds between requests to an Overpass host (all workers together): one query at a time."""
OVERPASS_MAX_AREA_KM2 = 1000.0
"""Largest bbox asked of Overpass (~32 x 32 km, a city); larger regions take an .osm.pbf extract."""
OVERPASS_TIMEOUT_S = 25
"""The query's ``[timeout:]`` (Overpass's default is 180 s): the server stops the query, with a
runtime-error remark, before ``urp_data.net.http``'s 30 s read timeout would make us send it again;
a small POI query of a city needs a few seconds, and the server reserves what a query declares."""
OVERPASS_BYTES_PER_KM2 = 40_000
"""Answer size per km2 of a dense city, for request budgets only: Monaco's 691 named POIs (data/osm)
make 27 kB per km2 as compact JSON, and Overpass indents its JSON."""


def _table(rows: list[tuple[str, str, float, float]]) -> PlaceTable:
    if not rows:
        return PlaceTable(np.array([], object), np.array([], object), np.array([], np.float64), np.array([], np.float64))
    name, kind, lat, lon = zip(*rows, strict=True)
    return PlaceTable(np.array(name, object), np.array(kind, object), np.array(lat, np.float64), np.array(lon, np.float64))


def _kind(tags: Any) -> str:
    return next(tags[k] for k in POI_KEYS if k in tags)


def pois_from_pbf(path: str | Path) -> PlaceTable:
    """Named POIs of a local .osm.pbf extract, read with pyosmium in one pass."""
    import osmium

    rows: list[tuple[str, str, float, float]] = []
    try:
        fp = (osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
              .with_locations()
              .with_filter(osmium.filter.KeyFilter(*POI_KEYS)))
        for obj in fp:
            name = obj.tags.get("name")
            if not name:
                continue
            if obj.is_node():
                if obj.location.valid():
                    rows.append((name, _kind(obj.tags), obj.location.lat, obj.location.lon))
            else:
                locs = [(n.lat, n.lon) for n in obj.nodes if n.location.valid()]
                if locs:
                    la, lo = np.mean(locs, axis=0)
                    rows.append((name, _kind(obj.tags), float(la), float(lo)))
    except RuntimeError as exc:  # libosmium reports corrupt/truncated input as RuntimeError
        raise InputError(f"cannot read OSM extract {path}: {one_line(exc)}; "
                         "is it a complete .osm.pbf?") from exc
    logger.info("%d named POIs in %s", len(rows), path)
    return _table(rows)


def _table_from_features(gdf: Any) -> PlaceTable:
    rows = []
    if len(gdf):
        gdf = gdf[gdf["name"].notna()] if "name" in gdf.columns else gdf.iloc[0:0]
        cent = shapely.centroid(gdf.geometry.values)
        for (_, row), pt in zip(gdf.iterrows(), cent, strict=True):
            kind = next((row[k] for k in POI_KEYS if k in row and isinstance(row[k], str)), "place")
            rows.append((str(row["name"]), kind, pt.y, pt.x))
    return _table(rows)


def pois_from_xml(path: str | Path) -> PlaceTable:
    """Named POIs of a local .osm XML file, read with osmnx."""
    import osmnx as ox

    try:
        gdf = ox.features.features_from_xml(path, tags={k: True for k in POI_KEYS})
    except Exception as exc:  # osmnx raises parse errors and its own InsufficientResponseError
        if type(exc).__name__ == "InsufficientResponseError":
            return _table([])
        raise InputError(f"cannot read OSM XML {path}: {one_line(exc)}") from exc
    return _table_from_features(gdf)


class Overpass:
    """Named POIs of a small bbox from an Overpass API interpreter (``[out:json]``), through :mod:`urp_data.net.http`.

    One GET ``{url}?data=<Overpass QL>`` per region: nodes and ways with a ``name`` and one of
    ``POI_KEYS``, ways placed at the ``center`` that ``out center`` adds (the middle of their
    bounding box; .osm.pbf extracts use the mean of the way's nodes). ``out center`` keeps the
    default ``body`` verbosity: ``out tags`` would drop the nodes' coordinates. The answer is JSON
    ``{"version", "generator", "osm3s": {"timestamp_osm_base", "copyright"}, "elements": [{"type":
    "node", "id", "lat", "lon", "tags"}, {"type": "way", "id", "center": {"lat", "lon"}, "nodes",
    "tags"}]}`` (wiki.openstreetmap.org/wiki/Overpass_API/Overpass_QL, "out" and its modifiers). A query that ran out of time or
    memory still answers 200, with a ``remark`` starting "runtime error": that body is refused,
    never cached. It is cached like any other answer, so a rebuild sends nothing.

    Politeness, after the public instance's policy (dev.overpass-api.de/overpass-doc/en/preface/commons.html:
    a few slots per IP, about 10,000 queries and 1 GB a day, bulk downloads belong to planet
    extracts): before the query, ``{base}/status`` is read (never cached) and the query waits for
    a free slot; requests to the host are ``min_interval_s`` apart for all workers together; a 429
    is retried after its ``Retry-After``. A bbox over ``OVERPASS_MAX_AREA_KM2`` is refused:
    large regions take an ``.osm.pbf`` extract (``type: osm_pbf``).
    """

    def __init__(self, bbox: list[float], url: str = OVERPASS_URL, min_interval_s: float = 1.0) -> None:
        if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise InputError(f"overpass bbox must be [left, bottom, right, top] in degrees, got {bbox}")
        area = bbox_area_km2(bbox)
        if area > OVERPASS_MAX_AREA_KM2:
            raise InputError(f"overpass bbox {bbox} covers {area:.0f} km2, over the {OVERPASS_MAX_AREA_KM2:.0f} km2 "
                             "that one Overpass query should ask for; use an .osm.pbf extract of the region "
                             "(poi type osm_pbf, e.g. from download.geofabrik.de or `osmium extract`)")
        self.bbox, self.url, self.min_interval_s = [float(v) for v in bbox], url, min_interval_s
        http.canonical_url(url)  # a bad scheme or host fails here, before the build starts
        self.status_url = url.rstrip("/").rsplit("/", 1)[0] + "/status"

    def query(self) -> str:
        """The Overpass QL of the bbox; ``[bbox:south,west,north,east]`` (lat first, as Overpass wants it)."""
        left, bottom, right, top = self.bbox
        filters = "".join(f'{t}["name"]["{k}"];' for k in POI_KEYS for t in ("node", "way"))
        return (f"[out:json][timeout:{OVERPASS_TIMEOUT_S}][bbox:{bottom},{left},{top},{right}];"
                f"({filters});out center;")

    def _slot_wait_s(self) -> float:
        """Seconds until the instance has a free slot for us, from its ``/status`` text; 0 when unknown."""
        try:
            text = http.get(self.status_url, min_interval_s=self.min_interval_s, cache=False,
                            content_types=("text/plain",), check=lambda b: b.decode()).decode()
        except InputError as exc:  # a self-hosted instance may have no status page: just ask
            logger.debug("no Overpass status: %s", exc)
            return 0.0
        if re.search(r"\d+ slots? available now", text):
            return 0.0
        waits = [int(w) for w in re.findall(r"Slot available after: \S+, in (-?\d+) seconds", text)]
        return float(min(max(min(waits), 0), http.RETRY_AFTER_MAX_S)) if waits else 0.0

    def fetch(self) -> PlaceTable:
        """The POIs (from the cache when present; otherwise after waiting for a slot)."""
        params = {"data": self.query()}
        if not http.cache_path(self.url, params).is_file():
            wait = self._slot_wait_s()
            if wait:
                logger.info("waiting %.0f s for a free Overpass slot at %s", wait, http.redact(self.url))
                time.sleep(wait)
        try:
            body = http.get(self.url, min_interval_s=self.min_interval_s, params=params,
                            content_types=("application/json",), check=check_overpass)
        except InputError as exc:  # name the query by its bbox, not by its percent-encoded text
            shown = http.redact(http.canonical_url(self.url, params))
            raise InputError(f"Overpass query of bbox {self.bbox}: " + str(exc).replace(shown, http.redact(self.url))) \
                from exc
        rows = overpass_rows(answers.load_json(body))
        logger.info("%d named POIs from Overpass in %s", len(rows), self.bbox)
        return _table(rows)

    def request_budget(self, lat: np.ndarray | None = None, lon: np.ndarray | None = None, footprint_m: float = 0.0,
                       size_px: int = 0) -> list[RequestBudget]:
        """The status check and the query, whatever the samples; bytes scale with the bbox's area."""
        return [RequestBudget(source="poi overpass", host=urlsplit(self.url).netloc, requests=2,
                              bytes=int(bbox_area_km2(self.bbox) * OVERPASS_BYTES_PER_KM2),
                              min_interval_s=self.min_interval_s)]


def overpass_rows(doc: Any) -> list[tuple[str, str, float, float]]:
    """(name, kind, lat, lon) of every named POI in an Overpass JSON answer, each value checked
    (:mod:`urp_data.net.answers`); raises on an incomplete answer (a runtime-error ``remark``)."""
    doc = answers.obj(doc, "(the answer)")
    if not isinstance(doc.get("elements"), list):
        raise answers.BadValue("no elements list")
    if "runtime error" in str(doc.get("remark", "")):
        raise answers.BadValue(f"Overpass stopped the query: {answers.text(doc['remark'], 'remark')}")
    rows = []
    for i, el in enumerate(doc["elements"]):
        el = answers.obj(el, f"elements[{i}]")
        tags = answers.obj(el.get("tags", {}), f"elements[{i}].tags")
        name = answers.text(tags.get("name"), f"elements[{i}].tags.name", optional=True)
        key = next((k for k in POI_KEYS if k in tags), None)
        kind = answers.text(tags[key], f"elements[{i}].tags.{key}") if key else None
        where = el if "lat" in el else el.get("center")
        if name and kind and where is not None:
            lat, lon = answers.lat_lon(answers.obj(where, f"elements[{i}].center"), f"elements[{i}]")
            rows.append((name, kind, lat, lon))
    return rows


def check_overpass(body: bytes) -> None:
    """Raise unless ``body`` is a complete Overpass JSON answer whose values we can use."""
    overpass_rows(answers.load_json(body))


def bbox_area_km2(bbox: list[float]) -> float:
    """Approximate area (km2) of a (left, bottom, right, top) lon/lat box."""
    left, bottom, right, top = bbox
    return (top - bottom) * KM_PER_DEG_LAT * (right - left) * KM_PER_DEG_LON_EQUATOR * math.cos(math.radians((top + bottom) / 2))


class OsmPOIs(NetworkSource):
    """A POI source for the pipeline: a PlaceTable (read on first use) plus what the manifest records."""

    def __init__(self, load: Callable[[], PlaceTable], path: str, radius_km: float, max_places: int,
                 overpass: Overpass | None = None) -> None:
        self._load, self.path, self.radius_km, self.max_places = load, path, radius_km, max_places
        self.overpass = overpass
        self.licence = OSM_LICENCE

    @cached_property
    def table(self) -> PlaceTable:
        return self._load()

    def load(self) -> None:
        """Read (or download) the POIs now rather than at the first sample."""
        _ = self.table

    def nearby_many(self, lat: np.ndarray, lon: np.ndarray) -> list[list[dict[str, Any]]]:
        """Per point (lat/lon degrees), up to ``max_places`` POIs within ``radius_km``, nearest first."""
        return self.table.nearby_many(lat, lon, self.max_places, self.radius_km)

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float = 0.0,
                       size_px: int = 0) -> list[RequestBudget]:
        """What the source asks of the network: nothing for local extracts."""
        return self.overpass.request_budget() if self.overpass else []


def poi_from_config(spec: dict[str, Any], resolve: Any) -> OsmPOIs:
    """A POI source from one ``poi:`` entry (:class:`urp_data.config.sources.PoiConfig`)."""
    cfg = read_poi(spec, "poi source")
    overpass = None
    if cfg.type in ("osm_pbf", "osm_xml"):
        path = resolve(str(cfg.path))
        if not Path(path).is_file():
            raise InputError(f"OSM extract {path} not found")
        table = pois_from_pbf(path) if cfg.type == "osm_pbf" else pois_from_xml(path)  # read now: bad input fails early
        load, src = (lambda: table), str(path)
    else:
        interval = OVERPASS_MIN_INTERVAL_S if cfg.min_interval_s is None else cfg.min_interval_s
        overpass = Overpass(list(cfg.bbox or []), cfg.url or OVERPASS_URL, float(interval))
        load, src = overpass.fetch, f"overpass {http.redact(overpass.url)} bbox {overpass.bbox}"
    return OsmPOIs(load, src, float(cfg.radius_km), cfg.max_places, overpass)
