"""Indicator sources: anything with ``name``, ``info`` and ``values(batch) -> float64 array``, and
:func:`indicator_from_config`, which makes one from an ``indicators:`` entry of a region config.

NaN in the returned array means "no value" and becomes null in Parquet, never 0: a sample
outside a source, on nodata pixels, or in a polygon whose value is missing gets null.

- ``raster``: area-weighted mean (or sum) of the valid pixels under the chip footprint, from a
  local file or a URL (:mod:`urp_data.sources.raster_indicators`).
- ``vector``: ``point_in_polygon`` (the value of the polygon holding the centre), or
  ``area_weighted_sum`` (for counts: each polygon's value times the share of its area inside
  the footprint), or ``area_weighted_mean`` (for rates: mean weighted by overlap area), or
  ``by_country`` (a table keyed by ISO alpha-2 or alpha-3 code in column ``key``, joined on the
  sample's country: coarse country polygons would give border towns their neighbour's value).
- ``geonames_population``: summed population of GeoNames places within ``radius_km``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from urp_data.config.sources import given, read_indicator
from urp_data.errors import InputError
from urp_data.sources.base import CellBatch, IndicatorSource, indicator_info
from urp_data.sources.places.gazetteer import GEONAMES_LICENCE, Gazetteer
from urp_data.sources.raster_indicators import raster_indicator
from urp_data.sources.vectors import read_table, read_vector

VECTOR_METHODS = {
    "point_in_polygon": "value of the polygon holding the footprint's centre",
    "area_weighted_sum": "sum of each polygon's value times the share of the polygon's area inside the footprint",
    "area_weighted_mean": "polygon values weighted by their overlap area with the footprint",
    "by_country": "value of the sample's country, joined on its ISO code",
}
"""How each vector ``method`` is computed, as the manifest says it."""


def _polygon_width_km(gdf: Any) -> float | None:
    """The 90th percentile of the polygons' equivalent widths (sqrt of area), in km (equal-area EPSG:6933).

    A high percentile because a label is shared across a whole polygon: large polygons set how
    far apart two samples with the same value can be.
    """
    areas = gdf.geometry.to_crs("EPSG:6933").area.to_numpy()
    areas = areas[np.isfinite(areas) & (areas > 0)]
    return float(np.percentile(np.sqrt(areas), 90) / 1000.0) if areas.size else None


class VectorIndicator(IndicatorSource):
    """A polygon attribute joined onto samples with geopandas."""

    def __init__(self, spec: dict[str, Any], path: Path, gazetteer: Gazetteer) -> None:
        self.name, self.path = spec["name"], str(path)
        self.method = spec.get("method", "point_in_polygon")
        if self.method not in VECTOR_METHODS:
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
            self.info = indicator_info(spec, f"{path} ({column})", spec.get("resolution", "country"), spec.get("licence", ""),
                              method=VECTOR_METHODS[self.method], derived_from_prompt=True)
            self.by_iso3 = _country_table(table[key].to_pylist(), table[column].to_pylist(), gazetteer)
            return
        gdf = read_vector(path, "indicator table")
        if column not in gdf.columns:
            raise InputError(f"indicator {self.name}: column {column!r} not in {path} (has {list(gdf.columns)})")
        gdf["value"] = gdf[column].astype(np.float64)
        self.gdf = gdf[["value", "geometry"]][gdf.geometry.notna() & ~gdf.geometry.is_empty].reset_index(drop=True)
        self.info = indicator_info(spec, f"{path} ({column})", spec.get("resolution", "polygons"), spec.get("licence", ""),
                          method=VECTOR_METHODS[self.method], resolution_km=_polygon_width_km(self.gdf))

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


class GeonamesPopulation(IndicatorSource):
    """Settlement population: summed GeoNames population within ``radius_km`` of the centre."""

    path = None  # computed from the gazetteer, no file of its own

    def __init__(self, spec: dict[str, Any], gazetteer: Gazetteer) -> None:
        self.name = spec["name"]
        self.radius_km = float(spec.get("radius_km", 10.0))
        self.gazetteer = gazetteer
        # The prompt's nearby places come from the same gazetteer: the label is derived from the prompt.
        self.info = indicator_info(spec, f"GeoNames places >= {gazetteer.min_population} people within {self.radius_km:g} km",
                          f"points, summed within {self.radius_km:g} km", GEONAMES_LICENCE,
                          method=f"sum of the populations of GeoNames places within {self.radius_km:g} km of the centre",
                          radius_km=self.radius_km, derived_from_prompt=True)

    def values(self, batch: CellBatch) -> np.ndarray:
        return self.gazetteer.population_within(batch.lat, batch.lon, self.radius_km)


def _country_table(keys: Any, values: Any, gazetteer: Gazetteer) -> dict[str, float]:
    """ISO3 -> value from a column of ISO alpha-2 or alpha-3 codes (unknown codes are dropped)."""
    out = {}
    for k, v in zip(keys, values, strict=True):
        code = (gazetteer.iso3(k) or k) if isinstance(k, str) else None
        value = float(v) if v is not None else np.nan
        if code and len(code) == 3 and np.isfinite(value):
            out[code] = value
    return out


def indicator_from_config(spec: dict[str, Any], resolve: Any, gazetteer: Gazetteer) -> IndicatorSource:
    """An indicator source from one ``indicators:`` entry of a region config."""
    kind = str(spec.get("type"))
    spec = given(read_indicator(spec, "indicator source"), spec)  # the checked values of the keys given
    if kind == "raster" and "url" in spec:
        if "path" in spec:
            raise InputError(f"indicator {spec['name']}: give path (a local file) or url, not both")
        return raster_indicator(spec, None)
    if kind in ("raster", "vector"):
        if "path" not in spec:
            raise InputError(f"indicator {spec['name']}: needs a path" + (" or a url" if kind == "raster" else ""))
        path = resolve(spec["path"])
        if not Path(path).is_file():
            raise InputError(f"indicator {spec['name']}: {path} not found")
        return raster_indicator(spec, path) if kind == "raster" else VectorIndicator(spec, path, gazetteer)
    return GeonamesPopulation(spec, gazetteer)
