"""Imagery sources: local rasters, XYZ tiles, STAC catalogs and STAC APIs, chosen by a region config entry."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from urp_data.errors import InputError
from urp_data.sources.base import ImagerySource
from urp_data.sources.imagery.raster import RasterImagery
from urp_data.sources.imagery.stac_api import StacApiConfig, StacApiImagery
from urp_data.sources.imagery.stac_catalog import StacImagery
from urp_data.sources.imagery.xyz import XYZImagery


def imagery_from_config(spec: dict[str, Any], resolve: Any) -> ImagerySource:
    """An imagery source from one ``imagery:`` entry of a region config."""
    spec = dict(spec)
    kind = spec.pop("type")
    try:
        if kind == "raster":
            return RasterImagery(resolve(spec.pop("path")), **spec)
        if kind == "xyz":
            return XYZImagery(**spec)
        if kind == "stac":
            return stac_from_config(spec, resolve)
    except (TypeError, KeyError) as exc:
        raise InputError(f"imagery source of type {kind}: {exc}") from exc
    raise InputError(f"unknown imagery type {kind!r}; use raster, xyz or stac")


def stac_from_config(spec: dict[str, Any], resolve: Any) -> StacImagery | StacApiImagery:
    """The source of one ``type: stac`` entry: ``api:`` (searched per chip) or ``catalog:``."""
    if "api" in spec:
        known = {f.name for f in fields(StacApiConfig)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise InputError(f"stac api source: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return StacApiImagery(StacApiConfig(**spec))
    catalog = str(spec.pop("catalog"))
    return StacImagery(catalog if "://" in catalog else str(resolve(catalog)), **spec)
