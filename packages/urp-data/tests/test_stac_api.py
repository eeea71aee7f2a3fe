"""A STAC API searched chip by chip (Sentinel-2-like), against loopback emulations that misbehave.

The API and the COG host are two loopback servers (stac_servers.py); the COGs are cut from the
demo's Landsat-7 scene of Olinda. Items: ``a`` (cloud 12 %, the whole scene), ``b`` (cloud 3 %,
only the western half, its COG with the bands reversed so its chips show), a cloudier item
(35 %), one without the asset, one outside the dates searched.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import shapely.geometry
from stac_servers import Host, olinda_cogs, olinda_items, running
from urp_data.build.run import build
from urp_data.cli import main
from urp_data.config.build import BuildConfig
from urp_data.contract import load_manifest
from urp_data.errors import InputError, SampleSkipped
from urp_data.net import http
from urp_data.outputs.card import text as card_text
from urp_data.sources.base import Scene, square_lonlat
from urp_data.sources.imagery.raster import RasterImagery
from urp_data.sources.imagery.stac_api import StacApiConfig, StacApiImagery

SPLITS = ("train", "val", "test_seen", "test_unseen")
WEST, EAST = (-8.0, -34.885), (-8.0, -34.855)  # (lat, lon) either side of item b's edge at lon -34.87


@pytest.fixture(scope="module")
def cogs(tmp_path_factory, data_dir) -> Path:
    """a.tif and b.tif (:func:`stac_servers.olinda_cogs`)."""
    return olinda_cogs(tmp_path_factory.mktemp("cogs"), data_dir / "demo" / "olinda_l7_etm.tif")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache root for this test (the HTTP and chip caches), tiny backoffs."""
    root = tmp_path / "cache"
    monkeypatch.setenv("URP_CACHE_DIR", str(root))
    monkeypatch.setattr(http, "CACHE_DIR", root / "http")
    monkeypatch.setattr(http, "BACKOFF_FACTOR", 0.01)
    monkeypatch.setattr(http, "BACKOFF_MAX_S", 0.05)
    return root


def _config(api: str, **kw) -> StacApiConfig:
    return StacApiConfig(api=api, collections=["sentinel-2-l2a"], datetime="2024-01-01/2024-12-31",
                         limit=2, min_interval_s=0.0, **kw)


def _region(tmp_path: Path, api: str, name: str = "s2", **imagery) -> Path:
    import yaml

    region = {"name": name, "area": {"bbox": [-34.89, -8.02, -34.85, -7.98]},
              "sampling": {"resolution": 8, "seed": 0, "samples": 6}, "chip": {"size_px": 16, "footprint_m": 300},
              "splits": {"buffer_km": 0, "unseen_fraction": 0.0}, "countries": "gazetteer", "indicators": [],
              "imagery": [{"type": "stac", "api": api, "collections": ["sentinel-2-l2a"], "datetime": "2024-01-01/2024-12-31",
                           "max_cloud_cover": 20, "limit": 2, "min_interval_s": 0.0,
                           "attribution": "Contains modified Copernicus Sentinel data 2024", **imagery}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(region))
    return path


def test_the_least_cloudy_item_holding_the_whole_chip_serves_it(cogs, cache):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        src = StacApiImagery(_config(api.url))
        for (lat, lon), name in ((WEST, "b.tif"), (EAST, "a.tif")):
            chip = src.read_chip(lat, lon, 300, 16)
            expected = RasterImagery(cogs / name, rescale=None).read_chip(lat, lon, 300, 16)
            np.testing.assert_array_equal(chip.rgb, expected.rgb)
        pages = [p for _, _, p, _ in api.log if p == "/search"]
        assert len(pages) == 2  # sorted by cloud cover: page 1 holds each answer; its next link is not followed
        assert src.read_chip(-7.5, -34.87, 300, 16) is None  # outside every item
        assert "proprietary (https://sentinel.example/legal-notice)" in src.licence  # from the collection


def test_without_sort_and_query_every_page_is_read_and_filtered_here(cogs, cache):
    core = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]
    with running(Host(files=cogs)) as cog, running(Host(items=[], conforms=core)) as api:
        a, b, cloudy, no_visual, old = olinda_items(cogs, cog.url)
        api.items = [a, cloudy, no_visual, b, old]  # unsorted: b, the least cloudy, comes on page 2
        src = StacApiImagery(_config(api.url))
        chip = src.read_chip(*WEST, 300, 16)
        np.testing.assert_array_equal(chip.rgb, RasterImagery(cogs / "b.tif", rescale=None).read_chip(*WEST, 300, 16).rgb)
        assert sum(p == "/search" for _, _, p, _ in api.log) == 2  # 4 items in the dates, 2 a page
        assert all("query=" not in q for _, _, _, q in api.log)  # the API offers no Query extension


