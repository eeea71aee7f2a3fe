"""The one place urp-data talks to the network (XYZ tiles; Overpass goes through osmnx).

As in osmnx's ``_http``: a deterministic cache key (hash of the URL), the cache checked
before the polite pause, only good responses cached, retries with backoff on 429/5xx, a
User-Agent that names the project, and a log line per request and per cache hit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from urp_data.errors import InputError
from urp_data.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

USER_AGENT = os.environ.get("URP_USER_AGENT", "urp-data/0.1 (+https://github.com/urp-project/urp)")
CACHE_DIR = Path(os.environ.get("URP_CACHE_DIR", Path.home() / ".cache" / "urp" / "http"))
RETRIES = 4
TIMEOUT_S = 30


class Pacer:
    """Per-host politeness: hands out send times at least ``min_interval_s`` apart for each host.

    One instance paces this process; under the Ray engine one named actor of this class paces
    every worker of the cluster (:func:`set_pacer`, :mod:`urp_data.engine_ray`), so a host's
    limit holds for the whole build, not per worker.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def reserve(self, host: str, min_interval_s: float) -> float:
        """Reserve the next free slot for ``host``; returns the seconds to wait before sending."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + min_interval_s
            return slot - now


_reserve: Callable[[str, float], float] = Pacer().reserve


def set_pacer(reserve: Callable[[str, float], float]) -> None:
    """Route this process's politeness pauses through ``reserve(host, min_interval_s) -> seconds``."""
    global _reserve
    _reserve = reserve


def cache_path(url: str) -> Path:
    """Where the response to ``url`` is cached (sha256 of the URL)."""
    digest = hashlib.sha256(url.encode()).hexdigest()
    return CACHE_DIR / digest[:2] / digest


def get(url: str, min_interval_s: float = 1.0) -> bytes:
    """The body of a GET on ``url``, from the cache when present; waits ``min_interval_s`` per host."""
    path = cache_path(url)
    if path.is_file():
        logger.debug("cache hit %s", url)
        return path.read_bytes()
    host = requests.utils.urlparse(url).netloc
    delay = 1.0
    for attempt in range(RETRIES + 1):
        if attempt:
            time.sleep(delay)
            delay *= 2
        wait = _reserve(host, min_interval_s)
        if wait > 0:
            time.sleep(wait)
        logger.info("GET %s", url)
        try:
            resp = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            failure = f"cannot fetch {url}: {exc}"
            continue
        if resp.status_code == 200:
            atomic_write_bytes(path, resp.content)
            return resp.content
        failure = f"{url} answered HTTP {resp.status_code}; check the URL and the server's usage policy"
        if resp.status_code not in (429, 500, 502, 503, 504):
            break
        retry_after = resp.headers.get("Retry-After", "")
        delay = float(retry_after) if retry_after.isdigit() else delay
    raise InputError(failure)
