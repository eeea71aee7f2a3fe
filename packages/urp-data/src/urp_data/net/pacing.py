"""Per-host politeness: send times at least ``min_interval_s`` apart per host, for every process
sharing a cache folder (a slot file under a file lock) or for a Ray cluster (one :class:`Pacer` actor).

:mod:`urp_data.net.http` waits for one of these slots (:func:`pace`) before each send, retries
included, so a limit of 1 request/s holds for ``--workers 4`` as a whole; under the Ray engine one
named actor does the same for the cluster (:func:`set_pacer`). Each source sets its own
``min_interval_s``; the defaults follow the providers' usage policies, and a host's policy in
:mod:`urp_data.net.hosts` is a floor under any of them:

=====================================  =========================================
source                                 default ``min_interval_s`` (seconds)
=====================================  =========================================
XYZ tile server (``type: xyz``)        0.1 (tile.openstreetmap.org is refused)
STAC catalogs and APIs                 ``http.STAC_MIN_INTERVAL_S`` = 0.1
anything else (:func:`http.get`)       ``http.DEFAULT_MIN_INTERVAL_S`` = 1.0
=====================================  =========================================
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from urp_data.net import hosts


class Pacer:
    """Per-host politeness: hands out send times at least ``min_interval_s`` apart for each host.

    Under the Ray engine one named actor of this class paces every worker of the cluster
    (:func:`set_pacer`, :mod:`urp_data.build.engines.ray`), so a host's limit holds for the whole build,
    not per worker; processes on one machine share :func:`file_reserve` instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def reserve_at(self, host: str, min_interval_s: float) -> float:
        """Reserve the next free slot for ``host``; returns its send time (wall-clock seconds).

        A time, not a wait: a worker that asks a Ray actor gets the answer after a round trip of
        varying length, and a wait counted from the actor's clock would shift each send by that
        round trip (two sends could fall closer than ``min_interval_s``).
        """
        with self._lock:
            slot = max(time.time(), self._next.get(host, 0.0))
            self._next[host] = slot + min_interval_s
            return slot


def file_reserve(host: str, min_interval_s: float, folder: Path) -> float:
    """The seconds to wait for ``host``'s next slot (like :meth:`Pacer.reserve_at`), shared by every
    process that uses the same ``folder`` (the HTTP cache's ``.pace``).

    The next free send time of ``host`` (wall-clock seconds, since processes share no monotonic
    clock) lives in ``folder/<hash of host>``, read and advanced under a file lock.
    """
    if min_interval_s <= 0:
        return 0.0
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    slot_file = folder / hashlib.sha256(host.encode()).hexdigest()[:32]
    with FileLock(str(slot_file) + ".lock"):
        now = time.time()
        try:
            booked = float(slot_file.read_text() or 0.0)
        except (OSError, ValueError):
            booked = 0.0
        slot = max(now, booked)
        slot_file.write_text(repr(slot + min_interval_s))  # under the lock: no reader sees it half written
    return slot - now


_reserve: Callable[[str, float], float] | None = None  # None: file_reserve in the folder pace() is given


def set_pacer(reserve: Callable[[str, float], float]) -> None:
    """Route this process's politeness pauses through ``reserve(host, min_interval_s) -> seconds``."""
    global _reserve
    _reserve = reserve


def pace(host: str, min_interval_s: float, folder: Path) -> None:
    """Wait for ``host``'s next politeness slot, never closer than the host's policy allows
    (:mod:`urp_data.net.hosts`): from the pacer of :func:`set_pacer` if one is set, else from the
    slot files in ``folder`` shared by every process of the build (:func:`file_reserve`)."""
    min_interval_s = hosts.pace_s(host, min_interval_s)
    wait = _reserve(host, min_interval_s) if _reserve is not None else file_reserve(host, min_interval_s, folder)
    if wait > 0:
        time.sleep(wait)


def host_of(url: str) -> str:
    """``host:port`` of ``url`` (default port filled in): the unit of politeness."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
