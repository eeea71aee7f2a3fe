"""One validator for every config dataclass: each field checked against its annotation and its range.

A field's type is its annotation (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``,
``list[X]``, ``X | None``); its range, when it has one, is in its metadata: ``min``/``max``
(inclusive) or ``gt`` (exclusive lower bound). Values come from YAML written by anyone, so
strings and lists are bounded in length, numbers must be finite, and text must be valid Unicode
(a lone surrogate cannot be written to Parquet). A bad value gives one line that names the key,
the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from urp_data.errors import RegionError

MAX_STR = 4096
"""Longest string a config field accepts (ours: a description or a URL, never a document)."""
MAX_LIST = 1024
"""Most items a config list accepts (ours)."""


def allowed(f: dataclasses.Field[Any], hint: Any) -> str:
    """What a field accepts, in words (for errors and the generated reference)."""
    m = f.metadata
    kind = _type_words(hint)
    if "gt" in m:
        return f"{kind} > {m['gt']}" + (f" and <= {m['max']}" if "max" in m else "")
    if "min" in m and "max" in m:
        return f"{kind} from {m['min']} to {m['max']}"
    if "min" in m:
        return f"{kind} >= {m['min']}"
    return kind


def _type_words(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [_type_words(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list (each: {_type_words(args[0])})" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if hint is float:
        return "a finite number"
    if hint is int:
        return "an integer"
    if hint is str:
        return f"a string (at most {MAX_STR} characters)"
    if hint is bool:
        return "true or false"
    return getattr(hint, "__name__", str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` names (ints count as floats; bools never as numbers)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or origin is dict or hint is dict:
        return True
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and len(value) <= MAX_LIST and all(_fits(v, args[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str) and len(value) <= MAX_STR and _valid_unicode(value)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _valid_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _in_range(value: Any, m: typing.Mapping[str, Any]) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True  # None, or a non-numeric field
    return (("gt" not in m or value > m["gt"]) and ("min" not in m or value >= m["min"])
            and ("max" not in m or value <= m["max"]))


def show(value: Any) -> str:
    """A value for a one-line error: repr, cut short (a hostile value can be long or multi-line)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_fields(obj: Any, where: str, error: type[Exception] = RegionError) -> None:
    """Raise ``error`` naming ``where.key``, the value and what is allowed, for the first bad field."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if not (_fits(value, hint) and _in_range(value, f.metadata)):
            raise error(f"{where}.{f.name}={show(value)} is not allowed; use {allowed(f, hint)}")


def check_bbox(bbox: list[float], where: str, antimeridian: bool = False, error: type[Exception] = RegionError) -> None:
    """A [left, bottom, right, top] lon/lat box: finite, lon in -180..180, lat in -90..90, bottom < top,
    and left < right, except that with ``antimeridian`` left > right names a box that crosses it."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_fits(v, float) for v in bbox)):
        raise error(f"{where}={show(bbox)} is not allowed; use [left, bottom, right, top], four finite numbers")
    left, bottom, right, top = bbox
    rule = "left < right" + (" (left > right crosses the antimeridian)" if antimeridian else "")
    if not (-180 <= left <= 180 and -180 <= right <= 180 and -90 <= bottom < top <= 90
            and (left < right or (antimeridian and left > right))):
        raise error(f"{where}={show(bbox)} is not allowed; use lon -180..180, lat -90..90, bottom < top, {rule}")
