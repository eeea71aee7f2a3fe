"""Indicator sources: anything with ``name``, ``info`` and ``values(batch) -> float64 array``.

NaN in the returned array means "no value" and becomes null in Parquet, never 0: a sample
outside a source, on nodata pixels, or in a polygon whose value is missing gets null.

- ``raster``: mean (or sum) of the valid pixels under the chip footprint; for a raster coarser
  than the footprint, the pixel under the centre.
- ``vector``: ``point_in_polygon`` (the value of the polygon holding the centre), or
  ``area_weighted_sum`` (for counts: each polygon's value times the share of its area inside
  the footprint), or ``area_weighted_mean`` (for rates: mean weighted by overlap area), or
  ``by_country`` (a table keyed by ISO alpha-2 or alpha-3 code in column ``key``, joined on the
  sample's country: coarse country polygons would give border towns their neighbour's value).
- ``geonames_population``: summed population of GeoNames places within ``radius_km``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.errors import RasterioError
from rasterio.transform import from_bounds as transform_from_bounds
from rasterio.windows import Window, from_bounds

from urp_data.errors import InputError
from urp_data.fsutil import one_line
from urp_data.geocode import GEONAMES_LICENCE, Gazetteer
from urp_data.schema import IndicatorInfo, indicator_spec
from urp_data.vectors import read_table, read_vector

logger = logging.getLogger(__name__)


@dataclass
class CellBatch:
    """The samples of one chunk: centres (lat/lon degrees) and chip footprints (lon/lat polygons)."""

    lat: np.ndarray
    lon: np.ndarray
    footprints: np.ndarray  # shapely polygons, EPSG:4326
    country: list[str | None]  # ISO 3166-1 alpha-3


def _info(spec: dict[str, Any], source: str, resolution: str, licence: str, *, resolution_km: float | None = None,
          radius_km: float | None = None, derived_from_prompt: bool = False) -> IndicatorInfo:
    """Manifest entry; ``resolution_km`` and ``derived_from_prompt`` in the region file override the measured ones."""
    s = indicator_spec(spec["name"], spec.get("description"), spec.get("unit"))
    km = spec.get("resolution_km", resolution_km)
    return IndicatorInfo(name=s.name, description=s.description, unit=s.unit, source=source,
                         resolution=spec.get("resolution", resolution), licence=spec.get("licence", licence),
                         resolution_km=None if km is None else round(float(km), 3), radius_km=radius_km,
                         derived_from_prompt=bool(spec.get("derived_from_prompt", derived_from_prompt)))


KM_PER_DEGREE = 111.32
"""Ground km per degree at the equator: a raster's pixel size in degrees is at most this wide."""


def _polygon_width_km(gdf: Any) -> float | None:
    """The 90th percentile of the polygons' equivalent widths (sqrt of area), in km (equal-area EPSG:6933).

    A high percentile because a label is shared across a whole polygon: large polygons set how
    far apart two samples with the same value can be.
    """
    areas = gdf.geometry.to_crs("EPSG:6933").area.to_numpy()
    areas = areas[np.isfinite(areas) & (areas > 0)]
    return float(np.percentile(np.sqrt(areas), 90) / 1000.0) if areas.size else None


