"""Builds of small real regions: outputs, bad inputs, resume after a kill, atomic replacement."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from urp_data.build import plan as build_plan
from urp_data.build.engines import local as local_engine
from urp_data.build.run import build
from urp_data.cli import main
from urp_data.config.build import BuildConfig
from urp_data.contract import SPLITS, load_manifest, split_path
from urp_data.errors import InputError, NoImageryError, OutputError, RegionError
from urp_data.sampling.splits import shared_ground
from urp_data.sources.vectors import read_vector


def _read_all(build_dir: Path):
    return {s: pq.read_table(split_path(build_dir, s)).to_pylist() for s in SPLITS}


def _run(region: Path, out: Path, **kw) -> Path:
    return build(BuildConfig(region=str(region), out=str(out), **kw))


def test_small_region_builds_with_all_modalities(write_region, tmp_path):
    out = _run(write_region(), tmp_path / "out")
    rows = [r for part in _read_all(out).values() for r in part]
    assert len(rows) >= 20
    r = rows[0]
    assert r["sample_id"] == f"mini-{r['h3_cell']}"
    assert r["image"]["bytes"][:3] == b"\xff\xd8\xff"  # JPEG
    assert r["address"] and r["nearby_places"]
    assert all(p["direction"] and p["distance_km"] >= 0 for p in r["nearby_places"])
    dists = [p["distance_km"] for p in r["nearby_places"]]
    assert dists == sorted(dists)
    m = load_manifest(out)
    assert sum(m.counts["per_split"].values()) == len(rows)
    assert set(m.indicators) == {"census_count", "population"}
    assert all(i["sha256"] for i in m.inputs if i["role"] == "imagery")


def test_rebuild_is_deterministic(write_region, tmp_path):
    region = write_region()
    a = _read_all(_run(region, tmp_path / "a"))
    b = _read_all(_run(region, tmp_path / "b"))
    for s in SPLITS:
        assert [r["sample_id"] for r in a[s]] == [r["sample_id"] for r in b[s]]
        assert [r["image"]["bytes"] for r in a[s]] == [r["image"]["bytes"] for r in b[s]]


@pytest.mark.slow
def test_parallel_workers_write_the_same_build(write_region, tmp_path, monkeypatch):
    region = write_region()
    one = _read_all(_run(region, tmp_path / "one", chunk_size=8))
    # The build's own process cuts chunks while the other one starts, taking them in order; the
    # other process (spawned, so not patched here) gets at least the first chunk, sent to it first.
    mine = []
    write_chunk = local_engine.write_chunk
    monkeypatch.setattr(local_engine, "write_chunk", lambda *a: mine.append(a[4].name) or write_chunk(*a))
    two = _read_all(_run(region, tmp_path / "two", chunk_size=8, workers=2))
    assert two == one
    chunks = -(-sum(len(v) for v in one.values()) // 8)
    assert chunks >= 4 and 1 <= len(mine) <= chunks - 1
    assert mine == sorted(mine) and "chunk-000000.parquet" not in mine


@pytest.mark.slow
def test_a_busy_pool_worker_holds_no_item_this_process_could_take():
    # One spawned worker that needs 1 s per item, and this process at 10 ms: the worker gets the
    # first item, and this process does every other one, in order. Submitting every item up
    # front would leave the next one in the pool's call queue, out of this process's reach.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    mine: list[int] = []

    def here(k: int) -> int:
        time.sleep(0.01)
        mine.append(k)
        return k

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(int).result()  # started
        # time.sleep, not a function of this module: tests are imported by path, which a spawned
        # process cannot repeat; the pool's item yields sleep's None.
        got = list(local_engine.share_queue(pool, 1, list(range(12)), lambda k: pool.submit(time.sleep, 1.0), here))
    assert mine == list(range(1, 12))
    assert got.count(None) == 1 and sorted(g for g in got if g is not None) == list(range(1, 12))


@pytest.mark.slow
def test_an_error_in_the_pool_stops_the_shared_queue():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    mine: list[int] = []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool, \
            pytest.raises(ZeroDivisionError):
        for _ in local_engine.share_queue(pool, 1, list(range(200)), lambda k: pool.submit(divmod, k, 0),
                                       lambda k: mine.append(k) or time.sleep(0.01) or k):
            pass
    assert 0 < len(mine) < 199  # this process stopped at the error, long before the queue was empty


def test_a_worker_is_sent_only_its_rows_of_the_plan():
    cells = [f"88{k:013x}" for k in range(10)]
    plan = build_plan.Plan(cells, np.arange(10.0), -np.arange(10.0), ["BRA"] * 5 + ["ARG"] * 5,
                         [f"g{k}" for k in range(10)], np.array(["train"] * 10), {"g9"}, ["x"], {"buffer_km": 1})
    part = plan.take(range(3, 6))
    assert part.cells == cells[3:6] and part.group == ["g3", "g4", "g5"]
    assert part.lat.tolist() == [3.0, 4.0, 5.0] and part.lon.tolist() == [-3.0, -4.0, -5.0]
    assert part.country == ["BRA", "BRA", "ARG"] and part.split.tolist() == ["train"] * 3
    assert not part.unseen_groups and not part.buffer_cells and not part.splits


def test_admin_area_groups_hold_out_whole_admin_areas(tmp_path):
    # Foz do Iguaçu (Paraná), Ciudad del Este (Alto Paraná) and Puerto Iguazú (Misiones):
    # grouping by admin area keeps each department or state whole in one side of the split.
    region = tmp_path / "tri.yaml"
    region.write_text(f"""
