"""Samples per second of an online build against the bound that the host's politeness limit sets.

Usage: uv run python benchmarks/online_build.py [--samples 300] [--latency-ms 50] [--min-interval-s 0.02]
       [--runs seq:1:1 par:4:1 par:4:2] [--out /tmp/urp-online-bench]

One loopback host (the fault server of packages/urp-data/tests/servers.py, no faults) serves both
an XYZ tile pyramid (generated PNG tiles) and an indicator GeoTIFF (band 4 of the demo's Olinda
scene, tiled, read as a COG with HTTP range requests), and answers every request after
``--latency-ms`` (a distant host's round trip). The region samples ``--samples`` H3 cells around
Olinda; each chip is cut from zoom-16 tiles, and the indicator is read window by window.

Each run (``name:max_in_flight:workers``) is one `urp-data build` in a fresh process with an empty
cache, so every tile and range is fetched once. Politeness: the XYZ source and the indicator both
wait ``--min-interval-s`` between requests to the host (shared by threads and processes), so the
host answers at most 1/min_interval_s requests/s, and a build can make at most

    bound = (1 / min_interval_s) / (requests per sample)   samples/s

where requests per sample is what that build sent divided by the samples it wrote. At that rate
Little's law puts ``latency / min_interval_s`` requests in flight; the mean the host saw is
printed beside it. samples/s is measured over the fetch phase (first request to last answer)
and over the whole command (which also loads the gazetteer, plans, writes the splits). Checked:
every run writes the same split files byte for byte, and a second build from the same cache
sends no request.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packages" / "urp-data" / "tests"))
from servers import Faulty, indicator_raster, serve  # the tests' loopback server and indicator file

BBOX = [-34.93, -8.06, -34.83, -7.94]  # lon/lat (left, bottom, right, top): the Olinda scene


def region_yaml(folder: Path, base: str, samples: int, interval: float, in_flight: int) -> Path:
    region = {
        "name": "online",
        "description": "benchmark: XYZ chips and a COG indicator from one loopback host with latency",
        "area": {"bbox": BBOX},
        "sampling": {"resolution": 9, "samples": samples, "seed": 0},
        "chip": {"size_px": 64, "footprint_m": 1000},
        "splits": {"group_by": "h3:7", "unseen_fraction": 0.2, "buffer_km": 0},
        "countries": "gazetteer",
        "imagery": [{"type": "xyz", "url": base + "/{z}/{x}/{y}.png", "zoom": 16, "tile_size": 64,
                     "min_interval_s": interval, "max_in_flight": in_flight, "licence": "generated"}],
        "indicators": [{"name": "nir", "type": "raster", "url": base + "/nir.tif", "mode": "cog",
                        "min_interval_s": interval, "licence": "Landsat 7, public domain"}],
    }
    path = folder / f"online-{in_flight}.yaml"
    path.write_text(yaml.safe_dump(region))
    return path


def mean_in_flight(events: list[tuple[float, int]]) -> float:
    """Time-weighted mean of the host's concurrent requests between its first and last event."""
    if len(events) < 2:
        return 0.0
    t = np.array([e[0] for e in events])
    n = np.array([e[1] for e in events], float)
    return float(np.sum(n[:-1] * np.diff(t)) / (t[-1] - t[0]))


def run_build(region: Path, out: Path, cache: Path, workers: int) -> float:
    env = {**os.environ, "URP_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "urp_data.cli", "build", "--region", str(region), "--out", str(out),
           "--workers", str(workers), "--chunk-size", "64"]
    start = time.monotonic()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--min-interval-s", type=float, default=0.02)
    ap.add_argument("--runs", nargs="+", default=["seq:1:1", "par:4:1", "par:4:2"],
                    help="name:max_in_flight:workers")
    ap.add_argument("--out", default="/tmp/urp-online-bench")
    args = ap.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    www = root / "www"
    indicator_raster(www / "nir.tif", block_px=128)
    latency = args.latency_ms / 1000
    print(f"{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; latency {args.latency_ms:g} ms, "
          f"min_interval_s {args.min_interval_s:g} s per host ({1 / args.min_interval_s:g} requests/s); "
          f"{args.samples} samples requested")
    rows = []
    with serve() as base:
        for spec in args.runs:
            _, in_flight, workers = spec.split(":")
            region = region_yaml(root, base, args.samples, args.min_interval_s, int(in_flight))
            cache, out = root / f"cache-{spec.replace(':', '-')}", root / f"out-{spec.replace(':', '-')}"
            Faulty.log, Faulty.in_flight, Faulty.files, Faulty.latency_s = [], [], www, latency
            wall = run_build(region, out, cache, int(workers))
            requests, events = len(Faulty.log), list(Faulty.in_flight)
            manifest = json.loads((out / "online" / "manifest.json").read_text())
            samples = sum(manifest["counts"]["per_split"].values())
            fetch_s = events[-1][0] - events[0][0]
            per_sample = requests / samples
            bound = (1 / args.min_interval_s) / per_sample
            Faulty.log = []
            run_build(region, root / f"again-{spec.replace(':', '-')}", cache, int(workers))
            assert not Faulty.log, f"a second build sent {len(Faulty.log)} requests"
            rows.append({"run": spec, "samples": samples, "requests": requests, "requests/sample": per_sample,
                         "fetch s": fetch_s, "samples/s (fetch)": samples / fetch_s, "samples/s (command)": samples / wall,
                         "bound samples/s": bound, "of bound": samples / fetch_s / bound,
                         "mean in flight": mean_in_flight(events), "in flight at bound": latency / args.min_interval_s})
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    first = root / f"out-{args.runs[0].replace(':', '-')}" / "online"
    for spec in args.runs[1:]:
        other = root / f"out-{spec.replace(':', '-')}" / "online"
        same = all((first / f).read_bytes() == (other / f).read_bytes() for f in
                   ("train.parquet", "val.parquet", "test_seen.parquet", "test_unseen.parquet"))
        assert same, f"{spec} wrote other split files than {args.runs[0]}"
    print("every run wrote the same split files, byte for byte; a second build from the cache sent 0 requests")


if __name__ == "__main__":
    main()