class RasterIndicator:
    """Zonal statistic of one raster band over each chip footprint (nodata -> null)."""

    def __init__(self, spec: dict[str, Any], path: Path) -> None:
        self.name, self.path = spec["name"], str(path)
        self.stat = spec.get("stat", "mean")
        if self.stat not in ("mean", "sum"):
            raise InputError(f"indicator {self.name}: stat must be mean or sum, got {self.stat!r}")
        try:
            with warnings.catch_warnings():  # plain images are fine with crs/bounds (checked below)
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(path)
            with ds:
                band = int(spec.get("band", 1))
                if not 1 <= band <= ds.count:
                    raise InputError(f"indicator {self.name}: {path} has no band {band}")
                crs = spec.get("crs") or ds.crs
                if crs is None:
                    raise InputError(f"indicator raster {path} has no CRS; georeference it or set crs: and bounds:")
                self.arr = ds.read(band).astype(np.float64)
                nodata = spec.get("nodata", ds.nodata)
                self.transform = transform_from_bounds(*spec["bounds"], ds.width, ds.height) if "bounds" in spec \
                    else ds.transform
                self.crs = rasterio.crs.CRS.from_user_input(crs)
        except RasterioError as exc:
            raise InputError(f"cannot read indicator raster {path}: {one_line(exc)}") from exc
        if nodata is not None:
            self.arr[self.arr == nodata] = np.nan
        scale = float(spec.get("scale", 1.0))
        self.arr *= scale
        self._to_src = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        res = abs(self.transform.a)
        km = res * KM_PER_DEGREE if self.crs.is_geographic else res * self.crs.linear_units_factor[1] / 1000.0
        self.info = _info(spec, str(path), f"{res:g} {'degrees' if self.crs.is_geographic else 'CRS units'} per pixel",
                          spec.get("licence", ""), resolution_km=km)

    def values(self, batch: CellBatch) -> np.ndarray:
        out = np.full(len(batch.lat), np.nan)
        h, w = self.arr.shape
        full = Window(0, 0, w, h)
        for i, fp in enumerate(batch.footprints):
            xs, ys = self._to_src.transform(*np.asarray(fp.exterior.coords).T)
            win = from_bounds(min(xs), min(ys), max(xs), max(ys), self.transform)
            try:
                win = win.intersection(full)
            except rasterio.errors.WindowError:
                continue
            r0, c0 = int(np.floor(win.row_off)), int(np.floor(win.col_off))
            r1, c1 = int(np.ceil(win.row_off + win.height)), int(np.ceil(win.col_off + win.width))
            block = self.arr[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)]
            if block.size and np.isfinite(block).any():
                out[i] = np.nanmean(block) if self.stat == "mean" else np.nansum(block)
        return out


class VectorIndicator:
    """A polygon attribute joined onto samples with geopandas."""

    def __init__(self, spec: dict[str, Any], path: Path, gazetteer: Gazetteer) -> None:
        self.name, self.path = spec["name"], str(path)
        self.method = spec.get("method", "point_in_polygon")
        if self.method not in ("point_in_polygon", "area_weighted_sum", "area_weighted_mean", "by_country"):
            raise InputError(f"indicator {self.name}: method must be point_in_polygon, area_weighted_sum, "
                             f"area_weighted_mean or by_country, got {self.method!r}")
        column = spec.get("column")
        if not isinstance(column, str):
            raise InputError(f"indicator {self.name}: set column: to the attribute that holds its values in {path}")
        if self.method == "by_country":  # country level: no buffer separates it, only whole unseen countries;
            # the prompt's address names the country, so the label can be read off the prompt.
            # Only the attribute table is read, through the Arrow cache: no geopandas in chunk workers.
            key = spec.get("key", "iso_a3")
            table = read_table(path, f"indicator {self.name}", [key, column])
            self.info = _info(spec, f"{path} ({column})", spec.get("resolution", "country"), spec.get("licence", ""),
                              derived_from_prompt=True)
            self.by_iso3 = _country_table(table[key].to_pylist(), table[column].to_pylist(), gazetteer)
            return
        gdf = read_vector(path, "indicator table")
        if column not in gdf.columns:
            raise InputError(f"indicator {self.name}: column {column!r} not in {path} (has {list(gdf.columns)})")
        gdf["value"] = gdf[column].astype(np.float64)
        self.gdf = gdf[["value", "geometry"]][gdf.geometry.notna() & ~gdf.geometry.is_empty].reset_index(drop=True)
        self.info = _info(spec, f"{path} ({column})", spec.get("resolution", "polygons"), spec.get("licence", ""),
                          resolution_km=_polygon_width_km(self.gdf))

    def values(self, batch: CellBatch) -> np.ndarray:
        n = len(batch.lat)
        if self.method == "by_country":
            return np.array([self.by_iso3.get(c, np.nan) if c else np.nan for c in batch.country], np.float64)
        import geopandas as gpd

        if self.method == "point_in_polygon":
            pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(batch.lon, batch.lat), crs="EPSG:4326")
            j = gpd.sjoin(pts, self.gdf, how="left", predicate="within")
            j = j[~j.index.duplicated(keep="first")]
            return j["value"].reindex(range(n)).to_numpy(np.float64)
        fps = gpd.GeoDataFrame({"i": np.arange(n)}, geometry=list(batch.footprints), crs="EPSG:4326")
        utm = fps.estimate_utm_crs()
        fps, polys = fps.to_crs(utm), self.gdf.to_crs(utm)
        polys["poly_area"] = polys.area
        inter = gpd.overlay(fps, polys, how="intersection", keep_geom_type=True)
        inter = inter[np.isfinite(inter["value"])]
        out = np.full(n, np.nan)
        if len(inter) == 0:
            return out
        a = inter.area.to_numpy()
        if self.method == "area_weighted_sum":
            contrib = inter["value"].to_numpy() * a / inter["poly_area"].to_numpy()
            out_vals = np.bincount(inter["i"], contrib, minlength=n)
        else:
            out_vals = np.bincount(inter["i"], inter["value"].to_numpy() * a, minlength=n) / \
                np.maximum(np.bincount(inter["i"], a, minlength=n), 1e-12)
        hit = np.bincount(inter["i"], minlength=n) > 0
        out[hit] = out_vals[hit]
        return out