def test_request_budget_counts_pages_and_cog_reads_from_geometry(cogs, cache):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        src = StacApiImagery(_config(api.url, gsd_m=10.0, block_px=512))
        sent = len(api.log)
        lat, lon = np.array([-8.0, -8.01, -8.02]), np.array([-34.87, -34.86, -34.85])
        search, reads = src.request_budget(lat, lon, footprint_m=1000, size_px=448)
        assert len(api.log) == sent  # from geometry alone
        assert (search.requests, search.host) == (3, api.url.split("//")[1])
        # 1 km at 10 m = 100 px (< 2 x 448: full resolution): (1 + 100/512)^2 = 1.43 tiles a chip,
        # plus GDAL's HEAD and header GET: 3 x 2 + ceil(3 x 1.43)
        assert reads.requests == 3 * 2 + 5
        # 1 km at 2 m = 500 px, read from the overview of 125 px for 64 px chips: (1 + 125/64)^2 = 8.72
        fine = StacApiImagery(_config(api.url, gsd_m=2.0, block_px=64)).request_budget(lat, lon, 1000, 64)[1]
        assert fine.requests == 3 * 2 + 27


def test_the_budget_covers_what_gdal_sends_for_a_lone_chip(cogs, cache):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        src = StacApiImagery(_config(api.url, gsd_m=28.5, block_px=128))  # the Landsat COGs of this test
        for footprint_m, size_px in ((300, 16), (3000, 64)):
            src._cogs.clear()
            sent = len(cog.log)
            src.read_chip(*EAST, footprint_m, size_px)
            budget = src.request_budget(np.array([EAST[0]]), np.array([EAST[1]]), footprint_m, size_px)[1]
            assert 0 < len(cog.log) - sent <= budget.requests


def _rows(out: Path) -> dict[str, list]:
    return {s: pq.read_table(out / f"{s}.parquet").to_pylist() for s in SPLITS}


@pytest.mark.slow
def test_a_build_through_faults_equals_the_clean_build_and_a_rebuild_sends_nothing(cogs, tmp_path, cache, monkeypatch):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        clean = build(BuildConfig(region=str(_region(tmp_path, api.url)), out=str(tmp_path / "clean")))
    rows = _rows(clean)
    assert sum(map(len, rows.values())) == 6
    manifest = json.loads((clean / "manifest.json").read_text())
    stac = next(i for i in manifest["inputs"] if i["role"] == "imagery")
    assert "Copernicus Sentinel data 2024" in stac["licence"] and "legal-notice" in stac["licence"]

    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache2" / "http")
    monkeypatch.setenv("URP_CACHE_DIR", str(tmp_path / "cache2"))
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        api.faults = {"/": ["html200", "json-error200"], "/collections/sentinel-2-l2a": ["truncated", "trickle"],
                      "/search": ["503", "503", "429:date+1", "html200", "429:0", "truncated-no-length", "ok",
                                  "json-error200", "empty-page200"]}  # at most 2 bad bodies a request
        cog.faults = {"/a.tif": ["503", "503"], "/b.tif": ["429:0", "ok", "truncated", "html200"]}  # GDAL's reads
        region = _region(tmp_path, api.url)
        faulty = build(BuildConfig(region=str(region), out=str(tmp_path / "faulty")))
        assert _rows(faulty) == rows
        assert not any(api.faults.values()) and not any(cog.faults.values())  # every fault was played
        sent = (len(api.log), len(cog.log))
        # In fresh worker processes, so that GDAL's in-process cache cannot stand in for the chip cache.
        again = build(BuildConfig(region=str(region), out=str(tmp_path / "again"), workers=2, chunk_size=3))
        assert (len(api.log), len(cog.log)) == sent  # all from the caches
    assert _rows(again) == rows


