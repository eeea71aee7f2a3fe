"""Samples per second and peak memory of `urp-data build --region global` (offline sources).

Usage: uv run python benchmarks/build.py [--sizes 1000 10000 100000] [--out /tmp/urp-bench]

Each size runs in a fresh process (peak RSS is that process's own ru_maxrss), from a cold
output folder, with the shipped global region and its offline sources. Throughput counts
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
out = build_region("global", out=sys.argv[1], samples=int(sys.argv[2]))
dt = time.perf_counter() - t0
m = load_manifest(out)
rows = sum(m.counts["per_split"].values())
print(json.dumps({"seconds": dt, "rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--out", default="/tmp/urp-bench-build")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"{'samples':>8} {'rows':>8} {'seconds':>8} {'samples/s':>10} {'peak MB':>8} {'MB on disk':>10}")
    for n in args.sizes:
        out = Path(args.out) / str(n)
        shutil.rmtree(out, ignore_errors=True)
        res = subprocess.run([sys.executable, "-c", CHILD, str(out), str(n)], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            sys.exit(res.returncode)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        disk = sum(p.stat().st_size for p in (out / "global").glob("*")) / 1e6
        print(f"{n:>8} {r['rows']:>8} {r['seconds']:>8.1f} {n / r['seconds']:>10.0f} {r['peak_rss_mb']:>8.0f} {disk:>10.1f}")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