class GeonamesPopulation:
    """Settlement population: summed GeoNames population within ``radius_km`` of the centre."""

    path = None  # computed from the gazetteer, no file of its own

    def __init__(self, spec: dict[str, Any], gazetteer: Gazetteer) -> None:
        self.name = spec["name"]
        self.radius_km = float(spec.get("radius_km", 10.0))
        self.gazetteer = gazetteer
        # The prompt's nearby places come from the same gazetteer: the label is derived from the prompt.
        self.info = _info(spec, f"GeoNames places >= {gazetteer.min_population} people within {self.radius_km:g} km",
                          f"points, summed within {self.radius_km:g} km", GEONAMES_LICENCE,
                          radius_km=self.radius_km, derived_from_prompt=True)

    def values(self, batch: CellBatch) -> np.ndarray:
        return self.gazetteer.population_within(batch.lat, batch.lon, self.radius_km)


_COMMON_KEYS = {"type", "name", "description", "unit", "resolution", "resolution_km", "derived_from_prompt", "licence"}
_KEYS = {
    "raster": _COMMON_KEYS | {"path", "band", "stat", "crs", "bounds", "nodata", "scale"},
    "vector": _COMMON_KEYS | {"path", "column", "method", "key"},
    "geonames_population": _COMMON_KEYS | {"radius_km"},
}


def _country_table(keys: Any, values: Any, gazetteer: Gazetteer) -> dict[str, float]:
    """ISO3 -> value from a column of ISO alpha-2 or alpha-3 codes (unknown codes are dropped)."""
    out = {}
    for k, v in zip(keys, values, strict=True):
        code = (gazetteer.iso3(k) or k) if isinstance(k, str) else None
        value = float(v) if v is not None else np.nan
        if code and len(code) == 3 and np.isfinite(value):
            out[code] = value
    return out


def indicator_from_config(spec: dict[str, Any], resolve: Any, gazetteer: Gazetteer) -> Any:
    """An indicator source from one ``indicators:`` entry of a region config."""
    kind = str(spec.get("type"))
    if "name" not in spec:
        raise InputError(f"indicator source {kind}: needs a name (the column it fills)")
    unknown = sorted(set(spec) - _KEYS.get(kind, set(spec)))
    if unknown:
        raise InputError(f"indicator {spec['name']}: unknown key(s) {unknown}; allowed: {sorted(_KEYS[kind])}")
    if kind in ("raster", "vector"):
        if "path" not in spec:
            raise InputError(f"indicator {spec['name']}: needs a path")
        path = resolve(spec["path"])
        if not Path(path).is_file():
            raise InputError(f"indicator {spec['name']}: {path} not found")
        return RasterIndicator(spec, path) if kind == "raster" else VectorIndicator(spec, path, gazetteer)
    if kind == "geonames_population":
        return GeonamesPopulation(spec, gazetteer)
    raise InputError(f"unknown indicator type {kind!r}; use raster, vector or geonames_population")


def footprint_array(polys: list[shapely.Geometry]) -> np.ndarray:
    """Shapely polygons as an object array (what CellBatch holds)."""
    arr = np.empty(len(polys), dtype=object)
    arr[:] = polys
    return arr
