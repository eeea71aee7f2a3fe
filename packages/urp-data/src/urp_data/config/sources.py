"""Typed configs of the sources a region file lists (``imagery:``, ``poi:``, ``indicators:``), one per type.

Each entry of a region file is read into the dataclass of its ``type``: unknown keys are errors,
and every field is checked against its type and range in one place
(:func:`urp_data.config.fields.check_fields`), before any source opens a file or a connection.
The sources then receive only the keys the file gave (:func:`given`), so their defaults stay theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from urp_data.config.fields import check_bbox, check_fields, show
from urp_data.errors import InputError
from urp_data.net import http

_BANDS = {"help": "1-based bands in R, G, B order (default 1, 2, 3)"}
_RESCALE = {"help": "raw values to 0-255: auto (2-98 % of the raster), [low, high], or null (8-bit data as it is)"}
_LICENCE = {"help": "licence recorded in the manifest and the dataset card"}
_NAME = {"help": "name shown in logs and the manifest (default: the file or URL)"}
_INTERVAL = {"help": "seconds between two requests to the source's host, for all workers together", "min": 0}


@dataclass
class SourceConfig:
    """What every source entry has: its ``type`` (checked by the subclass) and where it is listed."""

    def check(self, where: str) -> None:
        check_fields(self, where, InputError)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("bbox") and value is not None:
                check_bbox(value, f"{where}.{f.name}", error=InputError)


@dataclass
class RasterImageryConfig(SourceConfig):
    """A local raster (GeoTIFF/COG, or a plain image with ``crs`` and ``bounds``)."""

    type: Literal["raster"] = field(metadata={"help": "raster"})
    path: str = field(metadata={"help": "the file, relative to the region file"})
    bands: list[int] | None = field(default=None, metadata=_BANDS)
    rescale: Any = field(default="auto", metadata=_RESCALE)
    crs: str | None = field(default=None, metadata={"help": "CRS of a file without one, e.g. EPSG:4326"})
    bounds: list[float] | None = field(default=None, metadata={"help": "[left, bottom, right, top] of a file "
                                                                       "without georeferencing, in its crs"})
    nodata: float | None = field(default=None, metadata={"help": "nodata value of a file without one"})
    name: str | None = field(default=None, metadata=_NAME)
    licence: str = field(default="", metadata=_LICENCE)
    resampling: Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"] = field(
        default="bilinear", metadata={"help": "how pixels are resampled to the chip"})


@dataclass
class XyzImageryConfig(SourceConfig):
    """XYZ (slippy-map) tiles over HTTP."""

    type: Literal["xyz"] = field(metadata={"help": "xyz"})
    url: str = field(metadata={"help": "template with {z}, {x}, {y} (and {s} for subdomains)"})
    zoom: int = field(default=16, metadata={"help": "tile zoom level", "min": 0, "max": 24})
    tile_size: int = field(default=256, metadata={"help": "tile width in pixels", "min": 1, "max": 4096})
    name: str | None = field(default=None, metadata=_NAME)
    licence: str = field(default="", metadata=_LICENCE)
    bounds: list[float] | None = field(default=None, metadata={"help": "[left, bottom, right, top] lon/lat the "
                                                                       "tiles cover (default: the globe)", "bbox": True})
    min_interval_s: float = field(default=0.1, metadata=_INTERVAL)
    subdomains: list[str] | None = field(default=None, metadata={"help": "values of {s} (default a, b, c)"})
    max_in_flight: int = field(default=4, metadata={"help": "chips read at once", "min": 1, "max": 64})


@dataclass
class StacCatalogConfig(SourceConfig):
    """A static STAC catalog (a file or URL), its items listed once."""

    type: Literal["stac"] = field(metadata={"help": "stac"})
    catalog: str = field(metadata={"help": "the catalog's JSON, a path or an http(s) URL"})
    asset: str = field(default="visual", metadata={"help": "the item asset read as the chip"})
    bbox: list[float] | None = field(default=None, metadata={"help": "[left, bottom, right, top] lon/lat of the "
                                                                     "items used", "bbox": True})
    collections: list[str] | None = field(default=None, metadata={"help": "collections used (default: all)"})
    datetime: str | None = field(default=None, metadata={"help": "RFC 3339 instant or interval of the items used"})
    max_items: int = field(default=50, metadata={"help": "most items read from the catalog", "min": 1,
                                                 "max": 100_000})
    bands: list[int] | None = field(default=None, metadata=_BANDS)
    rescale: Any = field(default="auto", metadata=_RESCALE)
    licence: str = field(default="", metadata=_LICENCE)
    name: str | None = field(default=None, metadata=_NAME)


@dataclass
class StacApiConfig(SourceConfig):
    """A STAC API searched chip by chip (``type: stac`` with ``api:``), e.g. Sentinel-2 L2A on Earth Search."""

    api: str = field(metadata={"help": "the API's landing page, e.g. https://earth-search.aws.element84.com/v1"})
    collections: list[str] = field(metadata={"help": "collections searched, e.g. [sentinel-2-c1-l2a] (Collection 1; "
                                             "the legacy sentinel-2-l2a is losing items)"})
    asset: str = field(default="visual", metadata={
        "help": "the item asset read as the chip; Sentinel-2's `visual` is ESA's 8-bit true-colour image (TCI)"})
    datetime: str | None = field(default=None, metadata={
        "help": "RFC 3339 instant or interval searched, e.g. 2024-01-01/2024-12-31 (none: any date)"})
    months: list[int] | None = field(default=None, metadata={
        "help": "optional season: months of the year (1-12) an item may be acquired in, e.g. [6, 7, 8]; others "
                "are passed over (checked here, since no STAC API query names a month across years)"})
    max_cloud_cover: float | None = field(default=20.0, metadata={
        "help": "largest eo:cloud_cover (percent of the scene) accepted; null accepts items without one",
        "min": 0, "max": 100})
    bands: list[int] | None = field(default=None, metadata={"help": "1-based bands in R, G, B order (default 1, 2, 3)"})
    rescale: Any = field(default=None, metadata={
        "help": "null (8-bit assets such as the TCI, used as they are), auto (2-98 % per COG) or [low, high]"})
    bbox: list[float] | None = field(default=None, metadata={
        "help": "[left, bottom, right, top] lon/lat the source is used in (default: the whole globe)", "bbox": True})
    limit: int = field(default=10, metadata={
        "help": "items per search page (sorted by cloud cover, the first page usually holds the answer)",
        "min": 1, "max": 10_000})
    max_items: int = field(default=100, metadata={"help": "most items looked at per chip (bounds the paging)",
                                                  "min": 1, "max": 100_000})
    min_interval_s: float = field(default=http.STAC_MIN_INTERVAL_S, metadata={
        "help": "seconds between two requests to the API host, and between two chip reads from a COG host", "min": 0})
    gsd_m: float = field(default=10.0, metadata={"help": "ground sample distance of the asset in metres (budgets only)",
                                                 "gt": 0})
    block_px: int = field(default=1024, metadata={"help": "COG tile size in pixels (budgets only)", "min": 1})
    licence: str = field(default="", metadata={
        "help": "licence recorded in the manifest; default: the collections' `license` and licence links"})
    attribution: str = field(default="", metadata={
        "help": "credit line recorded with the licence, e.g. 'Contains modified Copernicus Sentinel data 2024'"})
    name: str | None = field(default=None, metadata={"help": "name shown in logs (default: the API URL)"})

    type: Literal["stac"] = field(default="stac", metadata={"help": "stac (with api:)"})

    def __post_init__(self) -> None:
        self.check(f"stac api {http.redact(self.api) if isinstance(self.api, str) else '?'}")
        http.canonical_url(self.api)  # a bad scheme or host fails here, before any request
        if not self.collections:
            raise InputError(f"stac api {http.redact(self.api)}: collections must name at least one collection")
        if self.months is not None and (not self.months or not all(1 <= m <= 12 for m in self.months)):
            raise InputError(f"stac api {http.redact(self.api)}: months must list months 1-12, got {self.months}")


@dataclass
class PoiConfig(SourceConfig):
    """OSM points of interest near each sample: a local extract or the Overpass API."""

    type: Literal["osm_pbf", "osm_xml", "overpass"] = field(metadata={"help": "osm_pbf or osm_xml (a local "
                                                                              "extract: path) or overpass (bbox)"})
    path: str | None = field(default=None, metadata={"help": "the extract, relative to the region file"})
    bbox: list[float] | None = field(default=None, metadata={"help": "overpass: [left, bottom, right, top] lon/lat "
                                                                     "fetched once", "bbox": True})
    url: str | None = field(default=None, metadata={"help": "overpass: the interpreter URL (default: the public one)"})
    min_interval_s: float | None = field(default=None, metadata={**_INTERVAL, "help": "overpass: seconds between "
                                                                 "two requests (default: the public API's policy)"})
    radius_km: float = field(default=1.0, metadata={"help": "POIs within this distance of the sample", "gt": 0,
                                                    "max": 1000})
    max_places: int = field(default=10, metadata={"help": "most POIs listed per sample", "min": 1, "max": 1000})

    def __post_init__(self) -> None:
        if self.type == "overpass" and self.bbox is None:
            raise InputError("poi source overpass needs a bbox: [left, bottom, right, top] in degrees")
        if self.type != "overpass" and self.path is None:
            raise InputError(f"poi source {self.type} needs a path")


@dataclass
class IndicatorConfig(SourceConfig):
    """What every indicator entry has: the column it fills and how the manifest describes it."""

    type: str = field(metadata={"help": "raster, vector or geonames_population"})
    name: str = field(metadata={"help": "the column it fills (a known indicator, or one with description and unit)"})
    description: str | None = field(default=None, metadata={"help": "what it measures (known indicators have one)"})
    unit: str | None = field(default=None, metadata={"help": "its unit (known indicators have one)"})
    resolution: str | None = field(default=None, metadata={"help": "the source's resolution, in words"})
    resolution_km: float | None = field(default=None, metadata={"help": "the source's resolution in km (sets the "
                                                                        "split buffer)", "min": 0, "max": 20_000})
    derived_from_prompt: bool | None = field(default=None, metadata={"help": "whether the prompt's text gives it away"})
    licence: str | None = field(default=None, metadata=_LICENCE)


@dataclass
class RasterIndicatorConfig(IndicatorConfig):
    """A raster indicator: a local file (``path``) or a URL read as a COG or downloaded once."""

    path: str | None = field(default=None, metadata={"help": "the file, relative to the region file"})
    url: str | None = field(default=None, metadata={"help": "an http(s) URL instead of path"})
    mode: Literal["cog", "download"] | None = field(default=None, metadata={"help": "url: cog (ranged reads) or "
                                                                                    "download (sha256 checked)"})
    sha256: str | None = field(default=None, metadata={"help": "download: the file's checksum"})
    member: str | None = field(default=None, metadata={"help": "download: the file inside a zip"})
    min_interval_s: float | None = field(default=None, metadata=_INTERVAL)
    band: int | None = field(default=None, metadata={"help": "1-based band (default 1)", "min": 1})
    stat: Literal["mean", "sum"] | None = field(default=None, metadata={"help": "mean (default) or sum per chip"})
    crs: str | None = field(default=None, metadata={"help": "CRS of a file without one"})
    bounds: list[float] | None = field(default=None, metadata={"help": "[left, bottom, right, top] of a file without "
                                                                       "georeferencing"})
    nodata: float | None = field(default=None, metadata={"help": "nodata value of a file without one"})
    scale: float | None = field(default=None, metadata={"help": "multiplies every value (default 1)"})


@dataclass
class VectorIndicatorConfig(IndicatorConfig):
    """A polygon layer's column, or a table by country."""

    path: str | None = field(default=None, metadata={"help": "the file, relative to the region file"})
    column: str | None = field(default=None, metadata={"help": "the column read"})
    method: Literal["point_in_polygon", "area_weighted_sum", "area_weighted_mean", "by_country"] | None = field(
        default=None, metadata={"help": "how polygons become a value per chip (default point_in_polygon)"})
    key: str | None = field(default=None, metadata={"help": "by_country: the column of ISO codes (default iso_a3)"})


