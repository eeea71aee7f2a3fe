"""Raster indicators (``type: raster``): the area-weighted mean (or sum) of the valid pixels under
each chip footprint.

Each pixel counts by the fraction of its area inside the footprint, so a sum of people per pixel is
the people living under the chip, and a raster coarser than the footprint gives the overlap-weighted
mean of the few pixels it touches; nodata pixels count as no value (NaN, null in Parquet), never 0.
One class per way of reaching the raster: a local file (:class:`RasterIndicator`), a COG at a URL
read by range requests (:class:`CogIndicator`, ``mode: cog``) and a file at a URL downloaded once
(:class:`DownloadIndicator`, ``mode: download``); :func:`raster_indicator` picks one.
"""

from __future__ import annotations

import warnings
import weakref
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.errors import RasterioError
from rasterio.transform import from_bounds as transform_from_bounds
from rasterio.windows import Window, from_bounds

from urp_data.errors import InputError
from urp_data.net import downloads, http, ranges
from urp_data.net.budget import RequestBudget
from urp_data.sources.base import CellBatch, IndicatorSource, NetworkSource, indicator_info, square_lonlat
from urp_data.util.fs import one_line
from urp_data.util.geodesy import KM_PER_DEG_LON_EQUATOR

RASTER_METHODS = {
    "sum": "area-weighted sum: each valid pixel's value times the fraction of its area inside the footprint",
    "mean": "area-weighted mean: valid pixels weighted by the fraction of their area inside the footprint",
}
"""How each raster ``stat`` is computed, as the manifest says it."""

IN_MEMORY_MAX_VALUES = 50_000_000
"""A local indicator raster up to this many pixels is read into memory once; larger ones and remote
COGs are read window by window (a global 30 arc-second layer has 933 million pixels)."""
REMOTE_MODES = ("cog", "download")
DEFAULT_MIN_INTERVAL_S = 0.1
"""Default pause between two requests to an indicator host (``min_interval_s``): one window read or download."""


