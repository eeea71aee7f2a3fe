"""Reading vector files (GeoJSON, GPKG, SHP, CSV) with one clear error for every way they fail.

geopandas (with pyogrio's own GDAL) costs a process ~130 MB, so it is imported only where
geometries are needed. An attribute table (``by_country`` indicators) is read once with geopandas
and kept as an Arrow file under the cache folder (``vectors/``); every later read, in every chunk
worker, memory-maps that file instead, with no geopandas import.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from urp_data.errors import InputError
from urp_data.util.fs import atomic_write_bytes, cache_dir, one_line, sidecars

if TYPE_CHECKING:
    import geopandas as gpd

TABLE_CACHE_VERSION = 1
"""Bump when the cached table's layout changes; old files are then simply not found."""


def read_vector(path: str | Path, what: str, *, spatial: bool = True) -> gpd.GeoDataFrame:
    """``path`` read with geopandas; ``spatial`` files must have a CRS and come back in EPSG:4326 (lon/lat).

    ``what`` names the file's role in the messages ("area boundary", "indicator table", ...).
    """
    import geopandas as gpd

    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several unrelated types for unreadable files
        raise InputError(f"cannot read {what} {path}: {one_line(exc)}") from exc
    if not spatial:
        return gdf
    if gdf.crs is None:
        raise InputError(f"{what} {path} has no CRS; add a .prj or set one (e.g. EPSG:4326)")
    return gdf.to_crs("EPSG:4326")


def _table_key(path: Path) -> str:
    """The file's identity for the cache: resolved path, size and modification time of it and its sidecars."""
    parts = [TABLE_CACHE_VERSION, str(path.resolve())]
    for f in [path, *sidecars(path)]:
        st = f.stat()
        parts += [f.name, st.st_size, st.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _arrow_column(series: Any) -> pa.Array:
    """A pandas column as Arrow; a column of mixed Python types (as OGR can give) becomes strings."""
    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if gone else str(v) for v, gone in zip(series, series.isna(), strict=True)],
                        pa.string())


def read_table(path: str | Path, what: str, columns: list[str]) -> pa.Table:
    """The ``columns`` of a vector file's attribute table (no geometry), through the Arrow cache.

    A column the file lacks is an :class:`InputError` naming the columns it has.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} not found")
    cached = cache_dir("vectors") / f"{_table_key(path)}.arrow"
    if cached.is_file():
        try:
            with pa.memory_map(str(cached)) as source:
                table = pa.ipc.open_file(source).read_all()
        except (OSError, pa.ArrowInvalid):
            table = None  # a damaged cache file is rebuilt below
        if table is not None and all(c in table.column_names for c in columns):
            return table.select(columns)
    gdf = read_vector(path, what, spatial=False)
    missing = [c for c in columns if c not in gdf.columns]
    if missing:
        raise InputError(f"{what}: column {missing[0]!r} not in {path} (has {list(gdf.columns)})")
    table = pa.table({str(c): _arrow_column(gdf[c]) for c in gdf.columns if str(gdf[c].dtype) != "geometry"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    atomic_write_bytes(cached, sink.getvalue().to_pybytes())
    return table.select(columns)
