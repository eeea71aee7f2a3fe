"""Samples per second and peak memory of `urp-data build --region global` (offline sources).

Usage: uv run python benchmarks/build.py [--sizes 1000 10000 100000] [--workers 1 2] [--out /tmp/urp-bench]

Each size runs in a fresh process, from a cold output folder, with the shipped global region
and its offline sources. Peak RSS is the build process's own ru_maxrss; with workers, each worker
process loads the sources again and its peak is shown separately (they add up). Throughput counts
the whole build: loading sources, sampling, chips, geocoding, indicators, splits, manifest.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time
from urp_data.pipeline import build_region
from urp_data.schema import load_manifest
t0 = time.perf_counter()
out = build_region("global", out=sys.argv[1], samples=int(sys.argv[2]), workers=int(sys.argv[3]))
dt = time.perf_counter() - t0
m = load_manifest(out)
rows = sum(m.counts["per_split"].values())
print(json.dumps({"seconds": dt, "rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes to compare")
    ap.add_argument("--out", default="/tmp/urp-bench-build")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"{'samples':>8} {'workers':>7} {'rows':>8} {'seconds':>8} {'samples/s':>10} {'peak MB':>8} {'worker MB':>9} {'MB on disk':>10}")
    for n, w in [(n, w) for n in args.sizes for w in args.workers]:
        out = Path(args.out) / str(n)
        shutil.rmtree(out, ignore_errors=True)
        res = subprocess.run([sys.executable, "-c", CHILD, str(out), str(n), str(w)], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            sys.exit(res.returncode)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        disk = sum(p.stat().st_size for p in (out / "global").glob("*")) / 1e6
        print(f"{n:>8} {w:>7} {r['rows']:>8} {r['seconds']:>8.1f} {n / r['seconds']:>10.0f} {r['peak_rss_mb']:>8.0f} {r['worker_peak_rss_mb'] if w > 1 else 0:>9.0f} {disk:>10.1f}")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
