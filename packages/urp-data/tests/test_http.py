"""urp_data.net.http against a local server that misbehaves on purpose (loopback only, stopped by each test).

Every fault is one the issue names: 429 with Retry-After in seconds and as an HTTP date, 503
bursts, an HTML error page sent with status 200, truncated bodies with and without
Content-Length, a trickle that would never end, and redirects that leave http(s).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from servers import Faulty as _Faulty
from servers import png as _png
from urp_data.errors import InputError
from urp_data.net import body, http
from urp_data.sources.imagery.raster import RasterImagery
from urp_data.sources.imagery.stac_catalog import StacImagery
from urp_data.sources.imagery.xyz import XYZImagery, _decode_image


def _cached_files(tmp_path):
    return [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".pace" not in p.parts]


def _get_png(url, **kw):
    return http.get(url, min_interval_s=0.0, content_types=("image/",), check=_decode_image, **kw)


def test_retry_after_in_seconds_and_as_a_date_is_honoured(server):
    _Faulty.faults = {"/a.png": ["429:1"], "/b.png": ["429:date+2"]}
    assert _get_png(server + "/a.png") == _png("/a.png")
    assert _get_png(server + "/b.png") == _png("/b.png")
    times = {p: [t for t, q in _Faulty.log if q == p] for p in ("/a.png", "/b.png")}
    assert len(times["/a.png"]) == len(times["/b.png"]) == 2
    assert times["/a.png"][1] - times["/a.png"][0] >= 0.9  # waited the 1 s asked for, not the 0.01 s backoff
    assert times["/b.png"][1] - times["/b.png"][0] >= 0.9  # a date 2 s ahead (whole seconds): at least 1 s


def test_retry_after_is_capped(server, monkeypatch):
    monkeypatch.setattr(http, "RETRY_AFTER_MAX_S", 1)
    _Faulty.faults = {"/a.png": ["429:3600"]}
    start = time.monotonic()
    assert _get_png(server + "/a.png") == _png("/a.png")
    assert time.monotonic() - start < 5  # not an hour


def test_a_503_burst_is_retried_and_too_long_a_burst_fails_in_one_line(server, tmp_path):
    _Faulty.faults = {"/a.png": ["503"] * 3, "/b.png": ["503"] * (http.RETRIES + 1)}
    assert _get_png(server + "/a.png") == _png("/a.png")
    assert sum(p == "/a.png" for _, p in _Faulty.log) == 4
    with pytest.raises(InputError) as err:
        _get_png(server + "/b.png")
    assert "answered HTTP 503" in str(err.value) and "\n" not in str(err.value)
    assert sum(p == "/b.png" for _, p in _Faulty.log) == http.RETRIES + 1  # bounded
    assert len(_cached_files(tmp_path)) == 1  # only /a.png


def test_retries_keep_the_host_limit(server):
    _Faulty.faults = {"/a.png": ["503", "503"]}
    assert http.get(server + "/a.png", min_interval_s=0.3, check=_decode_image) == _png("/a.png")
    times = [t for t, p in _Faulty.log if p == "/a.png"]
    assert len(times) == 3 and min(np.diff(times)) >= 0.25  # not the 0.01 s backoff


@pytest.mark.parametrize("fault", ["html200", "html200-as-png", "png-as-html", "truncated", "truncated-no-length"])
def test_a_bad_body_is_retried_and_never_cached(server, tmp_path, fault):
    _Faulty.faults = {"/a.png": [fault], "/b.png": [fault] * (1 + http.BODY_RETRIES)}
    assert _get_png(server + "/a.png") == _png("/a.png")  # the second try is good
    assert sum(p == "/a.png" for _, p in _Faulty.log) == 2
    with pytest.raises(InputError) as err:
        _get_png(server + "/b.png")
    assert "\n" not in str(err.value)
    assert [p.name for p in _cached_files(tmp_path)] == [http.cache_path(server + "/a.png").name]
    assert _get_png(server + "/b.png") == _png("/b.png")  # the server mends: nothing bad was kept


def test_json_must_parse(server):
    _Faulty.faults = {"/cat.json": ["truncated-no-length"] * 3}
    with pytest.raises(InputError, match="does not decode"):
        http.get(server + "/cat.json", min_interval_s=0.0, content_types=("application/json",), check=json.loads)


def test_a_trickle_stops_at_the_deadline(server):
    _Faulty.faults = {"/a.png": ["trickle"] * 3}
    start = time.monotonic()
    with pytest.raises(InputError, match="deadline"):
        _get_png(server + "/a.png", deadline_s=0.5)
    assert time.monotonic() - start < 2.0


def test_a_body_over_the_size_cap_is_refused(server, monkeypatch):
    monkeypatch.setattr(body, "MAX_BYTES", 100)
    with pytest.raises(InputError, match="limit"):
        _get_png(server + "/a.png")


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/a.png", "file:///etc/passwd"])
def test_a_redirect_out_of_http_is_refused(server, target, tmp_path):
    _Faulty.faults = {"/a.png": [f"redirect:{target}"]}
    with pytest.raises(InputError, match="redirects to a"):
        _get_png(server + "/a.png")
    assert not _cached_files(tmp_path)


def test_a_redirect_within_http_is_followed(server):
    _Faulty.faults = {"/a.png": [f"redirect:{server}/b.png"]}
    assert _get_png(server + "/a.png") == _png("/b.png")


def test_a_redirect_from_https_to_http_is_refused():
    # No TLS server on loopback here: the redirect check is run on a real 302 response object.
    resp = requests.Response()
    resp.status_code, resp.url = 302, "https://127.0.0.1:1/a.png"
    resp.headers["Location"] = "http://127.0.0.1:1/a.png"
    with pytest.raises(InputError, match="never from https to http"):
        http.PoliteSession().get_redirect_target(resp)
    resp.headers["Location"] = "https://127.0.0.1:2/b.png"
    assert http.PoliteSession().get_redirect_target(resp) == "https://127.0.0.1:2/b.png"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/a.png", "file:///etc/passwd", "http:///nohost", "http://127.0.0.1:99999x/"])
def test_what_no_retry_can_fix_fails_at_once(server, url):
    with pytest.raises(InputError) as err:
        _get_png(url)
    assert "\n" not in str(err.value)
    assert not _Faulty.log


@pytest.mark.parametrize("url", ["ftp://tiles.example.org/{z}/{x}/{y}.png?key=SECRET5", "https:///{z}/{x}/{y}.png"])
def test_an_xyz_source_with_a_bad_url_fails_before_any_request(url):
    with pytest.raises(InputError) as err:
        XYZImagery(url)
    assert "SECRET" not in str(err.value) and "\n" not in str(err.value)


def test_a_404_fails_at_once_with_its_secret_redacted(server, caplog):
    _Faulty.faults = {"/a.png": ["404"]}
    caplog.set_level(logging.DEBUG, logger="urp_data.net.http")
    with pytest.raises(InputError) as err:
        _get_png(server + "/a.png?token=SECRET1&x=1&access_token=SECRET2&sig=SECRET3")
    msg = str(err.value)
    assert "answered HTTP 404" in msg and "token=***" in msg and "x=1" in msg
    assert "SECRET" not in msg and "SECRET" not in caplog.text and "token=***" in caplog.text
    assert len(_Faulty.log) == 1
    src = XYZImagery(server + "/{z}/{x}/{y}.png?key=SECRET4", min_interval_s=0.0)
    assert "SECRET" not in src.path and "SECRET" not in src.name  # what the manifest records


def test_a_second_run_sends_no_request_and_the_key_ignores_parameter_order(server, tmp_path):
    urls = [server + f"/{i}.png?b=2&a=1" for i in range(3)]
    first = [_get_png(u) for u in urls]
    assert len(_Faulty.log) == 3
    again = [_get_png(u.replace("?b=2&a=1", ""), params={"a": 1, "b": 2}) for u in urls]
    assert again == first and len(_Faulty.log) == 3
    assert len(_cached_files(tmp_path)) == 3


def test_xyz_chip_through_faults_equals_the_clean_chip(server, tmp_path, monkeypatch):
    src = XYZImagery(server + "/{z}/{x}/{y}.png", zoom=14, tile_size=64, min_interval_s=0.0)
    clean = src.read_chip(-8.0, -34.87, footprint_m=3000, size_px=32)
    tiles = sorted({p for _, p in _Faulty.log})
    assert len(tiles) >= 2
    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache2")
    _Faulty.log = []
    faults = ["html200", "503", "truncated", "truncated-no-length", "429:0"]
    _Faulty.faults = {t: [faults[i % len(faults)]] for i, t in enumerate(tiles)}
    faulty = src.read_chip(-8.0, -34.87, footprint_m=3000, size_px=32)
    np.testing.assert_array_equal(faulty.rgb, clean.rgb)
    assert len(_Faulty.log) == 2 * len(tiles)


_WORKER = """
import sys, time
from urp_data.net import http
base, tag, n, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
start = float(sys.argv[5])
time.sleep(max(0.0, start - time.time()))
for i in range(n):
    http.get(f"{base}/{tag}-{i}.json", min_interval_s=interval, check=__import__("json").loads)