name: tri
area: {{bbox: [-54.66, -25.58, -54.54, -25.45]}}
sampling: {{resolution: 8, samples: 120, seed: 1}}
chip: {{size_px: 32}}
splits: {{group_by: admin, unseen_groups: [PRY-Alto Paraná Department], buffer_km: 0}}
countries: gazetteer
imagery: [{{type: raster, path: {Path(__file__).parents[3] / "data/demo/foz_cde_lc08_b2b3b4.tif"}, bands: [3, 2, 1]}}]
""")
    rows = _read_all(_run(region, tmp_path / "out"))
    unseen = {r["group"] for r in rows["test_unseen"]}
    seen = {r["group"] for s in ("train", "val", "test_seen") for r in rows[s]}
    assert unseen == {"PRY-Alto Paraná Department"}
    assert "BRA-Paraná" in seen and not (unseen & seen)
    assert all(r["address"].endswith("Alto Paraná Department, Paraguay") for r in rows["test_unseen"])


def test_nodata_indicator_is_null_not_zero(write_region, tmp_path, data_dir):
    # An indicator raster whose western half is nodata: samples there must get null.
    src = rasterio.open(data_dir / "demo/olinda_l7_etm.tif")
    arr = src.read(4).astype("float32")
    arr[:, : arr.shape[1] // 2] = -9999
    path = tmp_path / "ind.tif"
    with rasterio.open(path, "w", driver="GTiff", width=src.width, height=src.height, count=1, dtype="float32",
                       crs=src.crs, transform=src.transform, nodata=-9999) as dst:
        dst.write(arr, 1)
    mid_lon = src.xy(0, src.width // 2)[0]
    region = write_region(area={"bbox": [-34.90, -8.02, -34.84, -7.99]},
                          indicators=[{"name": "nir", "type": "raster", "path": str(path), "stat": "mean"}])
    out = _run(region, tmp_path / "out")
    rows = [r for part in _read_all(out).values() for r in part]
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
    west = [r for r in rows if to_utm.transform(r["lon"], r["lat"])[0] < mid_lon - 600]
    east = [r for r in rows if to_utm.transform(r["lon"], r["lat"])[0] > mid_lon + 600]
    assert west and east
    assert all(r["nir"] is None for r in west)
    assert all(r["nir"] is not None and r["nir"] > 0 for r in east)


def test_census_count_is_null_outside_the_tracts(write_region, tmp_path):
    # The tracts cover Olinda only: neighbouring Recife and Paulista, and the sea, get null.
    out = _run(write_region(area={"bbox": [-34.92, -8.04, -34.82, -7.95]}), tmp_path / "out")
    rows = [r for part in _read_all(out).values() for r in part]
    assert any(r["census_count"] is None for r in rows)
    assert sum(r["census_count"] is not None for r in rows) > 20
    assert all(r["census_count"] is None or r["census_count"] > 0 for r in rows)


def test_missing_imagery_is_skipped_and_counted(write_region, tmp_path):
    # Half of this bbox lies east of the Olinda scene.
    out = _run(write_region(area={"bbox": [-34.85, -8.02, -34.79, -7.99]}), tmp_path / "out")
    m = load_manifest(out)
    assert m.counts["skipped_no_imagery"] > 0
    assert sum(m.counts["per_split"].values()) > 0
    assert sum(m.counts["per_split"].values()) + m.counts["skipped_no_imagery"] + m.counts["buffer_dropped"] \
        == m.counts["sampled"]


def test_missing_imagery_can_fail_and_leaves_no_split_files(write_region, tmp_path):
    region = write_region(area={"bbox": [-34.85, -8.02, -34.79, -7.99]}, chip={"on_missing_imagery": "fail"})
    with pytest.raises(NoImageryError, match="no imagery covers cell"):
        _run(region, tmp_path / "out")
    assert not (tmp_path / "out" / "mini").exists()


def test_region_without_any_imagery_fails_cleanly(write_region, tmp_path):
    with pytest.raises(NoImageryError, match="no sample"):
        _run(write_region(area={"bbox": [10.0, 10.0, 10.05, 10.05]}), tmp_path / "out")
    assert not (tmp_path / "out" / "mini").exists()


def test_empty_region(write_region, tmp_path):
    with pytest.raises(RegionError, match="no H3 cells"):
        _run(write_region(area={"bbox": [-34.85, -8.0, -34.8499, -7.9999]}), tmp_path / "out")


def test_unknown_region(tmp_path):
    with pytest.raises(RegionError, match="unknown region 'atlantis'"):
        build(BuildConfig(region="atlantis", out=str(tmp_path)))


def test_unknown_config_key_is_an_error(write_region, tmp_path):
    with pytest.raises(RegionError, match="unknown key"):
        _run(write_region(chip={"size": 64}), tmp_path / "out")


def test_unknown_indicator_key_is_an_error(write_region, tmp_path):
    region = write_region(indicators=[{"name": "population", "type": "geonames_population", "radius": 5}])
    with pytest.raises(InputError, match="unknown key"):
        _run(region, tmp_path / "out")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # writing one on purpose
def test_raster_without_crs(write_region, tmp_path, data_dir):
    src = rasterio.open(data_dir / "demo/olinda_l7_etm.tif")
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=src.width, height=src.height, count=3,
                       dtype="uint8") as dst:
        dst.write(src.read([3, 2, 1]))
    with pytest.raises(InputError, match="has no CRS"):
        _run(write_region(imagery=[{"type": "raster", "path": str(path)}]), tmp_path / "out")


@pytest.mark.parametrize("name", ["demo/olinda_l7_etm.tif", "demo/foz_cde_lc08_b2b3b4.tif"])
def test_truncated_raster(write_region, tmp_path, data_dir, name):
    raw = (data_dir / name).read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(raw[: len(raw) // 3])
    region = write_region(imagery=[{"type": "raster", "path": str(path), "bands": [3, 2, 1]}],
                          area={"from_imagery": True} if "foz" in name else {"bbox": [-34.87, -8.02, -34.84, -7.99]})
    with pytest.raises(InputError, match="truncated"):
        _run(region, tmp_path / "out", samples=30)
    assert not (tmp_path / "out" / "mini").exists()


def test_not_a_raster(write_region, tmp_path):
    path = tmp_path / "junk.tif"
    path.write_text("this is not a GeoTIFF")
    with pytest.raises(InputError, match="cannot open raster"):
        _run(write_region(imagery=[{"type": "raster", "path": str(path)}]), tmp_path / "out")


def test_broken_pbf(write_region, tmp_path, data_dir):
    raw = (data_dir / "osm/monaco.osm.pbf").read_bytes()
    path = tmp_path / "broken.osm.pbf"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cannot read OSM extract"):
        _run(write_region(poi=[{"type": "osm_pbf", "path": str(path)}]), tmp_path / "out")


def test_unwritable_output(write_region, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write to output folder"):
        _run(write_region(), blocker / "out")


def test_failed_rebuild_keeps_the_previous_build(write_region, tmp_path):
    region = write_region()
    out = _run(region, tmp_path / "out")
    before = _read_all(out)
    bad = write_region(imagery=[{"type": "raster", "path": str(tmp_path / "missing.tif")}])
    with pytest.raises(InputError):
        _run(bad, tmp_path / "out")
    assert _read_all(out) == before


def test_cli_errors_are_one_line(write_region, tmp_path, capsys):
    assert main(["build", "--region", "atlantis", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("urp-data build: error: unknown region") and "\n" not in err and "Traceback" not in err
    assert main(["build", "--out", str(tmp_path)]) == 2


def test_cli_config_file_and_flags(write_region, tmp_path, capsys):
    cfg = tmp_path / "build.yaml"
    cfg.write_text(f"region: {write_region()}\nout: {tmp_path / 'x'}\nsamples: 5\n")
    assert main(["build", "--config", str(cfg), "--samples", "12"]) == 0  # the flag wins
    m = load_manifest(tmp_path / "x" / "mini")
    assert m.counts["sampled"] == 12
    assert "wrote" in capsys.readouterr().out


def test_cli_help_and_regions(capsys):
    with pytest.raises(SystemExit) as e:
        main(["build", "--help"])
    assert e.value.code == 0
    assert "--region" in capsys.readouterr().out
    assert main(["regions"]) == 0
    listed = capsys.readouterr().out
    assert "demo" in listed and "global" in listed


def _stat(pid: int | str) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _alive_children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` and that have not exited (zombies count as gone)."""
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if (st := _stat(p.name)) and st[1] == pid
            and st[0] != "Z"]


