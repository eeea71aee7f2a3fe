"""Online answers read into the values we use, before anything is cached.

A server's JSON can have the right shape and the wrong values: a name that is a list, a latitude
that says "north", a lone surrogate that no Parquet file can hold. The sources parse each answer
with these helpers inside the ``check`` of :func:`urp_data.net.http.get`, which runs before the
body is cached: a bad answer raises :class:`BadValue` naming the field, is never cached, and the
request fails with one line naming the host (a rerun after the host recovers asks again).
JSON is capped by size and by nesting depth before it is walked.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

MAX_JSON_BYTES = 16 * 2**20
"""Largest JSON answer parsed (16 MiB, ours: an Overpass answer of the largest bbox we send is ~5 MiB)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting accepted (ours: GeoJSON polygons nest 5 deep, STAC items ~8)."""
MAX_TEXT = 4096
"""Longest string taken from an answer (a name or an address, never a document)."""


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


class BadValue(ValueError):
    """An answer whose value at a field is not what we use."""


def load_json(body: bytes) -> Any:
    """Parse ``body``; refuse it when bigger than ``MAX_JSON_BYTES`` or nested deeper than ``MAX_JSON_DEPTH``."""
    if len(body) > MAX_JSON_BYTES:
        raise BadValue(f"a JSON answer of {len(body):,} bytes, over the {MAX_JSON_BYTES:,}-byte limit")
    outside = np.frombuffer(_STRINGS.sub(b"", body), np.uint8)  # brackets outside strings, before the parser
    steps = np.isin(outside, (0x5B, 0x7B)).astype(np.int64) - np.isin(outside, (0x5D, 0x7D))
    if steps.size and np.cumsum(steps).max() > MAX_JSON_DEPTH:
        raise BadValue(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(body)


def obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadValue(f"field {field} is {type(value).__name__}, not an object")
    return value


def text(value: Any, field: str, optional: bool = False) -> str | None:
    """A string of valid Unicode of at most ``MAX_TEXT`` characters (None when optional and absent)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadValue(f"field {field} is {type(value).__name__}, not a string")
    if len(value) > MAX_TEXT:
        raise BadValue(f"field {field} is {len(value):,} characters long, over {MAX_TEXT}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadValue(f"field {field} is not valid Unicode ({exc.reason} at {exc.start})") from exc
    return value


def number(value: Any, field: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number in [low, high]; a numeric string counts (Nominatim sends coordinates as strings)."""
    try:
        x = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and low <= x <= high):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise BadValue(f"field {field} is {shown}, not a finite number in [{low:g}, {high:g}]")
    return x


def lat_lon(doc: dict[str, Any], field: str, lat: str = "lat", lon: str = "lon") -> tuple[float, float]:
    """(lat, lon) degrees from ``doc[lat]`` and ``doc[lon]``, each in range."""
    return number(doc.get(lat), f"{field}.{lat}", -90, 90), number(doc.get(lon), f"{field}.{lon}", -180, 180)
