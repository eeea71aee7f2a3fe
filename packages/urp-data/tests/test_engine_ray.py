"""The Ray engine: the local engine's output byte for byte, retries, resume, cluster-wide politeness,
and a build through a real two-node Ray cluster on loopback."""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h3
import pyarrow.parquet as pq
import pytest
from servers import Tiles, serve_tiles
from urp_data.build.run import build
from urp_data.config.build import BuildConfig
from urp_data.contract import SPLITS, load_manifest, split_path
from urp_data.errors import ChunkError, RegionError
from urp_data.net import http

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _split_bytes(build_dir: Path) -> dict[str, bytes]:
    return {s: split_path(build_dir, s).read_bytes() for s in SPLITS}


def _run(region: Path, out: Path, **kw) -> Path:
    return build(BuildConfig(region=str(region), out=str(out), **kw))


def test_engine_flags_are_validated():
    with pytest.raises(RegionError, match="drop --workers"):
        BuildConfig(region="demo", engine="ray", workers=2)
    with pytest.raises(RegionError, match="needs --engine ray"):
        BuildConfig(region="demo", ray_address="127.0.0.1:6379")
    with pytest.raises(RegionError, match="engine must be one of local, ray"):
        BuildConfig(region="demo", engine="spark")


def test_local_engine_does_not_import_ray(mini_local_build):
    _, out = mini_local_build  # built in a process that asserts Ray was never imported
    assert load_manifest(out).config["build"]["engine"] == "local"


# --------------------------------------------------------------------------- network source


@pytest.fixture
def tile_server():
    with serve_tiles() as url:
        yield url


def _tile_path(lat: float, lon: float, zoom: int) -> str:
    """The /z/x/y.png path of the Web Mercator tile holding (lat, lon) in degrees."""
    n = 2**zoom
    s = math.sin(math.radians(lat))
    return f"/{zoom}/{int((lon + 180) / 360 * n)}/{int((0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n)}.png"


def test_ray_build_retries_a_chunk_resumes_and_is_polite_cluster_wide(local_ray, write_region, tile_server,
                                                                        tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("URP_CACHE_DIR", str(cache))  # passed on to the Ray workers
    monkeypatch.setattr(http, "CACHE_DIR", cache / "http")  # this process (the local reference build)
    interval, zoom, bbox = 0.15, 16, [-34.895, -8.02, -34.87, -7.995]
    region = write_region(area={"bbox": bbox}, chip={"size_px": 32, "footprint_m": 300},
                          splits={"buffer_km": 0}, indicators=[],
                          imagery=[{"type": "xyz", "url": tile_server + "/{z}/{x}/{y}.png", "zoom": zoom,
                                    "min_interval_s": interval}])
    from urp_data.sampling.cells import bbox_polygon, polyfill

    cells = polyfill(bbox_polygon(bbox), 8)  # the plan: every cell (no buffer ring), in H3 order
    last_lat, last_lon = h3.cell_to_latlng(cells[-1])
    bad = _tile_path(last_lat, last_lon, zoom)  # a tile of the last chunk

    # 1. The tile is unavailable: the chunk is tried 1 + CHUNK_RETRIES times, then the build stops.
    Tiles.fail[bad] = 10**6
    out = tmp_path / "out"
    with pytest.raises(ChunkError) as err:
        _run(region, out, chunk_size=2, engine="ray")
    msg = str(err.value)
    assert "\n" not in msg and "failed 3 times" in msg and "answered HTTP 404" in msg
    failed = re.search(r"chunk (chunk-\d{6}\.parquet) \(plan rows \d+-\d+\)", msg).group(1)
    chunks = out / ".mini.partial" / "chunks"
    finished = {p.name: pq.read_metadata(p).num_rows for p in chunks.glob("chunk-*.parquet")}
    assert finished and failed not in finished
    attempts = sum(path == bad for _, path, _ in Tiles.log)
    assert 3 <= attempts <= 3 * math.ceil(len(cells) / 2)  # retried, and bounded (3 tries per chunk at most)
    assert not (out / "mini").exists()

    # 2. The tile fails once more: Ray's retry succeeds; the finished chunks are reused, not redone.
    Tiles.fail[bad] = 1
    reported: list[int] = []
    on_ray = build(BuildConfig(region=str(region), out=str(out), chunk_size=2, engine="ray"),
                   progress=lambda done, total: reported.append(done))
    assert reported[0] == sum(finished.values())
    assert sum(path == bad for _, path, _ in Tiles.log) == attempts + 2

    # Politeness held across both workers: no two requests to the host closer than the interval
    # (minus scheduling jitter); with a limiter per worker, pairs arrive together.
    times = sorted(t for t, _, _ in Tiles.log)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) > 8 and min(gaps) > 0.6 * interval

    # 3. The same build by the local engine (tiles now cached) is byte-identical.
    local = _run(region, tmp_path / "local", chunk_size=2)
    assert _split_bytes(on_ray) == _split_bytes(local)


# --------------------------------------------------------------------------- a real cluster


def _wait_for(log: Path, proc: subprocess.Popen, text: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"ray start did not come up: {log.read_text(errors='replace')[-2000:]}")


def test_build_through_a_two_node_cluster_on_loopback(mini_local_build, tmp_path):
    """`ray start --head` plus a second `ray start --address`, then `urp-data build --ray-address`.

    Ray swaps the literal 127.0.0.1 for the machine's network address in a multi-node cluster,
    so the head takes 127.0.0.2 (still the loopback interface) and the second node, joining
    over loopback, comes up as 127.0.0.1. Both are stopped by process group, even on failure.
    """
    region, local = mini_local_build
    ray_bin = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.2:{port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               URP_LOG_LEVEL="INFO")
    small = ["--num-cpus=1", f"--object-store-memory={80 * 2**20}", "--disable-usage-stats", "--block"]
    temp = Path(tempfile.mkdtemp(prefix="urp-ray-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> None:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as fh:
            procs.append(subprocess.Popen([ray_bin, "start", *args, *small], stdout=fh, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True))
        _wait_for(log, procs[-1], "Ray runtime started")

    try:
        start(["--head", f"--port={port}", "--node-ip-address=127.0.0.2", "--include-dashboard=false",
               f"--temp-dir={temp}"], "head")
        start([f"--address={address}"], "node2")
        res = subprocess.run([sys.executable, "-m", "urp_data.cli", "build", "--region", str(region),
                              "--out", str(tmp_path / "ray"), "--chunk-size", "8", "--engine", "ray",
                              "--ray-address", address], capture_output=True, text=True, env=env, timeout=300,
                              check=False)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 nodes" in res.stderr  # the engine's log line: both nodes were in the cluster it used
    on_ray = tmp_path / "ray" / "mini"
    assert _split_bytes(on_ray) == _split_bytes(local)
    a, b = load_manifest(local), load_manifest(on_ray)
    assert a.counts == b.counts and sum(a.counts["per_split"].values()) > 16  # several chunks
    assert b.config["build"]["engine"] == "ray" and b.config["build"]["ray_address"] == address