def _gone(pids: list[int]) -> bool:
    return all((st := _stat(pid)) is None or st[0] == "Z" for pid in pids)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_build_resumes_without_losing_or_duplicating_rows(write_region, tmp_path, workers):
    # ~38 chunks at H3 resolution 9: the signal comes after 3, ~2 s before the end, so a busy
    # machine cannot finish the build before it lands
    region = write_region(area={"bbox": [-34.90, -8.05, -34.84, -7.97]}, sampling={"resolution": 9})
    reference = _read_all(_run(region, tmp_path / "ref", chunk_size=8))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "urp_data.cli", "build", "--region", str(region), "--out", str(out),
           "--chunk-size", "8", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = out / ".mini.partial" / "chunks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chunks.glob("chunk-*.parquet"))) < 3:
        time.sleep(0.05)
    children = _alive_children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if workers > 1:  # the other worker leaves with the build instead of idling forever
        assert children
        deadline = time.time() + 20
        while time.time() < deadline and not _gone(children):
            time.sleep(0.1)
        assert _gone(children)
    done_before = len(list(chunks.glob("chunk-*.parquet")))
    assert done_before >= 3, "the build finished or stalled before it could be killed"
    assert not (out / "mini").exists()
    resumed = _read_all(_run(region, out, chunk_size=8))
    for s in SPLITS:
        ids = [r["sample_id"] for r in resumed[s]]
        assert len(ids) == len(set(ids))
        assert ids == [r["sample_id"] for r in reference[s]]
        assert resumed[s] == reference[s]
    assert not (out / ".mini.partial").exists()


