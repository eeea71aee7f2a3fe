"""One deadline per request, enforced from outside the read: a watchdog shuts the socket down.

A socket timeout bounds one ``recv``; a server that sends its status line and headers one byte a
second never trips it, and ``requests`` checks nothing between those bytes. So every connection
of a :class:`urp_data.net.http.PoliteSession` registers its socket with the request that this
thread is running (:func:`watch`), and a timer thread shuts that socket down at the deadline:
the blocked read returns at once, whatever phase it is in (status line, headers or body), and the
request fails. Each thread (the build's chip threads, a Ray task's thread) has its own watch.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class _Watch:
    """The deadline of the request this thread is running, and the socket it reads from."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def attach(self, sock: Any) -> None:
        with self.lock:
            self.sock = sock
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            if self.sock is not None:
                _shut(self.sock)


def _shut(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


_current = threading.local()


@contextmanager
def watch(deadline: float) -> Iterator[_Watch]:
    """Shut this thread's request socket down at ``deadline`` (``time.monotonic()`` seconds)."""
    w = _Watch(deadline)
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), w.expire)
    timer.daemon = True
    previous = getattr(_current, "watch", None)
    _current.watch = w
    timer.start()
    try:
        yield w
    finally:
        timer.cancel()
        _current.watch = previous


def _attach(conn: HTTPConnection) -> None:
    w = getattr(_current, "watch", None)
    if w is not None and conn.sock is not None:
        w.attach(conn.sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # status line, headers, then the body stream
        _attach(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _attach(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def install(adapter: HTTPAdapter) -> None:
    """Make ``adapter``'s connections register with the running :func:`watch`."""
    adapter.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