class RasterIndicator(IndicatorSource):
    """Zonal statistic of one band of a local raster over each chip footprint (nodata -> null).

    A raster up to ``in_memory_max`` pixels is read into memory once, a larger one window by
    window. :class:`CogIndicator` and :class:`DownloadIndicator` read a raster at a URL the same way.
    """

    in_memory_max = IN_MEMORY_MAX_VALUES

    def __init__(self, spec: dict[str, Any], path: Path) -> None:
        self._named(spec)
        self._open(spec, str(path), None, str(path))

    def _named(self, spec: dict[str, Any]) -> None:
        self.name = spec["name"]
        self.stat = spec.get("stat", "mean")
        if self.stat not in ("mean", "sum"):
            raise InputError(f"indicator {self.name}: stat must be mean or sum, got {self.stat!r}")

    def _open(self, spec: dict[str, Any], opened: str, opener: Any, shown: str) -> None:
        """Open ``opened`` (through the rasterio ``opener`` when given); ``shown`` is what the manifest
        and the errors name (a URL without its key)."""
        self.path = shown
        self.band = int(spec.get("band", 1))
        self.scale = float(spec.get("scale", 1.0))
        try:
            with rasterio.Env(**http.gdal_options()), warnings.catch_warnings():
                # plain images are fine with crs/bounds (checked below)
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(opened, opener=opener)
                if not 1 <= self.band <= ds.count:
                    raise InputError(f"indicator {self.name}: {self.path} has no band {self.band}")
                crs = spec.get("crs") or ds.crs
                if crs is None:
                    raise InputError(f"indicator raster {self.path} has no CRS; georeference it or set crs: and bounds:")
                self.nodata = spec.get("nodata", ds.nodata)
                self.transform = transform_from_bounds(*spec["bounds"], ds.width, ds.height) if "bounds" in spec \
                    else ds.transform
                self.crs = rasterio.crs.CRS.from_user_input(crs)
                self.shape = (ds.height, ds.width)
                self.block_shape = ds.block_shapes[self.band - 1]
                self.itemsize = np.dtype(ds.dtypes[self.band - 1]).itemsize
                self.arr: np.ndarray | None = None
                self.ds: Any = ds
                if ds.width * ds.height <= self.in_memory_max:
                    self.arr = ds.read(self.band)  # raw: 1/8 of float64 for 8-bit data; _block converts
                    ds.close()
                    self.ds = None
                else:  # closed before the interpreter tears down the Python file GDAL reads through
                    weakref.finalize(self, ds.close)
        except RasterioError as exc:
            raise InputError(f"cannot read indicator raster {self.path}: {http.redact(one_line(exc))}") from exc
        self._to_src = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        res = abs(self.transform.a)
        km = res * KM_PER_DEG_LON_EQUATOR if self.crs.is_geographic else res * self.crs.linear_units_factor[1] / 1000.0
        self.info = indicator_info(spec, self.path, f"{res:g} {'degrees' if self.crs.is_geographic else 'CRS units'} per pixel",
                          spec.get("licence", ""), resolution_km=km, method=RASTER_METHODS[self.stat])

    def _values(self, raw: np.ndarray) -> np.ndarray:
        """Raw pixels as float64 with nodata as NaN and ``scale`` applied (the same for every read path)."""
        arr = raw.astype(np.float64)
        if self.nodata is not None:
            arr[arr == self.nodata] = np.nan
        arr *= self.scale
        return arr

    def _block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Pixels [r0:r1, c0:c1] (already clipped to the raster), from memory or a windowed read."""
        if self.arr is not None:
            return self._values(self.arr[r0:r1, c0:c1])
        with rasterio.Env(**http.gdal_options()):
            try:
                raw = self.ds.read(self.band, window=Window(c0, r0, c1 - c0, r1 - r0))
            except RasterioError as exc:
                raise InputError(f"indicator raster {self.path} could not be read at rows {r0}-{r1}, columns "
                                 f"{c0}-{c1}: {http.redact(one_line(exc))}") from exc
        return self._values(raw)

    def _in_src(self, footprint: Any) -> Any:
        """A lon/lat footprint in the raster's CRS, its edges densified first (1e-4 degrees, ~11 m)
        so a square in degrees keeps the curved edges it has in a projected CRS."""
        xy = np.asarray(shapely.segmentize(footprint, 1e-4).exterior.coords)
        return shapely.Polygon(np.column_stack(self._to_src.transform(xy[:, 0], xy[:, 1])))

    def _windows(self, footprints: Any) -> list[tuple[int, int, int, int] | None]:
        """Per footprint, the pixel window (r0, r1, c0, c1) it covers, clipped to the raster; None outside."""
        h, w = self.shape
        full = Window(0, 0, w, h)
        out: list[tuple[int, int, int, int] | None] = []
        for fp in footprints:
            win = from_bounds(*self._in_src(fp).bounds, self.transform)
            try:
                win = win.intersection(full)
            except rasterio.errors.WindowError:
                out.append(None)
                continue
            r0, c0 = int(np.floor(win.row_off)), int(np.floor(win.col_off))
            r1, c1 = int(np.ceil(win.row_off + win.height)), int(np.ceil(win.col_off + win.width))
            r1, c1 = min(max(r1, r0 + 1), h), min(max(c1, c0 + 1), w)
            out.append((r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None)
        return out

    def _fractions(self, footprint: Any, win: tuple[int, int, int, int]) -> np.ndarray:
        """Per pixel of ``win`` (r0, r1, c0, c1), the fraction of its area inside ``footprint``
        (a lon/lat polygon), computed in the raster's CRS; in a geographic CRS the fraction is
        taken in degrees, exact for the near-rectangular pixels under one chip.
        """
        r0, r1, c0, c1 = win
        fp = self._in_src(footprint)
        cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
        t = self.transform
        xa, ya = t * (cols, rows)
        xb, yb = t * (cols + 1, rows + 1)
        pixels = shapely.box(np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb))
        return np.asarray(shapely.area(shapely.intersection(pixels, fp)) / abs(t.a * t.e - t.b * t.d))

    def values(self, batch: CellBatch) -> np.ndarray:
        """Per sample, ``sum(value * fraction)`` (``stat: sum``) or ``sum(value * fraction) /
        sum(fraction)`` (``stat: mean``) over the valid pixels, the fraction being each pixel's
        share of area inside the footprint; NaN where no valid pixel overlaps it."""
        out = np.full(len(batch.lat), np.nan)
        for i, (fp, win) in enumerate(zip(batch.footprints, self._windows(batch.footprints), strict=True)):
            if win is None:
                continue
            block = self._block(*win)
            weight = self._fractions(fp, win)
            valid = np.isfinite(block) & (weight > 0)
            if valid.any():
                total = float(np.sum(block[valid] * weight[valid]))
                out[i] = total if self.stat == "sum" else total / float(np.sum(weight[valid]))
        return out


class CogIndicator(RasterIndicator, NetworkSource):
    """A raster at a URL read as a COG (``mode: cog``): range requests of ``ranges.CHUNK_BYTES``
    through :mod:`urp_data.net.ranges` (paced, checked and cached), so only the blocks under the
    samples are fetched, once."""

    in_memory_max = 0  # never read whole: that would fetch the blocks no sample needs

    def __init__(self, spec: dict[str, Any]) -> None:
        self._named(spec)
        self.url, self.min_interval_s = _remote(spec)
        if "member" in spec:
            raise InputError(f"indicator {self.name}: member applies to mode: download only")
        given = downloads.sha256_digest(spec["sha256"], self.url) if "sha256" in spec else None
        shown = http.redact(self.url)
        self.whole_bytes: int | None = None  # set when the host ignores Range: one download of this size
        try:
            self._file_bytes = ranges.RangeFile(self.url, self.min_interval_s, given).size
        except downloads.RangesIgnored as exc:  # --dry-run: counted as one download, not fetched
            self.whole_bytes = self._file_bytes = exc.advertised or 0
            self.info = indicator_info(spec, shown, "not read (--dry-run)", spec.get("licence", ""),
                              method=RASTER_METHODS[self.stat])
            return
        whole = downloads.whole_file(self.url)
        if whole is None:
            self._open(spec, self.url, ranges.opener(self.url, self.min_interval_s, given), shown)
            return
        self.whole_bytes = self._file_bytes
        self.sha256 = whole.sha256
        self.sha256_note = None if whole.checked else "first seen: the host ignores Range, the file was " \
            "downloaded whole and no sha256 was given to check it against"
        self._open(spec, str(whole.path), None, shown)

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float, size_px: int) -> list[RequestBudget]:
        """The first chunk (the header), then for each block under a sample's footprint its
        uncompressed size in chunks, once (an upper bound: compressed blocks are smaller and
        neighbours share chunks); bytes are whole chunks. Samples centred on (lat, lon) degrees."""
        host = urlsplit(self.url).netloc.lower()
        if self.whole_bytes is not None:  # a host that ignores Range: the whole file, once
            return [RequestBudget(f"indicator {self.name}", host, 1, self.whole_bytes, self.min_interval_s)]
        fps = [shapely.box(*square_lonlat(float(la), float(lo), footprint_m)) for la, lo in zip(lat, lon, strict=True)]
        blocks: set[tuple[int, int]] = set()
        for win in self._windows(fps):
            if win is not None:
                blocks |= self._blocks(win)
        bh, bw = self.block_shape
        per_block = -(-bh * bw * self.itemsize // ranges.CHUNK_BYTES)
        requests = 1 + len(blocks) * per_block
        return [RequestBudget(f"indicator {self.name}", host, requests,
                              min(requests * ranges.CHUNK_BYTES, self._file_bytes), self.min_interval_s)]

    def _blocks(self, win: tuple[int, int, int, int]) -> set[tuple[int, int]]:
        """The (row, column) indices of the raster blocks a pixel window touches."""
        r0, r1, c0, c1 = win
        bh, bw = self.block_shape
        return {(r, c) for r in range(r0 // bh, (r1 - 1) // bh + 1) for c in range(c0 // bw, (c1 - 1) // bw + 1)}


class DownloadIndicator(RasterIndicator, NetworkSource):
    """A raster at a URL downloaded once into the cache (``mode: download``); ``sha256:`` is required
    and checked before the file is used, ``member:`` names the raster inside a downloaded zip."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._named(spec)
        self.url, self.min_interval_s = _remote(spec)
        if "sha256" not in spec:
            raise InputError(f"indicator {self.name}: mode: download needs sha256: (the file's checksum, checked "
                             "before it is used)")
        self.sha256 = downloads.sha256_digest(spec["sha256"], self.url)
        local = downloads.download(self.url, self.sha256, self.min_interval_s)
        self._file_bytes = local.stat().st_size
        member = spec.get("member")
        if member is not None and not zipfile.is_zipfile(local):
            raise InputError(f"indicator {self.name}: member: is given but {http.redact(self.url)} is not a zip file")
        opened = str(local) if member is None else f"/vsizip/{local}/{member}"
        self._open(spec, opened, None, http.redact(self.url))

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float, size_px: int) -> list[RequestBudget]:
        """One request for the whole file, whatever the samples."""
        return [RequestBudget(f"indicator {self.name}", urlsplit(self.url).netloc.lower(), 1, self._file_bytes,
                              self.min_interval_s)]


def _remote(spec: dict[str, Any]) -> tuple[str, float]:
    """A remote indicator's URL (a bad scheme or host fails here, before any request) and its pause."""
    url = str(spec["url"])
    http.canonical_url(url)
    return url, float(spec.get("min_interval_s", DEFAULT_MIN_INTERVAL_S))


def raster_indicator(spec: dict[str, Any], path: Path | None) -> RasterIndicator:
    """The raster indicator of one ``type: raster`` entry: a local file (``path``), or a URL read by its ``mode``."""
    if "url" not in spec:
        return RasterIndicator(spec, Path(str(path)))
    mode = spec.get("mode", "cog")
    if mode not in REMOTE_MODES:
        raise InputError(f"indicator {spec['name']}: mode must be cog or download, got {mode!r}")
    return CogIndicator(spec) if mode == "cog" else DownloadIndicator(spec)