@pytest.mark.slow
def test_two_workers_keep_the_api_host_pace(cogs, tmp_path, cache):
    interval = 0.25
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        out = build(BuildConfig(region=str(_region(tmp_path, api.url, min_interval_s=interval)),
                                out=str(tmp_path / "out"), workers=2, chunk_size=2))
        times = sorted(t for t, _, p, _ in api.log if p == "/search")
    assert sum(len(v) for v in _rows(out).values()) == 6
    assert len(times) >= 6
    gaps = np.diff(times)
    assert gaps.min() >= interval * 0.8, gaps  # one pace for both processes, not one each
    assert times[-1] - times[0] >= (len(times) - 1) * interval * 0.95


@pytest.mark.parametrize("fault", ["redirect-to-file", "file-href", "s3-href", "503-burst", "html-always"])
def test_each_failure_is_one_line_exit_1_and_writes_nothing(cogs, tmp_path, cache, capsys, fault):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        href = {"file-href": "file:///etc/passwd", "s3-href": "s3://sentinel-cogs/a.tif"}.get(fault)
        api.items = olinda_items(cogs, cog.url, href_a=href)
        api.faults = {"redirect-to-file": {"/search": ["redirect:file:///etc/passwd"]},
                      "503-burst": {"/search": ["503"] * (http.RETRIES + 1)},
                      "html-always": {"/": ["html200"] * (1 + http.BODY_RETRIES)}}.get(fault, {})
        out = tmp_path / "out"
        code = main(["build", "--region", str(_region(tmp_path, api.url)), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("urp-data build: error: ") and "Traceback" not in "\n".join(err)
    assert sum("error:" in line for line in err) == 1
    expected = {"redirect-to-file": "redirects to a file:// URL", "file-href": "points at file:///etc/passwd",
                "s3-href": "points at s3://", "503-burst": "answered HTTP 503", "html-always": "text/html"}[fault]
    assert expected in err[-1], err[-1]
    assert not (out / "s2").exists()
    assert not [p for p in out.rglob("*") if p.suffix in (".parquet", ".json") and p.name != "state.json"]
    assert not any(p.startswith("/etc") for _, _, p, _ in cog.log)


def _served_catalog(folder: Path, href: str) -> None:
    """A static catalog under ``folder`` whose one item's visual asset is ``href``."""
    import pystac

    fp = shapely.box(-34.9, -8.05, -34.8, -7.95)
    cat = pystac.Catalog(id="remote", description="served from loopback")
    item = pystac.Item(id="a", geometry=shapely.geometry.mapping(fp), bbox=list(fp.bounds),
                       datetime=dt.datetime(2024, 6, 1, tzinfo=dt.UTC), properties={"eo:cloud_cover": 7.5})
    item.add_asset("visual", pystac.Asset(href=href, media_type=pystac.MediaType.COG))
    cat.add_item(item)
    cat.normalize_hrefs(str(folder / "stac"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)


@pytest.mark.parametrize("href", ["file:///etc/passwd", "s3://sentinel-cogs/a.tif", "gs://bucket/a.tif",
                                  "az://container/a.tif", "abfs://container@account.dfs.core.windows.net/a.tif"])
def test_a_remote_static_catalog_may_not_point_at_local_files_or_cloud_urls(tmp_path, cache, href):
    # (a bare path such as /etc/passwd resolves against the catalog's URL: it stays on that server)
    from urp_data.errors import InputError
    from urp_data.sources.imagery.stac_catalog import StacImagery

    _served_catalog(tmp_path / "www", href)
    with running(Host(files=tmp_path / "www")) as www, pytest.raises(InputError) as err:
        StacImagery(www.url + "/stac/catalog.json")
    msg = str(err.value)
    assert "only http(s) hrefs are followed from a remote catalog" in msg and href in msg and "\n" not in msg


def test_a_remote_static_catalog_may_not_link_to_a_local_file(tmp_path, cache):
    from urp_data.errors import InputError
    from urp_data.sources.imagery.stac_catalog import StacImagery

    _served_catalog(tmp_path / "www", "https://example.invalid/a.tif")
    local = tmp_path / "local.json"
    local.write_text('{"type": "Catalog"}')
    cat = tmp_path / "www" / "stac" / "catalog.json"
    doc = json.loads(cat.read_text())
    doc["links"] = [link for link in doc["links"] if link["rel"] != "item"] + [{"rel": "child", "href": local.as_uri()}]
    cat.write_text(json.dumps(doc))
    with running(Host(files=tmp_path / "www")) as www:
        with pytest.raises(InputError, match="only http"):
            StacImagery(www.url + "/stac/catalog.json")
        assert [p for _, _, p, _ in www.log] == ["/stac/catalog.json"]


def test_xyz_subdomains_pick_one_host_per_tile_and_each_host_keeps_its_pace(cache):
    from urp_data.sources.imagery.xyz import XYZImagery

    interval = 0.2
    with running(Host()) as one, running(Host()) as two, running(Host()) as plain:
        ports = [one.url.rsplit(":", 1)[1], two.url.rsplit(":", 1)[1]]
        src = XYZImagery("http://127.0.0.1:{s}/{z}/{x}/{y}.png", zoom=16, tile_size=64, subdomains=ports,
                         min_interval_s=interval)
        lat, lon = np.array([-8.0]), np.array([-34.87])
        budget = {b.host: b.requests for b in src.request_budget(lat, lon, 500, 32)}
        chip = src.read_chip(-8.0, -34.87, 500, 32)
        reference = XYZImagery(plain.url + "/{z}/{x}/{y}.png", zoom=16, tile_size=64, min_interval_s=0.0)
        np.testing.assert_array_equal(chip.rgb, reference.read_chip(-8.0, -34.87, 500, 32).rgb)
        for host, port in zip((one, two), ports, strict=True):
            tiles = [tuple(int(v) for v in p.removesuffix(".png").split("/")[2:]) for _, _, p, _ in host.log]
            assert tiles and all((x + y) % 2 == ports.index(port) for x, y in tiles)  # (x + y) mod 2 picks it
            assert budget[f"127.0.0.1:{port}"] == len(tiles)
            assert np.diff([t for t, *_ in host.log]).min() >= interval * 0.8
        both = sorted(t for h in (one, two) for t, *_ in h.log)
        assert np.diff(both).min() < interval * 0.8  # the two hosts are paced apart, not as one
        sent = len(one.log) + len(two.log)
        src.read_chip(-8.0, -34.87, 500, 32)
        assert len(one.log) + len(two.log) == sent  # the same tile, the same URL: a cache hit


def test_dry_run_prints_the_stac_budget_and_sends_nothing(cogs, tmp_path, cache, capsys):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        out = tmp_path / "out"
        assert main(["build", "--region", str(_region(tmp_path, api.url)), "--out", str(out), "--dry-run"]) == 0
        assert not api.log and not cog.log  # not even the landing page: the API is opened by a build
    printed = capsys.readouterr().out
    host = api.url.split("//")[1]
    lines = [line for line in printed.splitlines() if "sentinel-2-l2a" in line]
    assert printed.startswith("6 samples") and len(lines) == 2
    assert host in lines[0] and "search" in lines[0] and lines[0].split()[4] == "6"  # one sorted page a chip
    assert f"assets of {host}" in lines[1]
    assert not out.exists()


def test_a_remote_static_catalog_budgets_its_cog_reads(cogs, tmp_path, cache):
    from urp_data.sources.imagery.stac_catalog import StacImagery

    with running(Host(files=cogs)) as cog, running(Host(files=tmp_path / "www")) as www:
        _served_catalog(tmp_path / "www", cog.url + "/a.tif")
        src = StacImagery(www.url + "/stac/catalog.json", rescale=None)
        lat, lon = np.array([EAST[0], -7.0]), np.array([EAST[1], -34.87])  # the second is outside the scene
        (budget,) = src.request_budget(lat, lon, 3000, 64)
        assert budget.host == cog.url.split("//")[1]
        assert budget.requests == 2 + 4  # open; 3 km at 28.5 m = 105 px < 128 a tile: (1 + 105/128)^2 = 3.3 tiles
        sent = len(cog.log)  # the catalog's opening of the COG (HEAD, header) is part of what was sent
        src.read_chip(*EAST, 3000, 64)
        assert 0 < len(cog.log) <= budget.requests and len(cog.log) > sent


def test_a_local_catalog_may_still_link_to_file_uris(cogs, tmp_path, cache):
    from urp_data.sources.imagery.stac_catalog import StacImagery

    _served_catalog(tmp_path, str(cogs / "a.tif"))
    cat = tmp_path / "stac" / "catalog.json"
    doc = json.loads(cat.read_text())
    for link in doc["links"]:
        if link["rel"] == "item":
            link["href"] = (cat.parent / link["href"]).resolve().as_uri()
    cat.write_text(json.dumps(doc))
    src = StacImagery(str(cat), rescale=None)
    chip = src.read_chip(*EAST, 300, 16)
    np.testing.assert_array_equal(chip.rgb, RasterImagery(cogs / "a.tif", rescale=None).read_chip(*EAST, 300, 16).rgb)
    assert chip.scene == Scene("a", "2024-06-01T00:00:00Z", 7.5)  # the row's scene columns, as from an API


def test_an_item_fetched_over_http_from_a_local_catalog_is_held_to_http_assets(tmp_path, cache):
    from urp_data.errors import InputError
    from urp_data.sources.imagery.stac_catalog import StacImagery

    _served_catalog(tmp_path / "www", "file:///etc/passwd")
    with running(Host(files=tmp_path / "www")) as www:
        local = tmp_path / "local.json"
        local.write_text(json.dumps({"type": "Catalog", "id": "local", "stac_version": "1.0.0", "description": "mixed",
                                     "links": [{"rel": "item", "href": www.url + "/stac/a/a.json"}]}))
        with pytest.raises(InputError, match="only http"):
            StacImagery(str(local))
        assert [p for _, _, p, _ in www.log] == ["/stac/a/a.json"]


def test_a_next_link_that_asks_for_post_is_refused_in_one_line(cache):
    import pystac
    from urp_data.errors import InputError
    from urp_data.sources.imagery.stac_catalog import stac_reader

    link = pystac.Link(rel="next", target="http://127.0.0.1:9/search", extra_fields={"method": "POST", "body": {"t": 1}})
    with pytest.raises(InputError) as err:
        stac_reader("http://127.0.0.1:9/").read_text(link)
    assert "GET only" in str(err.value) and "\n" not in str(err.value)


def test_a_post_next_link_is_held_to_http_as_a_get_one_is(cache):
    import pystac
    from urp_data.sources.imagery.stac_catalog import stac_reader

    link = pystac.Link(rel="next", target="file:///etc/passwd", extra_fields={"method": "POST", "body": {"next": "t"}})
    with pytest.raises(InputError, match="only http"):
        stac_reader("http://127.0.0.1:9/", post=True).read_text(link)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_emulated_api_pages_as_pystac_client_expects(cogs, method):
    import pystac_client

    with running(Host(items=[])) as api:
        api.items = olinda_items(cogs, "http://127.0.0.1:9")
        search = pystac_client.Client.open(api.url).search(
            method=method, collections=["sentinel-2-l2a"], datetime="2024-01-01/2024-12-31", limit=1,
            query={"eo:cloud_cover": {"lte": 20}}, sortby="+properties.eo:cloud_cover")
        assert [i.id for i in search.items()] == ["no-visual", "b", "a"]
        assert [m for _, m, p, _ in api.log if p == "/search"] == [method] * 3  # one item a page, next links


def test_an_unreadable_scene_falls_back_to_the_next_best_item_holding_the_chip(cogs, cache):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        items = olinda_items(cogs, cog.url, href_a=cog.url + "/gone.tif")  # listed, but 404 (earth-search#36)
        backup = json.loads(json.dumps(items[0]))
        backup["id"], backup["properties"]["eo:cloud_cover"] = "backup", 15.0
        backup["assets"]["visual"]["href"] = cog.url + "/b.tif"
        api.items = [*items, backup]
        src = StacApiImagery(_config(api.url))
        chip = src.read_chip(*EAST, 300, 16)
        np.testing.assert_array_equal(chip.rgb, RasterImagery(cogs / "b.tif", rescale=None).read_chip(*EAST, 300, 16).rgb)
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url, href_a=cog.url + "/gone-403.tif")  # 404; "403" in a URL is no block
        with pytest.raises(SampleSkipped, match="unreadable scene") as err:
            StacApiImagery(_config(api.url)).read_chip(*EAST, 300, 16)
        assert err.value.reason == "unreadable scene"


@pytest.mark.parametrize("share", [0.05, 1.0])
def test_failed_samples_are_counted_per_reason_or_stop_the_build_past_their_share(cogs, tmp_path, cache, capsys, share):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url, href_a=cog.url + "/gone.tif")  # east of lon -34.87 every chip fails
        region = _region(tmp_path, api.url)
        import yaml

        doc = yaml.safe_load(region.read_text())
        doc["chip"]["max_failed_fraction"] = share
        region.write_text(yaml.safe_dump(doc))
        out = tmp_path / "out"
        code = main(["build", "--region", str(region), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    if share < 1:
        assert code == 1 and "samples failed" in err[-1] and "unreadable scene" in err[-1] and "unusable" in err[-1]
        assert not (out / "s2").exists()
        return
    assert code == 0
    m = load_manifest(out / "s2")
    [(reason, n)] = m.counts["skipped_failed"].items()
    assert reason.endswith(": unreadable scene") and n > 0
    assert sum(m.counts["per_split"].values()) + n + m.counts["skipped_no_imagery"] + m.counts["buffer_dropped"] \
        == m.counts["sampled"]
    assert f"unreadable scene: {n}" in (out / "s2" / "README.md").read_text()


def test_a_403_from_the_asset_host_stops_the_build_in_one_line(cogs, tmp_path, cache, capsys):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        cog.faults = {"/a.tif": ["403"] * 20, "/b.tif": ["403"] * 20}
        out = tmp_path / "out"
        code = main(["build", "--region", str(_region(tmp_path, api.url)), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "403" in err[-1] and "blocks us" in err[-1]
    assert not (out / "s2").exists()


@pytest.mark.parametrize("post", [True, False])
def test_a_cloud_filter_goes_as_cql2_json_where_only_the_filter_extension_is_offered(cogs, cache, post):
    from urllib.parse import parse_qs

    offered = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
               "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter"]
    with running(Host(files=cogs)) as cog, running(Host(items=[], conforms=offered)) as api:
        api.items = olinda_items(cogs, cog.url)
        if not post:  # a landing page with a GET search link only
            api.landing = api.document("GET", "/", "", b"")
            api.landing["links"] = [link for link in api.landing["links"] if link.get("method") != "POST"]
        chip = StacApiImagery(_config(api.url)).read_chip(*EAST, 300, 16)
        searches = [(m, q) for _, m, p, q in api.log if p == "/search"]
        sent = len(api.log)
        StacApiImagery(_config(api.url)).best_item(square_lonlat(*EAST, 300))
        assert len(api.log) == sent  # the same searches again, POSTs included: all from the cache
    np.testing.assert_array_equal(chip.rgb, RasterImagery(cogs / "a.tif", rescale=None).read_chip(*EAST, 300, 16).rgb)
    cql2 = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20.0]}
    if post:  # the landing page offers POST /search: the filter goes as JSON in the body, as stac-server wants it
        # unsorted, so both pages of the 4 items in the dates are read: the second through the page's POST
        # next link, whose body (a token, ``merge: true``) is merged into the search's
        assert [m for m, _ in searches] == ["POST", "POST"] and not any(q for _, q in searches)
        first, second = api.posted
        assert first["filter-lang"] == "cql2-json" and first["filter"] == cql2 and "token" not in first
        assert first["collections"] == ["sentinel-2-l2a"] and first["datetime"].startswith("2024-01-01")
        assert second == {**first, "token": 2}
        return
    [(method, query)] = [(m, parse_qs(q)) for m, q in searches[:1]]
    assert method == "GET" and not api.posted
    assert query["filter-lang"] == ["cql2-json"]
    assert json.loads(query["filter"][0]) == cql2


RECORDED = Path(__file__).parent / "data" / "recorded"


def test_the_real_earth_search_landing_page_selects_query_sort_and_get_search(cogs, cache):
    # Earth Search's own landing page (pystac-client's cassette, see data/recorded/README.md), its
    # host rewritten to the loopback: its v1.0.0-rc.2 Query and Sort classes must be recognised
    text = (RECORDED / "earth_search_v1_landing.json").read_text()
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.landing = json.loads(text.replace("https://earth-search.aws.element84.com/v1", api.url))
        api.conforms = api.landing["conformsTo"]
        api.items = olinda_items(cogs, cog.url)
        src = StacApiImagery(_config(api.url))
        chip = src.read_chip(*EAST, 300, 16)
        searches = [q for _, m, p, q in api.log if p == "/search"]
    assert src._query and src._sorted and not src._filter
    np.testing.assert_array_equal(chip.rgb, RasterImagery(cogs / "a.tif", rescale=None).read_chip(*EAST, 300, 16).rgb)
    from urllib.parse import parse_qs

    [first] = [parse_qs(q) for q in searches[:1]]
    assert json.loads(first["query"][0]) == {"eo:cloud_cover": {"lte": 20.0}}
    assert first["sortby"] == ["+properties.eo:cloud_cover"] and len(searches) == 1  # sorted: one page


def test_each_row_names_its_scene_and_the_card_sums_them_up(cogs, tmp_path, cache):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        api.items = olinda_items(cogs, cog.url)
        out = build(BuildConfig(region=str(_region(tmp_path, api.url)), out=str(tmp_path / "out")))
    rows = [r for split in _rows(out).values() for r in split]
    clouds = {"a": 12.0, "b": 3.0}  # the least-cloudy item holding each chip (see _items)
    assert {r["scene_id"] for r in rows} == {"a", "b"}
    for r in rows:
        assert r["scene_cloud_cover"] == clouds[r["scene_id"]]
        assert r["scene_datetime"].startswith("2024-06-01T12:00:00")
        assert (r["scene_id"] == "b") == (r["lon"] < -34.87)  # b holds only the west
    m = load_manifest(out)
    assert m.counts["scenes"]["chips"] == len(rows) and m.counts["scenes"]["first_acquired"].startswith("2024-06-01")
    card = (out / "README.md").read_text()
    first = card_text(m.counts["scenes"]["first_acquired"])  # a date from the STAC items, quoted Markdown-escaped
    assert first.startswith("2024\\-06\\-01")
    assert f"{len(rows)} chips were cut from satellite scenes acquired {first}" in card and "`scene_id`" in card


def test_a_season_passes_over_items_acquired_in_other_months(cogs, cache):
    with running(Host(files=cogs)) as cog, running(Host(items=[])) as api:
        items = olinda_items(cogs, cog.url)
        winter = json.loads(json.dumps(items[0]))  # a clearer scene of a, but acquired in January
        winter["id"], winter["properties"]["eo:cloud_cover"] = "winter", 1.0
        winter["properties"]["datetime"] = "2024-01-15T12:00:00+00:00"
        api.items = [*items, winter]
        assert StacApiImagery(_config(api.url)).best_item(square_lonlat(*EAST, 300)).id == "winter"
        assert StacApiImagery(_config(api.url, months=[6, 7, 8])).best_item(square_lonlat(*EAST, 300)).id == "a"
    with pytest.raises(InputError, match="months must list months 1-12"):
        _config("http://127.0.0.1:1", months=[13])


ES_API, ES_ASSETS = "https://earth-search.aws.element84.com/v1", "https://e84-earth-search-sentinel-data.s3.us-west-2.amazonaws.com"
MWV, MVV = "S2B_T24MWV_20250731T130245_L2A", "S2B_T24MVV_20250731T130245_L2A"  # Sentinel-2 tiles 24MWV, 24MVV
IN_BOTH = (-4.6, -38.95)  # (lat, lon) inside both scenes' footprints, off the coast of Ceará


def _tci(path: Path, seed: int) -> None:
    """A 3-band 8-bit COG on a scene's own grid (EPSG:32724, 10 m, origin as its ``proj:transform`` says), cut
    to 2.56 km around ``IN_BOTH``: what its ``visual`` asset (TCI.tif) would give there."""
    from pyproj import Transformer
    from rasterio.transform import from_origin

    x, y = Transformer.from_crs(4326, 32724, always_xy=True).transform(IN_BOTH[1], IN_BOTH[0])
    left, top = 499980 + 10 * (int(x - 499980) // 10 - 128), 9500020 - 10 * (int(9500020 - y) // 10 - 128)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(1, 256, (3, 256, 256), dtype=np.uint8)
    with rasterio.open(path, "w", driver="COG", width=256, height=256, count=3, dtype="uint8", crs="EPSG:32724",
                       transform=from_origin(left, top, 10, 10), nodata=0, blocksize=128) as out:
        out.write(rgb)


@pytest.mark.parametrize("missing", [None, MWV])
def test_real_earth_search_pages_are_paged_and_the_least_cloudy_c1_item_holding_the_chip_wins(tmp_path, cache, missing):
    # Two pages of a real cql2-json POST search of Earth Search v1 (pystac-client's cassette, see
    # data/recorded/README.md): Sentinel-1, Sentinel-2 L1C, legacy L2A and sentinel-2-c1-l2a items, paged by
    # POST next links with a token body. Only hosts are rewritten; the landing page is the emulation's,
    # offering CQL2 and POST but no sort, so both pages are read and ranked here.
    pages = [(RECORDED / f"earth_search_v1_search_cql2_page{n}.json").read_text() for n in (1, 2)]
    www = tmp_path / "www"
    for seed, tile in enumerate((MWV, MVV)):
        if tile != missing:  # the assets' own paths, as the items name them
            _tci(www / f"sentinel-2-c1-l2a/24/M/{tile[8:10]}/2025/7/{tile}/TCI.tif", seed)
    offered = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
               "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter"]
    with running(Host(files=www)) as cog, running(Host(items=[], conforms=offered)) as api:
        docs = [json.loads(p.replace(ES_API, api.url).replace(ES_ASSETS, cog.url)) for p in pages]
        [token] = [link["body"]["next"] for link in docs[0]["links"] if link["rel"] == "next"]
        api.pages = {None: docs[0], token: docs[1]}
        cfg = StacApiConfig(api=api.url, collections=["sentinel-2-c1-l2a"], datetime="2025-07-01/2025-07-31",
                            max_cloud_cover=40, limit=10, max_items=20, min_interval_s=0.0)
        src = StacApiImagery(cfg)
        chip = src.read_chip(*IN_BOTH, 300, 16)
        first, second = api.posted
        reads = {p.split("/")[-2] for _, _, p, _ in cog.log}
    assert first["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 40]}
    assert first["filter-lang"] == "cql2-json" and first["collections"] == ["sentinel-2-c1-l2a"]
    assert second == {"next": token}  # the link's body alone: it says merge false
    # 24MWV (25.3 % cloud, page 2) beats 24MVV (34.8 %, page 1); the L1C item of 24MWV (15.0 %, also with a
    # visual asset) is of another collection, and legacy sentinel-2-l2a duplicates are passed over too
    best = MVV if missing else MWV
    expected = RasterImagery(www / f"sentinel-2-c1-l2a/24/M/{best[8:10]}/2025/7/{best}/TCI.tif",
                             rescale=None).read_chip(*IN_BOTH, 300, 16)
    np.testing.assert_array_equal(chip.rgb, expected.rgb)
    assert reads == ({MWV, MVV} if missing else {MWV})  # the missing asset was tried, then the next-best item
    assert chip.scene == Scene(*{MWV: (MWV, "2025-07-31T13:03:24.321000Z", 25.342679),
                                 MVV: (MVV, "2025-07-31T13:03:25.899000Z", 34.760532)}[best])
