"""Samples per second and peak memory per process of `urp-data build --region global` (offline sources).

Usage: uv run python benchmarks/build.py [--sizes 10000 100000] [--engines local:1 local:2 ray] [--out /tmp/urp-bench]

Each (size, engine) runs in a fresh process, from a cold output folder, with the shipped global
region and its offline sources. `local:N` is `--engine local --workers N`; `ray` is
`--engine ray` on a local Ray started by the build and sized to the machine (one worker per CPU).
Throughput counts the whole build: loading sources, starting workers (and Ray), sampling,
chips, geocoding, indicators, splits, manifest.

Memory is each process's own peak RSS (VmHWM from /proc, polled every 0.2 s): the build's
process, its chunk workers (the largest one, and how many there were) and, with Ray, Ray's own
processes (GCS, raylet, agents, idle workers; the sum of their peaks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, os, sys, threading, time
from pathlib import Path
from urp_data.pipeline import build_region
from urp_data.schema import load_manifest

peaks, cmds = {}, {}

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
                cmds[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\\0", b" ").decode()[:200]
            except (OSError, StopIteration):
                continue
            peaks[pid] = max(peaks.get(pid, 0.0), hwm)
        stop.wait(0.2)

stop = threading.Event()
threading.Thread(target=poll, args=(stop,), daemon=True).start()
engine, workers = (sys.argv[3].split(":") + ["1"])[:2]
t0 = time.perf_counter()
out = build_region("global", out=sys.argv[1], samples=int(sys.argv[2]), engine=engine,
                   **({"workers": int(workers)} if engine == "local" else {}))
dt = time.perf_counter() - t0
stop.set()
me = os.getpid()
worker = [p for p, c in cmds.items() if p != me and ("ChunkWorker" in c or "spawn_main" in c)]
other = [p for p in cmds if p != me and p not in worker]
m = load_manifest(out)
print(json.dumps({"seconds": dt, "rows": sum(m.counts["per_split"].values()), "driver_mb": peaks.get(me, 0),
                  "worker_mb": max((peaks[p] for p in worker), default=0), "n_workers": len(worker),
                  "other_mb": sum(peaks[p] for p in other)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--engines", nargs="+", default=["local:2", "ray"],
                    help="local:N (--engine local --workers N) or ray (a local Ray sized to the machine)")
    ap.add_argument("--out", default="/tmp/urp-bench-build")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{'samples':>8} {'engine':>8} {'rows':>8} {'seconds':>8} {'samples/s':>10} {'driver MB':>9} "
          f"{'worker MB':>9} {'workers':>7} {'Ray MB':>7} {'MB on disk':>10}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    for n, engine in [(n, e) for n in args.sizes for e in args.engines]:
        out = Path(args.out) / str(n)
        shutil.rmtree(out, ignore_errors=True)
        res = subprocess.run([sys.executable, "-c", CHILD, str(out), str(n), engine], capture_output=True, text=True,
                             env=env, check=False)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            sys.exit(res.returncode)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        disk = sum(p.stat().st_size for p in (out / "global").glob("*")) / 1e6
        print(f"{n:>8} {engine:>8} {r['rows']:>8} {r['seconds']:>8.1f} {n / r['seconds']:>10.0f} "
              f"{r['driver_mb']:>9.0f} {r['worker_mb']:>9.0f} {r['n_workers']:>7} {r['other_mb']:>7.0f} "
              f"{disk:>10.1f}", flush=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
