"""Imagery sources: local rasters, XYZ tiles, STAC catalogs and STAC APIs, chosen by a region config entry."""

from __future__ import annotations

from typing import Any

from urp_data.config.sources import StacApiConfig, given, read_imagery
from urp_data.sources.base import ImagerySource
from urp_data.sources.imagery.raster import RasterImagery
from urp_data.sources.imagery.stac_api import StacApiImagery
from urp_data.sources.imagery.stac_catalog import StacImagery
from urp_data.sources.imagery.xyz import XYZImagery


def imagery_from_config(spec: dict[str, Any], resolve: Any) -> ImagerySource:
    """An imagery source from one ``imagery:`` entry of a region config (checked by its typed config)."""
    cfg = read_imagery(spec, "imagery source")
    if isinstance(cfg, StacApiConfig):
        return StacApiImagery(cfg)
    kw = given(cfg, spec)
    if spec["type"] == "raster":
        return RasterImagery(resolve(kw.pop("path")), **kw)
    if spec["type"] == "xyz":
        return XYZImagery(**kw)
    catalog = str(kw.pop("catalog"))
    return StacImagery(catalog if "://" in catalog else str(resolve(catalog)), **kw)
