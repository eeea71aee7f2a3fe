"""Imagery sources: anything with ``footprint()`` and ``read_chip(lat, lon, footprint_m, size_px)``.

Three sources ship: local rasters read with rasterio (GeoTIFF/COG in any CRS, or a plain image
given ``crs`` and ``bounds``), XYZ tile servers (network, cached and rate-limited), and the
COG assets of a STAC catalog or API (:mod:`urp_data.sources.imagery.stac_catalog`).
A chip is a square of ``footprint_m`` metres on the ground centred on the sample, resampled
to ``size_px`` x ``size_px`` RGB uint8 pixels.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from PIL import Image
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds as transform_from_bounds
from rasterio.warp import transform_geom
from rasterio.windows import Window

from urp_data.errors import InputError
from urp_data.sources.base import Chip, square_lonlat
from urp_data.util.fs import one_line

logger = logging.getLogger(__name__)

IN_MEMORY_MAX_VALUES = 400_000_000
"""Untiled rasters (JPEG, strip GeoTIFFs) up to this many values are decoded once into memory."""
STRIP_ROWS = 256
"""Rows decoded at a time when a raster is read into memory (no second full copy of the image)."""


class RasterImagery:
    """A local raster (GeoTIFF, COG, or any GDAL image) cut with windowed, resampled reads.

    ``bands`` are 1-based, in R, G, B order. ``rescale`` maps raw values to 0-255: a [low, high]
    pair, ``auto`` (2nd-98th percentile of valid pixels, per band: Landsat DNs are dark), or None.
    ``crs`` and ``bounds`` georeference an image that has no CRS (e.g. a global JPEG in
    plate carrée: ``crs: EPSG:4326, bounds: [-180, -90, 180, 90]``).
    """

    files: tuple[str, ...] = ()

    def __init__(self, path: str | Path, bands: list[int] | None = None, rescale: Any = "auto",
                 crs: str | None = None, bounds: list[float] | None = None, nodata: float | None = None,
                 name: str | None = None, licence: str = "", resampling: str = "bilinear") -> None:
        self.path = str(path)
        self.name = name or Path(path).name
        self.licence = licence
        self._resampling = Resampling[resampling]
        self._memfile: MemoryFile | None = None
        try:
            with warnings.catch_warnings():  # a plain image is fine when crs/bounds are given (checked below)
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(self.path)
        except RasterioError as exc:
            raise InputError(f"cannot open raster {self.path}: {one_line(exc)}; check that the file is a "
                             "complete GeoTIFF/COG") from exc
        if (crs is None) != (bounds is None):
            raise InputError(f"raster {self.path}: give both crs and bounds, or neither")
        if ds.crs is None and crs is None:
            raise InputError(f"raster {self.path} has no CRS; georeference it (gdal_edit.py -a_srs) or set "
                             "crs: and bounds: for it in the region config")
        self.bands = bands or ([1, 2, 3] if ds.count >= 3 else [1, 1, 1])
        if max(self.bands) > ds.count or min(self.bands) < 1:
            raise InputError(f"raster {self.path} has {ds.count} band(s); bands {self.bands} do not exist")
        self.nodata = nodata if nodata is not None else ds.nodata
        tiled = ds.profile.get("tiled", False)
        if crs is not None or (not tiled and ds.width * ds.height * ds.count <= IN_MEMORY_MAX_VALUES):
            ds = self._into_memory(ds, crs, bounds)
        self.ds = ds
        self._geographic = ds.crs.is_geographic
        self._unit = 1.0 if self._geographic else float(ds.crs.linear_units_factor[1])
        self._to_src = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
        self._to_wgs = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
        # Rasters with an internal mask pay for masked reads; those with nodata only for chips near
        # a nodata pixel (see _near_nodata).
        self._internal_mask = any(rasterio.enums.MaskFlags.per_dataset in f or rasterio.enums.MaskFlags.alpha in f
                                  for f in ds.mask_flag_enums)
        self._footprint = shapely.geometry.shape(
            transform_geom(ds.crs, "EPSG:4326", shapely.geometry.mapping(shapely.box(*ds.bounds)), precision=-1)
        ) if not self._geographic else shapely.box(*ds.bounds)
        self._scale = self._fit_rescale(rescale)
        self._lut: list[int] | None = None
        self._inverse = np.array(~ds.transform, np.float64).reshape(3, 3)

    def _into_memory(self, ds: Any, crs: str | None, bounds: list[float] | None) -> Any:
        """Decode an untiled raster once; per-chip reads of JPEG/strip files would decode it again and again.

        Into a tiled GeoTIFF in memory (``/vsimem``: boundless reads at the edges need a dataset
        GDAL can open by name, which a MEM dataset is not), strip by strip, so the process never
        holds a second full copy of the decoded image.
        """
        profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": ds.count,
                   "dtype": ds.dtypes[0], "crs": crs or ds.crs, "nodata": self.nodata, "tiled": True,
                   "blockxsize": 256, "blockysize": 256,
                   "transform": transform_from_bounds(*bounds, ds.width, ds.height) if bounds else ds.transform}
        self._memfile = MemoryFile()
        mem = self._memfile.open(**profile)
        try:
            for r0 in range(0, ds.height, STRIP_ROWS):
                strip = Window(0, r0, ds.width, min(STRIP_ROWS, ds.height - r0))
                mem.write(ds.read(window=strip), window=strip)
        except RasterioError as exc:
            raise InputError(f"raster {self.path} is corrupt or truncated: {one_line(exc)}") from exc
        finally:
            ds.close()
        return mem

    def _fit_rescale(self, rescale: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if rescale is None:
            return None
        if rescale == "auto":
            f = max(1, max(self.ds.width, self.ds.height) // 1024)
            try:
                sample = self.ds.read(self.bands, out_shape=(len(self.bands), max(1, self.ds.height // f),
                                                             max(1, self.ds.width // f)), masked=True)
            except RasterioError as exc:
                raise InputError(f"raster {self.path} is corrupt or truncated: {one_line(exc)}") from exc
            lo, hi = [], []
            for band in sample:
                valid = band.compressed()
                valid = valid[np.isfinite(valid)]
                if valid.size == 0:
                    raise InputError(f"raster {self.path} has no valid pixels in band(s) {self.bands}")
                a, b = np.percentile(valid, [2, 98])
                lo.append(a)
                hi.append(b if b > a else a + 1)
            return np.array(lo, np.float32)[:, None, None], np.array(hi, np.float32)[:, None, None]
        if isinstance(rescale, list | tuple) and len(rescale) == 2 and rescale[1] > rescale[0]:
            return np.full((3, 1, 1), rescale[0], np.float32), np.full((3, 1, 1), rescale[1], np.float32)
        raise InputError(f"raster {self.path}: rescale must be auto, null or [low, high], got {rescale!r}")

    def footprint(self) -> shapely.Geometry:
        return self._footprint

    def read_chip(self, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        x, y = self._to_src.transform(lon, lat)
        bounds = self._chip_bounds(lat, lon, x, y, footprint_m)
        ds = self.ds
        win = self._window(*bounds)
        inside = (win.col_off >= 0 and win.row_off >= 0 and win.col_off + win.width <= ds.width
                  and win.row_off + win.height <= ds.height)
        if not inside and not self._overlaps(win):
            return None
        masked = not inside or self._internal_mask or (self.nodata is not None and self._near_nodata(win))
        data = self._read_window(win, size_px, inside, masked, lat, lon)
        poly = self._chip_polygon(bounds, x, lon)
        if not masked and self._scale is not None and data.dtype == np.uint8:
            # The stretch as one table lookup per pixel, inside PIL: the same values as
            # _to_uint8 (the table is its float32 stretch of 0..255), without four float passes.
            rgb = Image.merge("RGB", [Image.fromarray(b) for b in data])
            return Chip(rgb.point(self._uint8_lookup()), 1.0, poly)  # one table per band, in one call
        bands = self._to_uint8(np.ma.getdata(data))
        valid = 1.0
        if masked:
            mask = np.ma.getmaskarray(data).any(axis=0)
            if not inside:  # boundless reads may not flag the outside as masked
                mask |= self._outside(win, size_px)
            bands[:, mask] = 0
            valid = float(1.0 - mask.mean())
        return Chip(Image.merge("RGB", [Image.fromarray(b) for b in bands]), valid, poly)  # HWC, no numpy copy loop

    def _chip_bounds(self, lat: float, lon: float, x: float, y: float,
                     footprint_m: float) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the chip centred on (lat, lon) degrees, whose source-CRS
        coordinates are (x, y), in the source CRS; a geographic source keeps the square's extent in
        degrees, shifted to ``x`` (a source whose longitudes run past 180)."""
        if self._geographic:
            left, bottom, right, top = square_lonlat(lat, lon, footprint_m)
            return left - lon + x, bottom, right - lon + x, top
        half = footprint_m / 2 / self._unit
        return x - half, y - half, x + half, y + half

    def _overlaps(self, win: Window) -> bool:
        """Whether ``win`` (partly outside the raster) covers any of its pixels."""
        try:
            overlap = win.intersection(Window(0, 0, self.ds.width, self.ds.height))
        except rasterio.errors.WindowError:
            return False
        return overlap.width * overlap.height > 0

    def _read_window(self, win: Window, size_px: int, inside: bool, masked: bool, lat: float, lon: float) -> Any:
        """The bands of ``win`` resampled to ``size_px`` square; masked (and boundless outside the raster)
        when ``masked``; (lat, lon) degrees name the chip in the error."""
        try:
            # A fill value makes rasterio read the mask (twice the time), so it is given only with one.
            return self.ds.read(self.bands, window=win, out_shape=(len(self.bands), size_px, size_px),
                                resampling=self._resampling, masked=masked, boundless=not inside,
                                fill_value=(self.nodata if self.nodata is not None else 0) if masked else None)
        except RasterioError as exc:
            raise InputError(f"raster {self.path} could not be read near lat={lat:.5f}, lon={lon:.5f}: "
                             f"{one_line(exc)}; the file may be truncated") from exc

    def _chip_polygon(self, bounds: tuple[float, float, float, float], x: float, lon: float) -> shapely.Polygon:
        """The chip's footprint in lon/lat degrees from its source-CRS ``bounds`` (left, bottom, right, top)."""
        left, bottom, right, top = bounds
        corners = [(left, bottom), (right, bottom), (right, top), (left, top)]
        if self._geographic:
            return shapely.Polygon([(cx - x + lon, cy) for cx, cy in corners])
        return shapely.Polygon([self._to_wgs.transform(cx, cy) for cx, cy in corners])

    def _outside(self, win: Window, size_px: int) -> np.ndarray:
        """The output pixels of a ``size_px`` read of ``win`` whose centres fall outside the raster."""
        rows, cols = np.mgrid[0:size_px, 0:size_px]
        c = win.col_off + (cols + 0.5) * win.width / size_px
        r = win.row_off + (rows + 0.5) * win.height / size_px
        return (c < 0) | (r < 0) | (c >= self.ds.width) | (r >= self.ds.height)

    def _near_nodata(self, win: Window) -> bool:
        """Whether any source pixel the resampled read of ``win`` can touch is nodata.

        The chip's pixel values do not depend on whether the mask is read (GDAL resamples the same
        pixels either way), and where no nodata pixel lies within two pixels of the window the mask
        is all valid, so there is nothing to fill either. Such chips skip the mask and the fill,
        which doubled the cost of a read (Landsat scenes of the demo: 4.3 ms -> 2.0 ms).
        """
        ds = self.ds
        c0, r0 = max(math.floor(win.col_off) - 2, 0), max(math.floor(win.row_off) - 2, 0)
        c1 = min(math.ceil(win.col_off + win.width) + 2, ds.width)
        r1 = min(math.ceil(win.row_off + win.height) + 2, ds.height)
        src = ds.read(self.bands, window=Window(c0, r0, c1 - c0, r1 - r0))
        nodata = self.nodata
        return bool(np.isnan(src).any() if isinstance(nodata, float) and math.isnan(nodata) else (src == nodata).any())

    def _uint8_lookup(self) -> list[int]:
        """The 768-entry table (256 per band, R, G, B) of :meth:`_to_uint8` for 8-bit input (computed once)."""
        if self._lut is None:
            values = np.broadcast_to(np.arange(256, dtype=np.uint8), (len(self.bands), 1, 256))
            self._lut = self._to_uint8(values)[:, 0].ravel().tolist()
        return self._lut

    def _window(self, left: float, bottom: float, right: float, top: float) -> Window:
        """``rasterio.windows.from_bounds`` for this raster without its per-call set-up (~0.1 ms a chip).

        The same arithmetic, so the same floats and the same chips: the corners go through the
        inverse transform as one numpy dot of a 3x3 and a 3x4 matrix, as rasterio's
        ``AffineTransformer`` does.
        """
        corners = np.array([[left, right, right, left], [top, top, bottom, bottom], [1.0, 1.0, 1.0, 1.0]])
        cols, rows, _ = self._inverse.dot(corners)
        c0, r0 = float(cols.min()), float(rows.min())
        return Window(c0, r0, max(float(cols.max()) - c0, 0.0), max(float(rows.max()) - r0, 0.0))

    def _to_uint8(self, data: np.ndarray) -> np.ndarray:
        if self._scale is None:
            return data if data.dtype == np.uint8 else np.clip(data, 0, 255).astype(np.uint8)
        lo, hi = self._scale
        out = data.astype(np.float32)
        out -= lo
        out *= 255.0 / (hi - lo)
        return np.clip(out, 0, 255, out=out).astype(np.uint8)
