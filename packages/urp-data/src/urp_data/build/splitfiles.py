"""The split files of a build, appended chunk by chunk while later chunks are still being cut.

Chunks are appended in chunk order (the order of the rows in every split file), each as soon as
it and all chunks before it are on disk, by a thread of the build's process: the Parquet reads
and writes release the GIL, so with one worker they run on the core the build leaves idle, and
with more the split files are nearly complete when the last chunk is. Written this way at the
end, as before, they took ~0.04 ms a sample (~4 s at 100k) after all chunks were done.

The files are written into the build's unfinished folder and appear only with it, so a build
that fails or is killed leaves them behind with the rest; a resumed build writes them afresh,
appending the chunks it finds on disk first.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from queue import SimpleQueue
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.parquet as pq

from urp_data.contract import SPLITS, indicator_columns, split_path
from urp_data.errors import InputError

FAILED_MIN_SAMPLES = 20
"""Samples appended before a share of failures can stop a build (ours: a first unlucky chunk is no verdict)."""


class SplitFiles:
    """One Parquet file per split in ``folder``, filled from ``chunks`` (every chunk of the build, in order).

    Call :meth:`chunk_done` whenever a chunk file may have appeared, and :meth:`counts` once all
    have; use it as a context manager so that a failed build stops the thread.
    """

    def __init__(self, folder: Path, schema: pa.Schema, chunks: list[Path], max_failed_fraction: float = 0.05) -> None:
        self.schema = schema
        self.max_failed_fraction = max_failed_fraction
        self._chunks = chunks
        self._next = 0
        self._folder = folder
        # Each opened on its split's first rows: a build that fails before its first chunk leaves
        # no split file, even in its unfinished folder.
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._per_split: Counter[str] = Counter()
        self._per_group: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
        self._nulls: Counter[str] = Counter()
        self._skipped = 0
        self._failed: Counter[str] = Counter()
        self._scene_dates: list[str] = []
        self._with_scene = 0  # first and last acquisition time seen
        self._clouds: list[float] = []
        self._planned = 0
        self._events: SimpleQueue[bool] = SimpleQueue()  # True: look for chunks; False: stop
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="urp-split-files", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._abort = kind is not None  # a failed or interrupted build stops at once, appending nothing more
        self._stop()

    @property
    def appended(self) -> int:
        """How many chunks, from the first, are in the split files so far."""
        return self._next

    def chunk_done(self) -> None:
        """A chunk was written (or chunks of an earlier run are there): append what is now in order.

        Raises the error that stopped the appending, if one did, so the build stops at it.
        """
        if self._error is not None:
            raise self._error
        self._events.put(True)

    def counts(self) -> dict[str, Any]:
        """Append the remaining chunks, close the files; the counts for the manifest."""
        self._stop()
        if self._error is not None:
            raise self._error
        if self._next < len(self._chunks):
            raise RuntimeError(f"split files: chunk {self._chunks[self._next].name} is missing")
        self._check_failures(final=True)
        for s in SPLITS:  # a split without rows is an empty file with the schema
            if s not in self._writers:
                pq.ParquetWriter(split_path(self._folder, s), self.schema).close()
        return {"per_split": {s: self._per_split[s] for s in SPLITS},
                "per_group": {s: dict(sorted(self._per_group[s].items())) for s in SPLITS},
                "indicator_nulls": dict(self._nulls), "skipped_no_imagery": self._skipped,
                "skipped_failed": dict(sorted(self._failed.items())), **self._scene_counts()}

    def _scenes(self, table: pa.Table) -> None:
        """Keep the first and last acquisition time and every cloud cover of the chips' scenes."""
        if "scene_id" not in table.column_names:  # a table of another schema (the tests' small ones)
            return
        dates = [d for d in table.column("scene_datetime").to_pylist() if d] + self._scene_dates
        self._scene_dates = [min(dates), max(dates)] if dates else []
        self._clouds += [c for c in table.column("scene_cloud_cover").to_pylist() if c is not None]
        self._with_scene += sum(s is not None for s in table.column("scene_id").to_pylist())

    def _scene_counts(self) -> dict[str, Any]:
        """``scenes`` for the manifest: chips cut from catalogued scenes, their acquisition span and clouds."""
        if not self._with_scene:
            return {}
        clouds = sorted(self._clouds)
        return {"scenes": {"chips": self._with_scene, "first_acquired": self._scene_dates[0],
                           "last_acquired": self._scene_dates[1],
                           "median_cloud_cover": clouds[len(clouds) // 2] if clouds else None}}

    def _check_failures(self, final: bool) -> None:
        """Stop the build when more than ``max_failed_fraction`` of the samples so far failed: the
        source is unusable. Checked from ``FAILED_MIN_SAMPLES`` samples on, and at the end."""
        n = self._failed.total()
        if n and (final or self._planned >= FAILED_MIN_SAMPLES) and n > self.max_failed_fraction * self._planned:
            reasons = ", ".join(f"{k}: {v}" for k, v in self._failed.most_common())
            raise InputError(f"{n} of {self._planned} samples failed ({reasons}), more than "
                             f"chip.max_failed_fraction = {self.max_failed_fraction:g}: the source is unusable; "
                             "check it or raise the fraction")

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._events.put(False)
            self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                more = self._events.get()
                while not self._abort and self._next < len(self._chunks) and self._chunks[self._next].is_file():
                    self._append(self._chunks[self._next])
                    self._next += 1
                if not more or self._abort:
                    return
        except BaseException as exc:  # noqa: BLE001  # raised in the build's thread by counts()
            self._error = exc
        finally:
            for w in self._writers.values():
                w.close()

    def _append(self, path: Path) -> None:
        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        skipped = int(meta.get(b"urp_skipped_no_imagery", b"0"))
        failed = Counter(json.loads(meta.get(b"urp_failed", b"{}")))
        self._skipped += skipped
        self._failed += failed
        self._planned += pf.metadata.num_rows + skipped + failed.total()
        self._check_failures(final=False)
        table = pf.read().cast(self.schema)
        split_col = table.column("split").to_numpy(zero_copy_only=False)
        for s in SPLITS:
            part = table.filter(pa.array(split_col == s))
            if part.num_rows:
                if s not in self._writers:
                    self._writers[s] = pq.ParquetWriter(split_path(self._folder, s), self.schema)
                self._writers[s].write_table(part)
                self._per_split[s] += part.num_rows
                self._per_group[s].update(part.column("group").to_pylist())
        for name in indicator_columns(self.schema):
            self._nulls[name] += table.column(name).null_count
        self._scenes(table)