@dataclass
class GeonamesPopulationConfig(IndicatorConfig):
    """Summed GeoNames population near each sample."""

    radius_km: float | None = field(default=None, metadata={"help": "within this distance (default 10)", "gt": 0,
                                                            "max": 20_000})


def read_imagery(spec: Mapping[str, Any], where: str) -> SourceConfig:
    """The typed config of one ``imagery:`` entry (``type: stac`` with ``api:`` is a STAC API)."""
    return read_source(spec, {"stac": StacApiConfig} if "api" in spec else IMAGERY, where)


def read_poi(spec: Mapping[str, Any], where: str) -> PoiConfig:
    """The typed config of one ``poi:`` entry."""
    return cast(PoiConfig, read_source(spec, POI, where))


def read_indicator(spec: Mapping[str, Any], where: str) -> SourceConfig:
    """The typed config of one ``indicators:`` entry."""
    return read_source(spec, INDICATORS, where)


IMAGERY = {"raster": RasterImageryConfig, "xyz": XyzImageryConfig, "stac": StacCatalogConfig}
POI = {"osm_pbf": PoiConfig, "osm_xml": PoiConfig, "overpass": PoiConfig}
INDICATORS = {"raster": RasterIndicatorConfig, "vector": VectorIndicatorConfig,
              "geonames_population": GeonamesPopulationConfig}


def read_source(spec: Mapping[str, Any], kinds: Mapping[str, type[SourceConfig]], where: str) -> SourceConfig:
    """The typed config of one source entry; one line naming the entry, key and value when it is wrong."""
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in kinds:
        raise InputError(f"{where}: unknown type {show(kind)}; use {', '.join(kinds)}")
    cls = kinds[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(spec) - names)
    if unknown:
        raise InputError(f"{where} ({kind}): unknown key(s) {unknown}; allowed: {sorted(names)}")
    try:
        cfg = cls(**spec)
    except TypeError as exc:  # a required key is missing
        raise InputError(f"{where} ({kind}): {exc}") from exc
    cfg.check(f"{where} ({kind})")
    return cfg


def given(cfg: SourceConfig, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The checked values of the keys the region file gave (the source's own defaults fill the rest)."""
    return {k: getattr(cfg, k) for k in spec if k != "type"}
