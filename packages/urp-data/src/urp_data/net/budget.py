"""What a build would ask of the network, before it asks: ``urp-data build --dry-run``.

Every network source answers :meth:`request_budget` from geometry alone (no request is sent):
how many requests it would send for the planned samples, to which host, how many bytes it
expects back and the pause between two requests that its politeness limit sets. The cache is
ignored, so the figures are those of a first build.

Pacing is per host and shared by every worker (:mod:`urp_data.net.http`), so one host's requests
are sent one after another: its time is the sum of requests × pause over the sources that use
it. Different hosts are paced independently, so the build's floor is the slowest host's time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from urp_data.net import hosts


@dataclass(frozen=True)
class RequestBudget:
    """One source's requests to one host for a build."""

    source: str  # what the line is about, e.g. "imagery sentinel-2-l2a" or "geocoder nominatim"
    host: str  # the host the requests go to (politeness is per host)
    requests: int  # requests the build would send (cache ignored)
    bytes: int  # expected bytes transferred
    min_interval_s: float  # the per-host pacing this source's config asks for

    @property
    def pace_s(self) -> float:
        """The pause actually kept: the configured one, never under the host's policy (:mod:`urp_data.net.hosts`)."""
        return hosts.pace_s(self.host, self.min_interval_s)

    @property
    def seconds(self) -> float:
        """The least time these requests take under their pacing, on their own."""
        return self.requests * self.pace_s


@dataclass(frozen=True)
class HostTime:
    host: str
    requests: int
    bytes: int
    seconds: float


def per_host(budgets: Iterable[RequestBudget]) -> list[HostTime]:
    """Requests, bytes and paced time per host, slowest host first."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for b in budgets:
        row = acc[b.host]
        row[0] += b.requests
        row[1] += b.bytes
        row[2] += b.seconds
    hosts = [HostTime(h, int(r), int(n), s) for h, (r, n, s) in acc.items()]
    return sorted(hosts, key=lambda h: (-h.seconds, h.host))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_budget(budgets: list[RequestBudget], samples: int) -> str:
    """The ``--dry-run`` report: one line per source and host, then the floor the slowest host sets."""
    if not budgets:
        return f"{samples} samples; every source is local: no network requests"
    width = max(len(b.source) for b in budgets)
    hwidth = max(len(b.host) for b in budgets)
    lines = [f"{samples} samples; requests the build would send (cache ignored), per source:",
             (f"  {'source':{width}s}  {'host':{hwidth}s}  {'requests':>10s}  {'bytes':>9s}  {'pause':>7s}  "
              f"{'paced time':>10s}")]
    for b in budgets:
        lines.append(f"  {b.source:{width}s}  {b.host:{hwidth}s}  {b.requests:>10,d}  {_size(b.bytes):>9s}  "
                     f"{b.pace_s:>6.2f}s  {_duration(b.seconds):>10s}")
    lines.append("pace per host, and where it comes from:")
    for host in sorted({b.host for b in budgets}):
        paces = sorted({b.pace_s for b in budgets if b.host == host})
        policy = hosts.policy(host)
        said = f"the host's policy: {policy.source}" if policy and paces[0] == policy.min_interval_s else \
            "the source's min_interval_s (config or default)"
        lines.append(f"  {host:{hwidth}s}  {' / '.join(f'{p:.2f}s' for p in paces)}  {said}")
    slowest = per_host(budgets)[0]
    lines.append(f"at least {_duration(slowest.seconds)} (the politeness limit of {slowest.host}: "
                 f"{slowest.requests:,d} requests); hosts are paced independently")
    return "\n".join(lines)