@pytest.mark.slow
def test_interrupted_build_with_workers_says_so_in_one_line_and_resumes(write_region, tmp_path):
    region = write_region(area={"bbox": [-34.90, -8.05, -34.84, -7.97]}, sampling={"resolution": 9})
    reference = _read_all(_run(region, tmp_path / "ref", chunk_size=8))
    out = tmp_path / "out"
    # `python -m urp_data.cli` with Python's own SIGINT handler: a shell without job control (a
    # CI script running in the background) starts its commands with SIGINT ignored, and Python
    # then leaves it ignored; Ctrl-C in a terminal reaches a build that has the handler.
    with_handler = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "runpy.run_module('urp_data.cli', run_name='__main__')")
    cmd = [sys.executable, "-c", with_handler, "build", "--region", str(region), "--out", str(out),
           "--chunk-size", "8", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    chunks = out / ".mini.partial" / "chunks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chunks.glob("chunk-*.parquet"))) < 3:
        time.sleep(0.05)
    children = _alive_children(proc.pid)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    err = proc.communicate(timeout=60)[1].replace("\r", "\n").strip().splitlines()
    assert proc.returncode == 130
    assert err[-1] == "urp-data build: interrupted; run the same command again to resume"
    assert not any("Traceback" in line for line in err)
    deadline = time.time() + 20
    while time.time() < deadline and not _gone(children):
        time.sleep(0.1)
    assert children and _gone(children)  # the other worker stopped with it
    assert len(list(chunks.glob("chunk-*.parquet"))) >= 3 and not (out / "mini").exists()
    assert _read_all(_run(region, out, chunk_size=8, workers=2)) == reference


def test_partial_build_with_another_config_is_discarded(write_region, tmp_path):
    region = write_region()
    out = tmp_path / "out"
    stale = out / ".mini.partial"
    (stale / "chunks").mkdir(parents=True)
    (stale / "state.json").write_text(json.dumps({"key": "another config"}))
    shutil.copy(__file__, stale / "chunks" / "chunk-000000.parquet")  # would break the build if reused
    rows = _read_all(_run(region, out))
    assert sum(len(v) for v in rows.values()) > 0


def test_changed_input_discards_unfinished_chunks(write_region, tmp_path, data_dir):
    raster = tmp_path / "olinda.tif"
    shutil.copy(data_dir / "demo/olinda_l7_etm.tif", raster)
    region = write_region(imagery=[{"type": "raster", "path": str(raster), "bands": [3, 2, 1]}])
    out = tmp_path / "out"
    first = _read_all(_run(region, out, chunk_size=8))
    # Leave an unfinished build behind, then change the raster's pixels in place.
    partial_chunks = out / ".mini.partial" / "chunks"
    partial_chunks.mkdir(parents=True)
    from urp_data.build.identity import config_key, library_versions, manifest_inputs
    from urp_data.build.sources import open_sources
    from urp_data.config.regions import load_region

    reg = load_region(region)
    key = config_key(reg, 8, manifest_inputs(reg, open_sources(reg)), library_versions())
    (out / ".mini.partial" / "state.json").write_text(json.dumps({"key": key}))
    shutil.copy(out / "mini" / "train.parquet", partial_chunks / "chunk-000000.parquet")  # stale rows
    with rasterio.open(raster, "r+") as ds:
        ds.write(255 - ds.read())
    second = _read_all(_run(region, out, chunk_size=8))
    ids = [r["sample_id"] for s in SPLITS for r in second[s]]
    assert len(ids) == len(set(ids))  # the stale chunk was not reused
    assert sorted(ids) == sorted(r["sample_id"] for s in SPLITS for r in first[s])
    assert second["train"][0]["image"]["bytes"] != first["train"][0]["image"]["bytes"]


def test_settlement_sampling_is_seeded_and_on_land(tmp_path, data_dir):
    from urp_data.config.regions import load_region

    out_a = build(BuildConfig(region="global", out=str(tmp_path / "a"), samples=60, seed=3))
    out_b = build(BuildConfig(region="global", out=str(tmp_path / "b"), samples=60, seed=3))
    a, b = _read_all(out_a), _read_all(out_b)
    assert a == b
    rows = [r for part in a.values() for r in part]
    m = load_manifest(out_a)
    assert m.counts["sampled"] == 60
    assert len({r["country"] for r in rows}) > 10  # worldwide
    unseen = {r["country"] for r in a["test_unseen"]}
    seen = {r["country"] for s in ("train", "val") for r in a[s]}
    assert unseen and not (unseen & seen)
    train = [r["geometry"] for r in a["train"]]
    for s in ("val", "test_seen", "test_unseen"):  # the footprint rule on a global build
        assert shared_ground([r["geometry"] for r in a[s]], train) == 0, s
    assert m.config["splits"]["buffer_km"] > 14  # night light's 8 arc-minute pixels set the default buffer
    assert load_region("global").splits.group_by == "country"
    vals = np.array([r["night_light"] for r in rows], dtype=float)
    assert np.isfinite(vals).all() and vals.std() > 0
    # On land: every cell centre lies in (or within a cell's radius of) a country polygon.
    land = shapely.union_all(read_vector(data_dir / "global/naturalearth_lowres.shp", "countries").geometry.values)
    lon, lat = np.array([r["lon"] for r in rows]), np.array([r["lat"] for r in rows])
    assert shapely.contains_xy(land.buffer(0.01), lon, lat).all()
    assert not shapely.contains_xy(land.buffer(0.01), (lon + 360.0) % 360.0 - 180.0, -lat).all()  # can fail: antipodes
