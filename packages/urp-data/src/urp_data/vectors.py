"""Reading vector files (GeoJSON, GPKG, SHP, CSV) with one clear error for every way they fail."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from urp_data.errors import InputError
from urp_data.fsutil import one_line


def read_vector(path: str | Path, what: str, *, spatial: bool = True) -> gpd.GeoDataFrame:
    """``path`` read with geopandas; ``spatial`` files must have a CRS and come back in EPSG:4326 (lon/lat).

    ``what`` names the file's role in the messages ("area boundary", "indicator table", ...).
    """
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several unrelated types for unreadable files
        raise InputError(f"cannot read {what} {path}: {one_line(exc)}") from exc
    if not spatial:
        return gdf
    if gdf.crs is None:
        raise InputError(f"{what} {path} has no CRS; add a .prj or set one (e.g. EPSG:4326)")
    return gdf.to_crs("EPSG:4326")