"""


@pytest.mark.slow
def test_the_rate_limit_holds_across_two_processes(server, tmp_path):
    interval, n = 0.2, 5
    env = {"URP_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    start = str(time.time() + 2.0)  # both start sending together, after their imports
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, server, tag, str(n), str(interval), start], env=env)
             for tag in ("p", "q")]
    for p in procs:
        assert p.wait(timeout=30) == 0
    times = sorted(t for t, _ in _Faulty.log)
    assert len(times) == 2 * n and {p.split("-")[0] for _, p in _Faulty.log} == {"/p", "/q"}
    gaps = np.diff(times)
    # One limit for both processes, not one each (which would send pairs ~0 s apart); the
    # margins allow for a process that wakes late on a busy machine.
    assert gaps.min() >= interval * 0.5, gaps
    assert times[-1] - times[0] >= (2 * n - 1) * interval * 0.95, gaps


def _served_cog_item(server, www, data_dir):
    """(a STAC item whose COG, cut from a demo scene, is served by ``server``; the same COG read locally)."""
    import datetime as dt

    import pystac
    import rasterio
    import shapely.geometry
    from rasterio.windows import from_bounds

    www.mkdir(exist_ok=True)
    with rasterio.open(data_dir / "demo" / "olinda_l7_etm.tif") as ds:
        x, y = RasterImagery(data_dir / "demo" / "olinda_l7_etm.tif")._to_src.transform(-34.87, -8.0)
        win = from_bounds(x - 1500, y - 1500, x + 1500, y + 1500, ds.transform)
        profile = {**ds.profile, "driver": "COG", "blocksize": 128, "width": round(win.width),
                   "height": round(win.height), "transform": ds.window_transform(win)}
        profile = {k: v for k, v in profile.items() if k not in ("tiled", "blockxsize", "blockysize", "interleave")}
        with rasterio.open(www / "olinda.tif", "w", **profile) as out:
            out.write(ds.read(window=win, out_shape=(ds.count, round(win.height), round(win.width))))
    local = RasterImagery(www / "olinda.tif", bands=[3, 2, 1], rescale=[0, 255])
    fp = local.footprint()
    item = pystac.Item(id="olinda", geometry=shapely.geometry.mapping(fp), bbox=list(fp.bounds),
                       datetime=dt.datetime(2020, 5, 18, tzinfo=dt.UTC), properties={})
    item.add_asset("visual", pystac.Asset(href=server + "/olinda.tif", media_type=pystac.MediaType.COG))
    return item, local


def test_a_remote_stac_catalog_is_read_through_the_layer_and_its_cog_with_gdal_settings(server, tmp_path, data_dir):
    import pystac

    www = tmp_path / "www"
    item, local = _served_cog_item(server, www, data_dir)
    cat = pystac.Catalog(id="remote", description="served from loopback")
    cat.add_item(item)
    cat.normalize_hrefs(str(www / "stac"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    _Faulty.faults = {"/stac/catalog.json": ["html200"], "/stac/olinda/olinda.json": ["503", "truncated"]}

    src = StacImagery(server + "/stac/catalog.json", bands=[3, 2, 1], rescale=[0, 255])
    assert [s.name for s in src.sources] == ["olinda"]
    chip = src.read_chip(-8.0, -34.87, 1000, 32)
    np.testing.assert_array_equal(chip.rgb, local.read_chip(-8.0, -34.87, 1000, 32).rgb)
    tif = [a for (_, p), a in zip(_Faulty.log, _Faulty.agents, strict=True) if p == "/olinda.tif"]
    assert tif and set(tif) == {http.USER_AGENT}  # GDAL's own reads carry our settings
    json_requests = sum(p.endswith(".json") for _, p in _Faulty.log)
    StacImagery(server + "/stac/catalog.json", bands=[3, 2, 1], rescale=[0, 255])
    assert sum(p.endswith(".json") for _, p in _Faulty.log) == json_requests  # catalog and item: from the cache


def test_a_build_from_a_keyed_tile_server_keeps_the_key_out_of_its_manifest(server, write_region, tmp_path):
    from urp_data.build.run import build
    from urp_data.config.build import BuildConfig

    region = write_region(area={"bbox": [-34.885, -8.01, -34.875, -8.0]}, chip={"size_px": 16, "footprint_m": 300},
                          splits={"buffer_km": 0, "unseen_fraction": 0.0}, indicators=[],
                          imagery=[{"type": "xyz", "url": server + "/{z}/{x}/{y}.png?key=SECRET9&style=a",
                                    "zoom": 14, "tile_size": 64, "min_interval_s": 0.0}])
    out = build(BuildConfig(region=str(region), out=str(tmp_path / "out")))
    assert _Faulty.log and all("key=SECRET9" in p for _, p in _Faulty.log)  # the server did get the key
    text = "".join(p.read_text() for p in out.rglob("*") if p.suffix in (".json", ".md"))
    assert "SECRET9" not in text and "key=***" in text


def test_a_stac_api_search_goes_through_the_polite_session(server, tmp_path, data_dir):
    www = tmp_path / "www"
    item, local = _served_cog_item(server, www, data_dir)
    (www / "api").mkdir()
    landing = {"type": "Catalog", "stac_version": "1.0.0", "id": "api", "description": "a loopback STAC API",
               "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
               "links": [{"rel": "self", "href": server + "/api/index.json", "type": "application/json"},
                         {"rel": "root", "href": server + "/api/index.json", "type": "application/json"},
                         {"rel": "search", "href": server + "/api/search", "type": "application/geo+json",
                          "method": "GET"}]}
    (www / "api" / "index.json").write_text(json.dumps(landing))
    (www / "api" / "search").write_text(json.dumps({"type": "FeatureCollection", "features": [item.to_dict()],
                                                    "links": []}))
    _Faulty.faults = {"/api/search": ["503"]}
    src = StacImagery(server + "/api/index.json", bbox=[-34.9, -8.05, -34.85, -7.95], bands=[3, 2, 1],
                      rescale=[0, 255])
    assert [s.name for s in src.sources] == ["olinda"]
    np.testing.assert_array_equal(src.read_chip(-8.0, -34.87, 1000, 32).rgb, local.read_chip(-8.0, -34.87, 1000, 32).rgb)
    searches = [a for (_, p), a in zip(_Faulty.log, _Faulty.agents, strict=True) if p.startswith("/api/search")]
    assert len(searches) == 2 and set(searches) == {http.USER_AGENT}  # the 503 was retried, with our User-Agent
