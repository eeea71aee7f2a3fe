"""The local engine: chunks cut by this process and a pool of spawned worker processes.

Chunk files are named by index, so the order they finish in does not matter; the pool is
started before planning so that its imports overlap the driver's work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import pyarrow as pa

from urp_data.build.chunks import write_chunk
from urp_data.build.plan import Plan
from urp_data.build.sources import Sources, open_sources
from urp_data.config.regions import RegionConfig
from urp_data.sources.places.gazetteer import Gazetteer

logger = logging.getLogger(__name__)


_worker_state: dict[str, Any] = {}


PARENT_POLL_S = 0.5
"""How often a chunk worker checks that the build that started it is still alive."""


def _init_worker(region: RegionConfig) -> None:
    _worker_state.update(region=region)
    # A worker blocks on its task queue, whose write end it holds too, so it would outlive a build
    # killed with SIGKILL, idle and holding its sources. It leaves when its parent is gone; a chunk
    # it was writing is a temporary file that never becomes a chunk.
    parent = os.getppid()

    def leave_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=leave_with_parent, name="urp-parent-watch", daemon=True).start()
    # The gazetteer is local (a memory-mapped cache), so it loads now, while the build plans:
    # with it come the imports of its first use (~0.9 s, pandas through pyarrow) that would
    # otherwise delay this worker's first chunk. Any error is raised again by that chunk.
    with suppress(Exception):  # the first chunk's open_sources loads it again and reports the error
        _worker_state["gazetteer"] = Gazetteer(region.geocoder.min_population)


def _worker_chunk(path: Path, plan: Plan, schema: pa.Schema) -> int:
    st = _worker_state
    if "src" not in st:
        # Opened on the first chunk, not at start-up: workers start while the build plans, and must
        # not reach a network source before :func:`before_network` has run. Each worker opens its
        # own sources: GDAL handles must not be shared across processes.
        st["src"] = open_sources(st["region"], st.pop("gazetteer", None))
    return write_chunk(st["region"], st["src"], plan, schema, path, range(len(plan.cells)))


@contextmanager
def worker_pool(workers: int, region: RegionConfig) -> Iterator[Any]:
    """``workers`` spawned chunk workers, started now so that their imports (~1 s each) overlap the planning."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(region,)) as pool:
        for _ in range(workers):
            pool.submit(int)  # processes start on demand: one no-op task each starts them now
        yield pool


def run_chunks_in_workers(pool: Any, workers: int, region: RegionConfig, src: Sources, plan: Plan,
                           schema: pa.Schema, todo: list[tuple[Path, range]]) -> Iterator[int]:
    """Yield each chunk's cell count as it is written, by this process and the ``pool``'s ``workers``.

    This process has its sources open already, so it cuts chunks too rather than idle while the
    pool opens theirs (see :func:`share_queue`); each chunk sent to the pool carries only its
    rows of the plan. Chunk files are named by index, so the order they finish in does not matter.
    """
    return share_queue(pool, workers, todo,
                        lambda c: pool.submit(_worker_chunk, c[0], plan.take(c[1]), schema),
                        lambda c: write_chunk(region, src, plan, schema, *c))


class _SharedQueue:
    """The items of :func:`share_queue`, taken in order under a lock by this process and by the pool."""

    def __init__(self, items: list[Any], remote: Callable[[Any], Future[int]]) -> None:
        self._queue = deque(items)
        self._lock = threading.Lock()
        self._remote = remote
        self.finished: SimpleQueue[Future[int]] = SimpleQueue()
        self.sent = 0

    def take(self) -> Any:
        """The item at the front, for this process; None when the queue is empty."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def send(self, done: Future[int] | None = None) -> None:
        """Send the pool the item at the front of the queue; called again as each of its items finishes."""
        if done is not None and (done.cancelled() or done.exception() is not None):
            return  # a failed item sends no more: the build stops at it
        with self._lock:
            if not self._queue:
                return
            item = self._queue.popleft()
            self.sent += 1
        try:
            fut = self._remote(item)
        except RuntimeError as exc:  # the pool is broken or shutting down: the caller gets the error
            fut = Future()
            fut.set_exception(exc)
        fut.add_done_callback(self.finished.put)
        fut.add_done_callback(self.send)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()


def share_queue(pool: Any, workers: int, items: list[Any], remote: Callable[[Any], Future[int]],
                 local: Callable[[Any], int]) -> Iterator[int]:
    """Yield the results of ``items``, each run once: by ``remote`` in the pool or ``local`` here.

    One queue, taken in order by both sides: the pool one item per worker at a time (the next is
    sent as one finishes), this process the next whenever it is free. In order, so that items
    finish roughly in order (the build appends chunks to the split files in order as they come);
    one at a time, so that neither side waits on items reserved for the other, as it would if
    every item were submitted at once: a process pool moves one task more than it has workers
    into its call queue, out of reach. Results come as they finish; an error stops both sides.
    """
    queue = _SharedQueue(items, remote)
    received = 0
    try:
        for _ in range(workers):
            queue.send()
        while (item := queue.take()) is not None:
            yield local(item)
            while not queue.finished.empty():
                received += 1
                yield queue.finished.get().result()
        while received < queue.sent:  # the queue is empty: what remains is the pool's last items
            received += 1
            yield queue.finished.get().result()
    finally:
        queue.clear()
