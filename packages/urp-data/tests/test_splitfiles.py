"""Split files appended chunk by chunk, in chunk order, while chunks arrive in any order."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from urp_data.build.splitfiles import SplitFiles
from urp_data.contract import SPLITS, split_path
from urp_data.util.fs import atomic_write_table

SCHEMA = pa.schema([("sample_id", pa.string()), ("split", pa.string()), ("group", pa.string()),
                    ("lat", pa.float64()), ("population", pa.float64())])


def _chunk(k: int) -> pa.Table:
    splits = ["train", "val", "test_unseen", "train"]
    return pa.table({"sample_id": [f"{k}-{i}" for i in range(4)], "split": splits,
                     "group": [f"g{k % 2}", "g9", "g7", f"g{k % 2}"], "lat": [1.0, 2.0, None, 4.0],
                     "population": [None if i == k % 4 else float(i) for i in range(4)]}, schema=SCHEMA)


def _wait_for(condition, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_chunks_are_appended_in_order_as_soon_as_every_earlier_one_is_there(tmp_path: Path):
    paths = [tmp_path / "chunks" / f"chunk-{k:06d}.parquet" for k in range(5)]
    out = tmp_path / "final"
    out.mkdir()
    with SplitFiles(out, SCHEMA, paths) as files:
        for k in (2, 1):  # out of order: nothing can be appended before chunk 0
            atomic_write_table(_chunk(k), paths[k], {"urp_skipped_no_imagery": "1"})
            files.chunk_done()
        time.sleep(0.2)
        assert files.appended == 0
        atomic_write_table(_chunk(0), paths[0])
        files.chunk_done()
        assert _wait_for(lambda: files.appended == 3)
        for k in (4, 3):
            atomic_write_table(_chunk(k), paths[k])
            files.chunk_done()
        counts = files.counts()
    assert files.appended == 5
    every = pa.concat_tables(_chunk(k) for k in range(5))
    for s in SPLITS:
        got = pq.read_table(split_path(out, s))
        want = every.filter(pa.compute.equal(every["split"], s))
        assert got.to_pylist() == want.to_pylist()  # rows in chunk order, then row order
        assert counts["per_split"][s] == want.num_rows
    assert counts["per_group"]["train"] == {"g0": 6, "g1": 4}
    assert counts["indicator_nulls"] == {"population": 5}  # lat is a coordinate, not an indicator
    assert counts["skipped_no_imagery"] == 2


def test_a_missing_chunk_fails_the_counts_rather_than_leaving_a_short_split(tmp_path: Path):
    paths = [tmp_path / f"chunk-{k:06d}.parquet" for k in range(3)]
    for k in (0, 2):
        atomic_write_table(_chunk(k), paths[k])
    with SplitFiles(tmp_path, SCHEMA, paths) as files, pytest.raises(RuntimeError, match="chunk-000001"):
        files.counts()
    assert files.appended == 1


def test_an_unreadable_chunk_stops_the_build_at_its_next_chunk(tmp_path: Path):
    paths = [tmp_path / f"chunk-{k:06d}.parquet" for k in range(3)]
    paths[0].write_bytes(b"not parquet")
    with SplitFiles(tmp_path, SCHEMA, paths) as files:
        with pytest.raises(pa.ArrowInvalid):  # the next chunk_done after the thread has failed
            for _ in range(1000):
                files.chunk_done()
                time.sleep(0.01)
        with pytest.raises(pa.ArrowInvalid):
            files.counts()
    assert files.appended == 0
    assert not any(split_path(tmp_path, s).exists() for s in SPLITS)  # no rows, no split file


def test_a_failed_build_stops_the_appending_at_once(tmp_path: Path):
    paths = [tmp_path / f"chunk-{k:06d}.parquet" for k in range(200)]
    for k, p in enumerate(paths):
        atomic_write_table(_chunk(k), p)
    with pytest.raises(KeyboardInterrupt), SplitFiles(tmp_path, SCHEMA, paths) as files:
        raise KeyboardInterrupt
    assert files.appended == 0  # not the 200 chunks already on disk
