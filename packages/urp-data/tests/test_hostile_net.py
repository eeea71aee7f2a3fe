"""Hostile servers (issue 22): one deadline covers connect, status line, headers and body, in every thread."""

from __future__ import annotations

import threading
import time

import pytest
from servers import Faulty
from urp_data.errors import InputError
from urp_data.net import http


def test_headers_trickled_one_byte_a_second_stop_at_the_deadline(server):
    """Before, only a per-read timeout covered the headers: a byte a second never tripped it."""
    Faulty.faults = {"/slow.json": ["trickle-headers"] * 10}
    t0 = time.monotonic()
    with pytest.raises(InputError, match="did not answer in full before the request's deadline"):
        http.get(f"{server}/slow.json", min_interval_s=0, deadline_s=3)
    assert time.monotonic() - t0 < 6
    assert http.cache_path(f"{server}/slow.json").exists() is False


def test_every_thread_obeys_its_own_deadline(server):
    Faulty.faults = {f"/slow{i}.json": ["trickle-headers"] * 10 for i in range(3)}
    failures: list[str] = []
    took: list[float] = []

    def fetch(i: int) -> None:
        t0 = time.monotonic()
        try:
            http.get(f"{server}/slow{i}.json", min_interval_s=0, deadline_s=2)
        except InputError as exc:
            failures.append(str(exc))
        took.append(time.monotonic() - t0)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(failures) == 3 and max(took) < 5, (failures, took)


def test_a_healthy_server_is_still_answered_after_a_deadline_fired(server):
    """The watchdog shuts one socket down; the next request on the same session gets a fresh one."""
    Faulty.faults = {"/slow.json": ["trickle-headers"]}
    with pytest.raises(InputError):
        http.get(f"{server}/slow.json", min_interval_s=0, deadline_s=1.5)
    assert b"/fine.json" in http.get(f"{server}/fine.json", min_interval_s=0, deadline_s=5)
