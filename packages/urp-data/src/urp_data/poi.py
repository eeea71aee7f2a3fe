"""Named points of interest from OpenStreetMap (ODbL): local .osm.pbf, local .osm XML, or Overpass.

Every source becomes a ``PlaceTable`` of named objects tagged amenity, shop, office, tourism
or leisure, with ``kind`` set to that tag's value (e.g. ``restaurant``) and ways placed at
the mean of their node locations. Local extracts are the default; Overpass is explicit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from urp_data.errors import InputError
from urp_data.fsutil import one_line
from urp_data.geocode import PlaceTable

logger = logging.getLogger(__name__)

POI_KEYS = ("amenity", "shop", "office", "tourism", "leisure")
OSM_LICENCE = "OpenStreetMap contributors, ODbL 1.0"


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


def pois_from_overpass(bbox: list[float]) -> PlaceTable:
    """Named POIs in (left, bottom, right, top) lon/lat from Overpass via osmnx (network; osmnx caches and throttles)."""
    import osmnx as ox

    ox.settings.use_cache = True
    try:
        gdf = ox.features.features_from_bbox(tuple(bbox), tags={k: True for k in POI_KEYS})
    except Exception as exc:
        raise InputError(f"Overpass query for bbox {bbox} failed: {one_line(exc)}") from exc
    return _table_from_features(gdf)


class OsmPOIs:
    """A POI source for the pipeline: a PlaceTable plus what the manifest records."""

    def __init__(self, table: PlaceTable, path: str, radius_km: float, max_places: int) -> None:
        self.table, self.path, self.radius_km, self.max_places = table, path, radius_km, max_places
        self.licence = OSM_LICENCE

    def nearby(self, lat: float, lon: float) -> list[dict[str, Any]]:
        return self.table.nearby(lat, lon, self.max_places, self.radius_km)


def poi_from_config(spec: dict[str, Any], resolve: Any) -> OsmPOIs:
    """A POI source from one ``poi:`` entry: ``{type: osm_pbf|osm_xml|overpass, path|bbox, radius_km, max_places}``."""
    spec = dict(spec)
    kind = spec.pop("type")
    radius = float(spec.pop("radius_km", 1.0))
    max_places = int(spec.pop("max_places", 10))
    if kind in ("osm_pbf", "osm_xml"):
        if "path" not in spec:
            raise InputError(f"poi source {kind} needs a path")
        path = resolve(spec.pop("path"))
        if not Path(path).is_file():
            raise InputError(f"OSM extract {path} not found")
        table = pois_from_pbf(path) if kind == "osm_pbf" else pois_from_xml(path)
        src = str(path)
    elif kind == "overpass":
        bbox = spec.pop("bbox")
        table, src = pois_from_overpass(bbox), f"overpass:{bbox}"
    else:
        raise InputError(f"unknown poi type {kind!r}; use osm_pbf, osm_xml or overpass")
    if spec:
        raise InputError(f"unknown key(s) {sorted(spec)} in poi source {kind}")
    return OsmPOIs(table, src, radius, max_places)
