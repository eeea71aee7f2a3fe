"""The columns of a build: split names, the Arrow schema, indicator names and the build folder layout.

Coordinates are WGS84 degrees and always written in the order the name says: ``lat, lon`` in
columns and prompts, ``lon, lat`` only where a geometry library (shapely, GeoJSON) requires x, y.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from urp_data.errors import SchemaError

SPLITS: tuple[str, ...] = ("train", "val", "test_seen", "test_unseen")
"""Split names, in the order they are written."""

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "seen": ("test_seen",),
    "unseen": ("test_unseen",),
    "test": ("test_seen", "test_unseen"),
    "all": SPLITS,
}

MANIFEST_NAME = "manifest.json"
SCORE_MAX = 9.9
"""Answers are scores from 0.0 to SCORE_MAX (GeoLLM / Urban-R1 convention)."""

BASE_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "h3_cell",
    "lat",
    "lon",
    "region",
    "group",
    "country",
    "split",
    "image",
    "address",
    "nearby_places",
    "scene_id",
    "scene_datetime",
    "scene_cloud_cover",
    "geometry",
)

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
"""The Hugging Face ``datasets`` Image feature layout, so ``load_dataset`` decodes chips to PIL."""

PLACE_TYPE = pa.struct(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("distance_km", pa.float64()),
        ("direction", pa.string()),
    ]
)

@dataclass(frozen=True)
class IndicatorSpec:
    """How an indicator is named to the model; units are those of the raw column."""

    name: str
    description: str
    unit: str = ""


KNOWN_INDICATORS: dict[str, IndicatorSpec] = {
    s.name: s
    for s in (
        IndicatorSpec("population", "population", "people"),
        IndicatorSpec("gdp", "economic activity (GDP)", "USD"),
        IndicatorSpec("gdp_per_capita", "GDP per capita", "USD per person"),
        IndicatorSpec("night_light", "night-time light intensity", "radiance (DN)"),
        IndicatorSpec("carbon", "carbon emissions", "t CO2"),
        IndicatorSpec("poverty", "poverty level", "index"),
        IndicatorSpec("house_price", "house price", "currency per m2"),
        IndicatorSpec("census_count", "census count of residents", "people"),
    )
}


def indicator_spec(name: str, description: str | None = None, unit: str | None = None) -> IndicatorSpec:
    """Spec for ``name``: the known one, with the description or unit overridden if given."""
    base = KNOWN_INDICATORS.get(name, IndicatorSpec(name, name.replace("_", " ")))
    return IndicatorSpec(name, description or base.description, unit if unit is not None else base.unit)


INDICATOR_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,63}"
"""Indicator names: a letter, then letters, digits or ``_`` (64 at most); they become column names."""
_INDICATOR_NAME_RE = re.compile(INDICATOR_NAME_PATTERN)

RESERVED_NAMES: tuple[str, ...] = (*BASE_COLUMNS, "indicator", "score", "prediction", "completions", "n_parsed",
                                   "model", "backend", "grp", "truth", "pred", "anchor")
"""Column names of the contract's files (splits, predictions) and of the report's SQL: not indicator names."""


def check_indicator_names(names: Sequence[str]) -> None:
    """Raise SchemaError unless every name matches :data:`INDICATOR_NAME_PATTERN` and none collide.

    Collisions are checked ignoring case, with each other and with :data:`RESERVED_NAMES`:
    SQL engines (DuckDB) and some file systems treat ``Population`` and ``population`` as one
    name, so two such columns would be scored against each other.
    """
    seen: dict[str, str] = {n.lower(): n for n in RESERVED_NAMES}
    for name in names:
        if not isinstance(name, str) or not _INDICATOR_NAME_RE.fullmatch(name):
            raise SchemaError(f"indicator name {name!r} is not allowed: use a letter, then letters, digits or "
                              "'_' (at most 64), e.g. night_light")
        other = seen.get(name.lower())
        if other is not None:
            what = "a column of the data contract" if other in RESERVED_NAMES else "another indicator"
            raise SchemaError(f"indicator name {name!r} collides with {what}, {other!r} (names are compared "
                              "ignoring case); rename it")
        seen[name.lower()] = name


def arrow_schema(indicators: Sequence[str]) -> pa.Schema:
    """The Arrow schema of a split file with these indicator columns (float64, nullable).

    ``geometry`` is the chip footprint as WKB in EPSG:4326 (lon/lat axis order), declared in
    GeoParquet ``geo`` metadata so geopandas, DuckDB and QGIS read it as geometry.
    """
    fields = [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("h3_cell", pa.string(), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("country", pa.string()),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image", IMAGE_TYPE),
        pa.field("address", pa.string()),
        pa.field("nearby_places", pa.list_(PLACE_TYPE)),
        # the satellite scene a chip was cut from (STAC imagery; null for other sources), so a user
        # can see and filter acquisition dates and clouds: item id, acquisition time (RFC 3339,
        # as the item states it) and eo:cloud_cover in percent of the scene
        pa.field("scene_id", pa.string()),
        pa.field("scene_datetime", pa.string()),
        pa.field("scene_cloud_cover", pa.float64()),
    ]
    check_indicator_names(indicators)
    fields += [pa.field(name, pa.float64()) for name in indicators]
    fields.append(pa.field("geometry", pa.binary()))
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                # no "crs" key: GeoParquet then means OGC:CRS84 (lon/lat WGS84); null would mean unknown
            }
        },
    }
    hf = {"info": {"features": {f.name: _hf_feature(f.name, f.type) for f in fields}}}
    return pa.schema(fields, metadata={b"geo": json.dumps(geo).encode(), b"huggingface": json.dumps(hf).encode()})


def _hf_feature(name: str, typ: pa.DataType) -> dict[str, Any]:
    """Hugging Face ``datasets`` feature metadata, so ``load_dataset("parquet")`` decodes ``image`` to PIL."""
    if name == "image":
        return {"_type": "Image"}
    if pa.types.is_list(typ):
        inner = typ.value_type
        return {"feature": {f.name: _hf_feature(f.name, f.type) for f in inner}, "_type": "List"}
    return {"dtype": str(typ).replace("double", "float64"), "_type": "Value"}


def indicator_columns(schema: pa.Schema) -> list[str]:
    """Indicator columns of a split file: every float64 column that is not a base column.

    Raises SchemaError when their names break :func:`check_indicator_names` (a file not
    written by ``urp-data build``, or edited since).
    """
    names = [f.name for f in schema if f.name not in BASE_COLUMNS and pa.types.is_floating(f.type)]
    check_indicator_names(names)
    return names


def resolve_splits(name: str) -> tuple[str, ...]:
    """Split names for a user-facing split argument (``unseen`` -> ``test_unseen`` ...)."""
    if name in SPLITS:
        return (name,)
    if name in SPLIT_ALIASES:
        return SPLIT_ALIASES[name]
    raise SchemaError(f"unknown split {name!r}; choose one of {', '.join(SPLITS + tuple(SPLIT_ALIASES))}")


def split_path(build_dir: str | Path, split: str) -> Path:
    """Path of one split's Parquet file inside a build folder (``<out>/<region>``)."""
    if split not in SPLITS:
        raise SchemaError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return Path(build_dir) / f"{split}.parquet"
