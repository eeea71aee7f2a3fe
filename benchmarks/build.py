"""Samples per second and peak memory per process of `urp-data build` (offline sources), against the chip limit.

Usage: uv run python benchmarks/build.py [--regions global demo] [--sizes 10000 100000]
       [--engines local:1 local:2 ray] [--repeat 3] [--out /tmp/urp-bench]

Each (region, size, engine) runs in a fresh process, from a cold output folder, with the shipped
region and its offline sources; with `--repeat N` it runs N times and the row shows the median
run, with the range of seconds (on a shared 2-core VM single runs vary by about ±4 %). `local:N` is `--engine local --workers N`; `ray` is
`--engine ray` on a local Ray started by the build and sized to the machine (one worker per CPU).
Throughput counts the whole build: loading sources, starting workers (and Ray), sampling,
chips, geocoding, indicators, splits, manifest. A region smaller than a size builds all its cells.

The chip limit is measured right after each build, on the same machine, for the same sample
centres (those that got a chip) and as many processes as the build had workers: each process
holds the region's rasters in memory and, per centre, crops the chip's window at the raster's
own resolution, casts it to 8 bits, resizes it to the chip size (PIL, bilinear) and encodes it
with the build's format and quality. Nothing else: no stretch, masks, geocoding, indicators or
writing. `of limit` is the build's samples/s divided by that limit: the figure to compare
between machines (targets: >= 0.7 with 1 worker; 2 workers >= 1.8x one worker from 10k up).

A second limit, `window/s`, cuts the same chips the way the build does: a windowed read of the
in-memory raster resampled by GDAL (bilinear, fractional window) straight to the chip size, then
the same encoding; `of window` divides by it. The crop limit is the cheaper chip (whole source
pixels, PIL's resize), so it is the stricter yardstick; the window limit says how far the build
is from cutting its own, byte-identical chips with nothing else.

Memory is each process's own peak RSS (VmHWM from /proc, polled every 0.2 s): the build's
process (with `local:N` it plans, cuts chunks too and writes the splits), the N - 1 other chunk
workers (the largest one, and how many there were) and, with Ray, Ray's own processes (GCS,
raylet, agents, idle workers; the sum of their peaks). RSS counts the pages a worker shares with
the build's process and the other workers (libraries, the memory-mapped GeoNames cache) in full;
`own MB` is the largest peak of a worker's private pages (Private_Clean + Private_Dirty from
/proc/PID/smaps_rollup, same polling): what each extra worker adds to the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CHILD = """
import json, os, sys, threading, time
from pathlib import Path
from urp_data.build.run import build_region
from urp_data.contract import load_manifest

peaks, own, cmds = {}, {}, {}

def descendants():
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out

