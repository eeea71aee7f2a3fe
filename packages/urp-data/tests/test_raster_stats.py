"""Area-weighted raster statistics against analytic integrals.

A raster holds a known density (people per square metre) as people per pixel, so the people
under any footprint are the density times the footprint's area on the ellipsoid (pyproj's
geodesic area, computed independently of the code under test). The footprints are chosen to
cut pixels, and the rasters are in EPSG:4326 (pixels shrinking with latitude, like WorldPop)
and in a projected CRS (UTM).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Geod, Transformer
from rasterio.transform import from_origin
from urp_data.sources.base import CellBatch, footprint_array, square_lonlat
from urp_data.sources.raster_indicators import RasterIndicator

DENSITY = 0.004  # people per square metre (4,000 per km²)
GEOD = Geod(ellps="WGS84")
CENTRES = [(43.7312, 7.4203), (43.7377, 7.4286), (43.7111, -34.8567)]  # (lat, lon) degrees, off the pixel grid


def _area_m2(poly: shapely.Polygon) -> float:
    return abs(GEOD.geometry_area_perimeter(poly)[0])


def _geographic_raster(path: Path, pixel_deg: float, west: float = -35.0, north: float = 44.0) -> Path:
    """People per pixel at DENSITY over 60 pixels of latitude south of ``north`` and 45 degrees of
    longitude east of ``west`` in EPSG:4326, each row's pixel area taken on the
    ellipsoid (north-up rows, so row 0 is the northern edge)."""
    h, w = 60, round(45 / pixel_deg)
    lat_top = north - pixel_deg * np.arange(h)
    row_area = np.array([_area_m2(shapely.box(0, t - pixel_deg, pixel_deg, t)) for t in lat_top])
    arr = np.repeat((DENSITY * row_area)[:, None], w, axis=1).astype("float64")
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float64", crs="EPSG:4326",
                       transform=from_origin(west, north, pixel_deg, pixel_deg)) as dst:
        dst.write(arr, 1)
    return path


def _utm_raster(path: Path, pixel_m: float, crs: str, centre: tuple[float, float], linear: bool) -> Path:
    """A raster in ``crs`` around ``centre`` (lat, lon): people per pixel at DENSITY, or (``linear``)
    the easting in km of each pixel's centre, so the mean over a footprint is its centroid's easting."""
    x0, y0 = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(centre[1], centre[0])
    n = 64
    west, north = x0 - n / 2 * pixel_m, y0 + n / 2 * pixel_m
    if linear:
        arr = np.repeat(((west + pixel_m * (np.arange(n) + 0.5)) / 1000.0)[None, :], n, axis=0)
    else:
        arr = np.full((n, n), DENSITY * pixel_m * pixel_m)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float64", crs=crs,
                       transform=from_origin(west, north, pixel_m, pixel_m)) as dst:
        dst.write(arr, 1)
    return path


def _footprints(footprint_m: float) -> tuple[CellBatch, list[shapely.Polygon]]:
    polys = [shapely.box(*square_lonlat(lat, lon, footprint_m)) for lat, lon in CENTRES]
    lat, lon = np.array([c[0] for c in CENTRES]), np.array([c[1] for c in CENTRES])
    return CellBatch(lat, lon, footprint_array(polys), [None] * len(polys)), polys


@pytest.mark.parametrize("pixel_deg", [0.01, 1 / 120])  # larger than the chip, and WorldPop's 30 arc-seconds
def test_a_sum_in_degrees_equals_the_people_under_the_footprint(tmp_path, pixel_deg):
    ind = RasterIndicator({"name": "people", "stat": "sum"}, _geographic_raster(tmp_path / "p.tif", pixel_deg))
    batch, polys = _footprints(500.0)
    got = ind.values(batch)
    want = np.array([DENSITY * _area_m2(p) for p in polys])
    np.testing.assert_allclose(got, want, rtol=0.01)
    assert "area-weighted sum" in ind.info.method


def test_a_sum_in_utm_equals_the_people_under_the_footprint(tmp_path):
    lat, lon = CENTRES[0]
    ind = RasterIndicator({"name": "people", "stat": "sum"},
                          _utm_raster(tmp_path / "p.tif", 30.0, "EPSG:32632", (lat, lon), linear=False))
    batch, polys = _footprints(1000.0)
    got = ind.values(CellBatch(batch.lat[:1], batch.lon[:1], batch.footprints[:1], [None]))
    # UTM's scale factor (~0.9997 near the central meridian, up to 1.0004 at the zone's edge) is inside 1 %
    np.testing.assert_allclose(got, [DENSITY * _area_m2(polys[0])], rtol=0.01)


def test_an_area_weighted_mean_is_the_footprints_centroid_on_a_linear_field(tmp_path):
    lat, lon = CENTRES[0]
    crs = "EPSG:32632"
    ind = RasterIndicator({"name": "easting", "stat": "mean"},
                          _utm_raster(tmp_path / "e.tif", 300.0, crs, (lat, lon), linear=True))
    batch, polys = _footprints(1000.0)  # 1 km across 300 m pixels: every edge cuts a pixel
    got = ind.values(CellBatch(batch.lat[:1], batch.lon[:1], batch.footprints[:1], [None]))
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xy = np.asarray(shapely.segmentize(polys[0], 1e-5).exterior.coords)
    centroid_km = shapely.Polygon(np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1]))).centroid.x / 1000.0
    # the unweighted mean of the 16 touched pixels sits ~50 m off; the weighted one within a metre
    assert abs(got[0] - centroid_km) < 0.001
    assert "area-weighted mean" in ind.info.method


def test_nodata_pixels_count_for_nothing_in_a_sum(tmp_path):
    path = _geographic_raster(tmp_path / "p.tif", 0.01)
    with rasterio.open(path, "r+") as ds:
        ds.nodata = -1.0
        arr = ds.read(1)
        arr[:, : arr.shape[1] // 2] = -1.0  # the western half (lon < -10) is nodata
        ds.write(arr, 1)
    ind = RasterIndicator({"name": "people", "stat": "sum"}, path)
    batch, polys = _footprints(500.0)
    got = ind.values(batch)
    assert np.isnan(got[2])  # lon -34.86: only nodata under it, null not 0
    np.testing.assert_allclose(got[:2], [DENSITY * _area_m2(p) for p in polys[:2]], rtol=0.01)
