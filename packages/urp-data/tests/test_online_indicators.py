"""Indicators read over the network, and chips read concurrently, against the loopback fault server.

The indicator host serves a real GeoTIFF made here from a demo Landsat band (a COG with 64-pixel
blocks and a nodata value) with HTTP range requests. A build that reads it online, through
faults, must equal a build that reads the same file from disk, row for row; a second build must
send no request; a wrong checksum must fail in one line with nothing written.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from servers import Faulty, indicator_raster
from urp_data.build.run import build
from urp_data.cli import main
from urp_data.config.build import BuildConfig
from urp_data.contract import SPLITS, split_path
from urp_data.errors import InputError
from urp_data.net import downloads, http, ranges
from urp_data.sources import raster_indicators

NIR = "nir"  # the online indicator's column
REF = "nir_local"  # the same raster read from disk


@pytest.fixture
def host(server, tmp_path):
    """(base URL, local path, sha256) of the indicator COG served by the fault server."""
    cog = indicator_raster(tmp_path / "www" / "nir.tif", block_px=64)
    return server, cog, hashlib.sha256(cog.read_bytes()).hexdigest()


def _build(write_region, tmp_path, out: str, online: dict, local: Path, **kw):
    region = write_region(indicators=[{"name": NIR, "type": "raster", "licence": "test", **online},
                                      {"name": REF, "type": "raster", "path": str(local), "licence": "test"}],
                          **kw)
    return build(BuildConfig(region=str(region), out=str(tmp_path / out)))


def _rows(folder: Path) -> dict[str, list[dict]]:
    return {s: pq.read_table(split_path(folder, s)).to_pylist() for s in SPLITS}


def _requests() -> list[str]:
    return [p for _, p in Faulty.log]


@pytest.mark.parametrize("mode", ["download", "cog"])
def test_an_online_indicator_through_faults_equals_the_file_read_from_disk(host, write_region, tmp_path,
                                                                          monkeypatch, mode):
    base, cog, digest = host
    online = {"url": base + "/nir.tif", "mode": mode, "min_interval_s": 0.0}
    if mode == "download":
        online["sha256"] = digest
        monkeypatch.setattr(raster_indicators.DownloadIndicator, "in_memory_max", 0)  # windowed, as a global layer
    else:  # many small range requests
        monkeypatch.setattr(ranges, "CHUNK_BYTES", 8192)
    clean = _build(write_region, tmp_path, "clean", online, cog)
    clean_requests = len(_requests())
    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache-faulty")
    Faulty.log = []
    # the download, or the first range request (the header), meets every fault
    Faulty.faults = {"/nir.tif": ["429:1", "503", "html200", "truncated-no-length" if mode == "download" else
                                  "truncated"]}
    out = _build(write_region, tmp_path, "a", online, cog)
    assert _rows(out) == _rows(clean)  # row for row
    rows = [r for split in _rows(out).values() for r in split]
    nir, ref = np.array([r[NIR] for r in rows], float), np.array([r[REF] for r in rows], float)
    assert len(rows) > 20 and np.isfinite(nir).sum() > 20
    np.testing.assert_array_equal(nir, ref)  # the same values, nulls in the same rows
    assert len(_requests()) == clean_requests + 4  # the four faults were played and got past
    [entry] = [i for i in json.loads((out / "manifest.json").read_text())["inputs"] if i["role"] == f"indicator:{NIR}"]
    assert entry["path"] == base + "/nir.tif" and entry["sha256"] == (digest if mode == "download" else None)
    Faulty.log = []
    again = _build(write_region, tmp_path, "b", online, cog)
    assert _requests() == []  # everything from the cache: the download, or every range read
    assert _rows(again) == _rows(out)


@pytest.mark.parametrize("checksum", ["given", "first seen"])
def test_a_host_that_ignores_range_is_read_from_one_whole_download(host, write_region, tmp_path, caplog, checksum):
    # data.worldpop.org answers a range request 200 with the whole file (advertising Accept-Ranges)
    base, cog, digest = host
    Faulty.ignore_range = True
    online = {"url": base + "/nir.tif", "mode": "cog", "min_interval_s": 0.0,
              **({"sha256": digest} if checksum == "given" else {})}
    with caplog.at_level("WARNING", logger="urp_data.net.downloads"):
        out = _build(write_region, tmp_path, "a", online, cog)
    rows = [r for split in _rows(out).values() for r in split]
    nir, ref = np.array([r[NIR] for r in rows], float), np.array([r[REF] for r in rows], float)
    assert np.isfinite(nir).sum() > 20
    np.testing.assert_array_equal(nir, ref)
    assert [p for p in _requests() if p.startswith("/nir.tif")] == ["/nir.tif"]  # one request: the whole file
    assert Faulty.range_encodings == ["identity"]  # no gzip: the offsets are the file's
    said = [r.getMessage() for r in caplog.records if "ignores Range" in r.getMessage()]
    assert len(said) == 1 and str(cog.stat().st_size) in said[0]  # said once
    [entry] = [i for i in json.loads((out / "manifest.json").read_text())["inputs"] if i["role"] == f"indicator:{NIR}"]
    assert entry["sha256"] == digest
    assert ("sha256_note" in entry) == (checksum == "first seen")
    Faulty.log = []
    again = _build(write_region, tmp_path, "b", online, cog)
    assert _requests() == [] and _rows(again) == _rows(out)


def test_a_whole_file_from_a_host_that_ignores_range_is_checked_against_its_sha256(host, tmp_path):
    base, _, digest = host
    Faulty.ignore_range = True
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(InputError, match="checksum mismatch.*ignores Range"):
        raster_indicators.raster_indicator({"name": NIR, "url": base + "/nir.tif", "sha256": wrong, "min_interval_s": 0}, None)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".pace" not in p.parts]


def test_dry_run_counts_a_host_that_ignores_range_as_one_download(host, write_region, tmp_path, capsys):
    base, cog, _ = host
    Faulty.ignore_range = True
    region = write_region(indicators=[{"name": NIR, "type": "raster", "url": base + "/nir.tif", "min_interval_s": 0.5}])
    assert main(["build", "--region", str(region), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if f"indicator {NIR}" in x)
    size = cog.stat().st_size
    assert line.split()[3] == "1" and f"{size / 1000:.1f} kB" in line  # one request of the advertised size
    assert len(_requests()) == 1  # the probe, whose body was not read on
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".pace" not in p.parts]


def test_a_zip_member_is_read_from_the_verified_download(host, write_region, tmp_path):
    base, cog, _ = host
    archive = cog.parent / "layers.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(cog, "inside/nir.tif")
    online = {"url": base + "/layers.zip", "mode": "download", "member": "inside/nir.tif", "min_interval_s": 0.0,
              "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    rows = [r for split in _rows(_build(write_region, tmp_path, "a", online, cog)).values() for r in split]
    np.testing.assert_array_equal(np.array([r[NIR] for r in rows], float), np.array([r[REF] for r in rows], float))


def test_a_checksum_mismatch_is_one_line_exit_1_and_nothing_is_written(host, write_region, tmp_path, capsys):
    base, _, digest = host
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    region = write_region(indicators=[{"name": NIR, "type": "raster", "url": base + "/nir.tif?token=SECRET7",
                                       "mode": "download", "sha256": wrong, "min_interval_s": 0.0}])
    out = tmp_path / "out"
    assert main(["build", "--region", str(region), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "checksum mismatch" in err and "update sha256" in err
    assert "SECRET7" not in err and "token=***" in err
    assert sum(p.startswith("/nir.tif") for p in _requests()) == 1  # a full-length body: not fetched again
    assert [p.name for p in out.iterdir()] == []  # no build, no partial build
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".pace" not in p.parts]
    assert cached == []  # no file, no temporary left in the cache


def test_download_through_a_trickle_stops_at_its_deadline_and_keeps_nothing(host, tmp_path):
    base, _, digest = host
    Faulty.faults = {"/nir.tif": ["trickle"] * 3}
    with pytest.raises(InputError, match="deadline"):
        downloads.download(base + "/nir.tif", digest, min_interval_s=0.0, deadline_s=0.5)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".pace" not in p.parts]


@pytest.mark.parametrize("spec, message", [
    ({"mode": "download"}, "needs sha256"),
    ({"mode": "cog", "member": "a.tif"}, "download only"),
    ({"mode": "cog", "sha256": "abc"}, "64 hexadecimal digits"),
    ({"mode": "stream"}, "mode must be cog or download"),
    ({"mode": "download", "sha256": "abc"}, "64 hexadecimal digits"),
])
def test_bad_online_indicator_entries_fail_before_any_request(host, spec, message):
    base, _, _ = host
    with pytest.raises(InputError, match=message):
        raster_indicators.raster_indicator({"name": NIR, "url": base + "/nir.tif", **spec}, None)
    assert _requests() == []


def test_request_budget_from_geometry(host, monkeypatch):
    base, cog, digest = host
    monkeypatch.setattr(ranges, "CHUNK_BYTES", 16384)  # a 64 x 64 float32 block per chunk at most
    down = raster_indicators.raster_indicator({"name": NIR, "url": base + "/nir.tif", "mode": "download",
                                       "sha256": digest, "min_interval_s": 0.5}, None)
    lat, lon = np.array([-8.0, -8.0, -7.95]), np.array([-34.87, -34.87, -34.87])
    [b] = down.request_budget(lat, lon, 1000, 64)
    assert (b.requests, b.bytes, b.min_interval_s) == (1, cog.stat().st_size, 0.5)
    assert b.host == base.split("//")[1] and b.source == f"indicator {NIR}"
    remote = raster_indicators.raster_indicator({"name": NIR, "url": base + "/nir.tif", "min_interval_s": 0.0}, None)
    sent = len(_requests())
    budget = {k: remote.request_budget(lat[list(k)], lon[list(k)], 1000, 64)[0] for k in ((0,), (0, 1), (2,), (0, 2))}
    assert len(_requests()) == sent  # a budget sends nothing
    # the header (one request) plus the blocks under each footprint, each block once; -7.95 lies
    # 5.5 km north of -8.0, more than one 64-pixel block (1.8 km) away
    assert budget[0, 1] == budget[0,] and budget[0,].requests >= 2
    assert budget[0, 2].requests == budget[0,].requests + budget[2,].requests - 1
    assert budget[0, 2].bytes <= cog.stat().st_size
    import shapely
    from urp_data.sources.base import CellBatch, footprint_array, square_lonlat

    Faulty.log = []
    fps = footprint_array([shapely.box(*square_lonlat(la, lo, 1000)) for la, lo in zip(lat[[0, 2]], lon[[0, 2]])])
    remote.values(CellBatch(lat[[0, 2]], lon[[0, 2]], fps, [None, None]))
    assert 1 <= len(_requests()) <= budget[0, 2].requests  # the budget bounds what was sent
    from urp_data.sources.base import NetworkSource

    assert isinstance(down, NetworkSource) and isinstance(remote, NetworkSource)
    assert not isinstance(raster_indicators.raster_indicator({"name": NIR}, cog), NetworkSource)  # a local file sends nothing


def _xyz_region(write_region, server, max_in_flight: int):
    return write_region("tiles", area={"bbox": [-34.90, -8.02, -34.86, -7.98]}, chip={"size_px": 32},
                        splits={"unseen_fraction": 0.0, "buffer_km": 0}, imagery=[{"type": "xyz", "url": server + "/{z}/{x}/{y}.png", "zoom": 15, "tile_size": 64,
                                  "min_interval_s": 0.0, "max_in_flight": max_in_flight}],
                        indicators=[])


def test_chips_read_concurrently_are_byte_identical_to_a_sequential_read(server, write_region, tmp_path, monkeypatch):
    Faulty.latency_s = 0.02
    seq = build(BuildConfig(region=str(_xyz_region(write_region, server, 1)), out=str(tmp_path / "seq"),
                            chunk_size=64))
    seq_requests, seq_peak = sorted(_requests()), max(n for _, n in Faulty.in_flight)
    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache2")
    Faulty.log, Faulty.in_flight = [], []
    par = build(BuildConfig(region=str(_xyz_region(write_region, server, 4)), out=str(tmp_path / "par"),
                            chunk_size=64))
    for s in SPLITS:
        assert split_path(par, s).read_bytes() == split_path(seq, s).read_bytes()
    assert sum(pq.read_metadata(split_path(par, s)).num_rows for s in SPLITS) > 20
    assert sorted(_requests()) == seq_requests  # a tile two chips share is still fetched once
    assert seq_peak == 1 and 1 < max(n for _, n in Faulty.in_flight) <= 4


def test_the_shipped_online_recipe_states_resolution_licence_and_prompt_honesty():
    from dataclasses import fields

    import yaml
    from urp_data.config.regions import list_regions
    from urp_data.config.sources import RasterIndicatorConfig

    recipe = yaml.safe_load(list_regions()["global-online"].read_text())
    online = [s for s in recipe["indicators"] if "url" in s]
    assert {s["name"] for s in online} >= {"population", "gdp_per_capita"}
    for spec in online:
        assert set(spec) <= {f.name for f in fields(RasterIndicatorConfig)}, spec["name"]
        assert spec["url"].startswith("https://") and spec["mode"] in raster_indicators.REMOTE_MODES
        assert spec["mode"] == "cog" or len(spec["sha256"]) == 64  # a download is always verified
        assert "km" in spec["resolution"] and spec["licence"] and spec["derived_from_prompt"] is False
    night = next(s for s in recipe["indicators"] if s["name"] == "night_light")
    assert "coarse" in night["resolution"]  # no login-free VIIRS source: the fallback says what it is
    offline = yaml.safe_load(list_regions()["global"].read_text())
    assert "coarse" in offline["description"] and all("url" not in s for s in offline["indicators"])


def test_dry_run_lists_the_indicator_host_and_writes_nothing(host, write_region, tmp_path, capsys, monkeypatch):
    base, _, _ = host
    monkeypatch.setattr(ranges, "CHUNK_BYTES", 16384)
    region = write_region(indicators=[{"name": NIR, "type": "raster", "url": base + "/nir.tif", "min_interval_s": 0.5}])
    out = tmp_path / "out"
    assert main(["build", "--region", str(region), "--out", str(out), "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if f"indicator {NIR}" in x)
    assert base.split("//")[1] in line and "0.50s" in line
    assert not out.exists()
    assert len(_requests()) == 1  # opening the COG read its first chunk (the header); the budget sent nothing


def test_threads_keep_the_host_limit(server, write_region, tmp_path):
    interval = 0.05
    Faulty.latency_s = 0.05  # as long as the pause: sequential reads could not keep the host busy
    region = write_region("paced", area={"bbox": [-34.89, -8.015, -34.865, -7.99]}, chip={"size_px": 16},
                          splits={"unseen_fraction": 0.0, "buffer_km": 0}, indicators=[],
                          imagery=[{"type": "xyz", "url": server + "/{z}/{x}/{y}.png", "zoom": 16, "tile_size": 64,
                                    "min_interval_s": interval, "max_in_flight": 4}])
    build(BuildConfig(region=str(region), out=str(tmp_path / "out")))
    times = sorted(t for t, _ in Faulty.log)
    assert len(times) >= 8 and max(n for _, n in Faulty.in_flight) > 1  # several requests were in flight...
    # ...yet they arrived no closer than the host's limit (margins for threads that wake late on a busy machine)
    assert np.diff(times).min() >= interval * 0.5
    assert times[-1] - times[0] >= (len(times) - 1) * interval * 0.95
