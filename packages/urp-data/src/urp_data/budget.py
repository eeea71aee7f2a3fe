"""What a build would ask of each network source, computed from geometry alone (``--dry-run``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestBudget:
    source: str            # what the line is about, e.g. "imagery sentinel-2-l2a" or "geocoder nominatim"
    host: str              # the host the requests go to (politeness is per host)
    requests: int          # requests the build would send (cache ignored)
    bytes: int             # expected bytes transferred
    min_interval_s: float  # the per-host pacing this source uses