def poll(stop):
    while not stop.is_set():
        for pid in descendants():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) / 1024
                uss = sum(int(l.split()[1]) for l in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                          if l.startswith("Private_")) / 1024
                cmds[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\\0", b" ").decode()[:200]
            except (OSError, StopIteration):
                continue
            peaks[pid] = max(peaks.get(pid, 0.0), hwm)
            own[pid] = max(own.get(pid, 0.0), uss)
        stop.wait(0.2)

stop = threading.Event()
threading.Thread(target=poll, args=(stop,), daemon=True).start()
engine, workers = (sys.argv[3].split(":") + ["1"])[:2]
t0 = time.perf_counter()
out = build_region(sys.argv[4], out=sys.argv[1], samples=int(sys.argv[2]), engine=engine,
                   **({"workers": int(workers)} if engine == "local" else {}))
dt = time.perf_counter() - t0
stop.set()
me = os.getpid()
worker = [p for p, c in cmds.items() if p != me and ("ChunkWorker" in c or "spawn_main" in c)]
other = [p for p in cmds if p != me and p not in worker]
m = load_manifest(out)
print(json.dumps({"seconds": dt, "rows": sum(m.counts["per_split"].values()), "driver_mb": peaks.get(me, 0),
                  "worker_mb": max((peaks[p] for p in worker), default=0),
                  "worker_own_mb": max((own[p] for p in worker), default=0), "n_workers": len(worker),
                  "other_mb": sum(peaks[p] for p in other)}))
"""


_limit_state: dict[str, Any] = {}


def _open_rasters(region_name: str) -> None:
    """Load the region's imagery rasters into this process: (bands, transform, lon/lat -> raster CRS, geographic?)."""
    import warnings

    import rasterio
    from pyproj import CRS, Transformer
    from rasterio.transform import from_bounds
    from urp_data.config.regions import load_region

    region = load_region(region_name)
    rasters = []
    for spec in region.imagery:
        if spec.get("type") != "raster":
            raise SystemExit(f"the chip limit is measured for raster imagery only, not {spec.get('type')}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(region.resolve(spec["path"])) as ds:
                arr = ds.read(spec.get("bands") or [1, 2, 3])
                transform = from_bounds(*spec["bounds"], ds.width, ds.height) if spec.get("bounds") else ds.transform
                crs = CRS.from_user_input(spec.get("crs") or ds.crs)
        mem = rasterio.open("", "w+", driver="MEM", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                            dtype=arr.dtype, crs=crs, transform=transform)
        mem.write(arr)
        rasters.append((arr, transform, Transformer.from_crs("EPSG:4326", crs, always_xy=True), crs.is_geographic,
                        mem))
    _limit_state.update(chip=region.chip, rasters=rasters)


def _minimal_chips(lat: np.ndarray, lon: np.ndarray, how: str) -> tuple[float, float, int]:
    """Cut, resize and encode the chips of these centres; (start, end) on the shared monotonic clock, and the count.

    ``how``: ``crop`` (whole pixels from the array, PIL resize) or ``window`` (GDAL's resampled windowed read).
    """
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds
    from urp_data.sources.base import square_lonlat

    chip, rasters = _limit_state["chip"], _limit_state["rasters"]
    size, done = (chip.size_px, chip.size_px), 0
    fmt, opts = ("JPEG", {"quality": chip.quality}) if chip.format == "jpeg" else ("PNG", {"compress_level": 1})
    t0 = time.monotonic()
    for la, lo in zip(lat, lon, strict=True):
        for arr, transform, to_src, geographic, mem in rasters:
            x, y = to_src.transform(lo, la)
            if geographic:
                left, bottom, right, top = square_lonlat(la, lo, chip.footprint_m)
                left, right = left - lo + x, right - lo + x
            else:
                half = chip.footprint_m / 2
                left, bottom, right, top = x - half, y - half, x + half, y + half
            if how == "window":
                win = from_bounds(left, bottom, right, top, transform)
                if win.col_off < 0 or win.row_off < 0 or win.col_off + win.width > arr.shape[2] \
                        or win.row_off + win.height > arr.shape[1]:
                    continue
                data = mem.read(window=win, out_shape=(arr.shape[0], *size), resampling=Resampling.bilinear)
                buf = io.BytesIO()
                Image.merge("RGB", [Image.fromarray(b.astype(np.uint8, copy=False)) for b in data]).save(buf, format=fmt, **opts)
                done += 1
                break
            c0, r0 = ~transform * (left, top)
            c1, r1 = ~transform * (right, bottom)
            c0, r0 = math.floor(c0), math.floor(r0)
            c1, r1 = max(c0 + 1, math.ceil(c1)), max(r0 + 1, math.ceil(r1))
            if c0 < 0 or r0 < 0 or c1 > arr.shape[2] or r1 > arr.shape[1]:
                continue
            crop = np.ascontiguousarray(np.moveaxis(arr[:, r0:r1, c0:c1], 0, -1)).astype(np.uint8, copy=False)
            buf = io.BytesIO()
            Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR).save(buf, format=fmt, **opts)
            done += 1
            break
    return t0, time.monotonic(), done


def chip_limit(region_name: str, lat: np.ndarray, lon: np.ndarray, processes: int) -> tuple[float, float]:
    """Chips per second of the minimal chip loops (crop, window) over these centres, split over ``processes``."""
    import multiprocessing

    parts = np.array_split(np.arange(len(lat)), processes)
    ctx = multiprocessing.get_context("spawn")
    rates = []
    with ctx.Pool(processes, initializer=_open_rasters, initargs=(region_name,)) as pool:
        pool.map(time.sleep, [0.5] * processes)  # every process has loaded its rasters before the clock starts
        for how in ("crop", "window"):
            res = pool.starmap(_minimal_chips, [(lat[p], lon[p], how) for p in parts])
            rates.append(sum(r[2] for r in res) / (max(r[1] for r in res) - min(r[0] for r in res)))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regions", nargs="+", default=["global"], help="shipped regions with raster imagery")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--engines", nargs="+", default=["local:1", "local:2", "ray"],
                    help="local:N (--engine local --workers N) or ray (a local Ray sized to the machine)")
    ap.add_argument("--out", default="/tmp/urp-bench-build")
    ap.add_argument("--repeat", type=int, default=1,
                    help="builds per row, each fresh; the row shows the median one and the range of seconds")
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    print(f"machine: {platform.machine()}, {_cpu_model()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'region':>7} {'samples':>8} {'engine':>8} {'rows':>8} {'seconds':>8} {'range':>11} {'samples/s':>10} {'limit/s':>8} "
          f"{'of limit':>8} {'window/s':>8} {'of window':>9} {'driver MB':>9} {'worker MB':>9} {'own MB':>6} {'workers':>7} {'Ray MB':>7} {'MB on disk':>10}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    for region, n, engine in [(r, n, e) for r in args.regions for n in args.sizes for e in args.engines]:
        out = Path(args.out) / str(n)
        runs = []
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            res = subprocess.run([sys.executable, "-c", CHILD, str(out), str(n), engine, region], capture_output=True,
                                 text=True, env=env, check=False)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                sys.exit(res.returncode)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda run: run["seconds"])
        r = runs[len(runs) // 2]  # the median run (the upper one of an even count)
        spread = f"{runs[0]['seconds']:.1f}-{runs[-1]['seconds']:.1f}"
        centres = pa.concat_tables(pq.read_table(f, columns=["lat", "lon"]) for f in sorted((out / region).glob("*.parquet")))
        processes = int(engine.split(":")[1]) if engine.startswith("local:") else os.cpu_count() or 1
        limit, window = chip_limit(region, centres["lat"].to_numpy(), centres["lon"].to_numpy(), processes)
        rate = r["rows"] / r["seconds"]
        disk = sum(p.stat().st_size for p in (out / region).glob("*")) / 1e6
        print(f"{region:>7} {n:>8} {engine:>8} {r['rows']:>8} {r['seconds']:>8.1f} {spread:>11} {rate:>10.0f} {limit:>8.0f} "
              f"{rate / limit:>8.2f} {window:>8.0f} {rate / window:>9.2f} {r['driver_mb']:>9.0f} {r['worker_mb']:>9.0f} {r['worker_own_mb']:>6.0f} {r['n_workers']:>7} "
              f"{r['other_mb']:>7.0f} {disk:>10.1f}", flush=True)
        shutil.rmtree(out, ignore_errors=True)


def _cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
