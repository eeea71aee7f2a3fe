"""The waits between urllib3's retries of one send: as long as the server asks, never past the
request's deadline, and then for the host's politeness slot.

urllib3 retries a 429/5xx inside one ``send``, out of sight of :class:`urp_data.net.http.PoliteSession`;
its :class:`PacedRetry` waits here: ``Retry-After`` (seconds or HTTP-date), a rate-limited host's
documented window after a 429 without it (:mod:`urp_data.net.hosts`), else exponential backoff;
a wait that would end past the request's deadline fails at once instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from urp_data.errors import InputError
from urp_data.net import hosts

_deadline = threading.local()  # .at: the monotonic deadline of the request this thread is sending


@contextmanager
def deadline_at(at: float) -> Iterator[None]:
    """Retry waits of this thread's send inside the block must end by ``at`` (``time.monotonic()`` seconds)."""
    _deadline.at = at
    try:
        yield
    finally:
        _deadline.at = None


class PacedRetry(Retry):
    """urllib3's ``Retry`` whose retries of a response also wait for a politeness slot of their host
    (``pace(host, min_interval_s)``); without it a 503 burst would be retried at the backoff's pace
    rather than the host's limit."""

    min_interval_s = 0.0
    pace: Callable[[str, float], None] | None = None

    def new(self, **kw: Any) -> PacedRetry:
        retry = super().new(**kw)
        retry.min_interval_s, retry.pace = self.min_interval_s, self.pace
        return retry

    def sleep(self, response: Any = None) -> None:
        """Wait as the server asks (``Retry-After``), for the host's window after a 429 without
        it, else urllib3's backoff; never past the deadline of the request being sent."""
        pool = getattr(response, "_pool", None)  # urllib3 sets it on every response of a pool
        host = f"{pool.host}:{pool.port}" if pool is not None else ""
        wait = retry_wait_s(self, response, host)
        deadline = getattr(_deadline, "at", None)
        if deadline is not None and time.monotonic() + wait > deadline:
            raise InputError(f"{host or 'the server'} asks us to wait {wait:.0f} s before trying again, past the "
                             "request's deadline; try again later")
        time.sleep(wait)
        if pool is not None and self.pace is not None:
            self.pace(host, self.min_interval_s)


def retry_wait_s(retry: Retry, response: Any, host: str) -> float:
    """Seconds to wait before retrying ``response``: its ``Retry-After`` (capped at ``retry.retry_after_max``);
    after a 429 without one, until its ``X-RateLimit-Reset`` or else the host's documented window
    (:mod:`urp_data.net.hosts`); otherwise ``retry``'s exponential backoff."""
    headers = getattr(response, "headers", None) or {}
    if headers.get("Retry-After") is not None:
        with suppress(InvalidHeader):  # an unreadable Retry-After counts as none
            return min(retry.parse_retry_after(headers["Retry-After"]), float(retry.retry_after_max))
    policy = hosts.policy(host) if host else None
    if getattr(response, "status", None) == 429 and policy is not None:
        reset = headers.get("X-RateLimit-Reset", "")
        if reset.isdigit():
            return min(max(int(reset) - time.time(), 0.0), policy.window_s)
        return policy.window_s
    return retry.get_backoff_time()
