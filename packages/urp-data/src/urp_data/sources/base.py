"""What every source shares: the protocols a source satisfies, the chip an imagery source returns and
the batch of cells an indicator is asked about.

A source declares what it is by subclassing the protocols it satisfies (``class XYZImagery(ImagerySource,
NetworkSource)``), so the type checker checks it and the build asks ``isinstance`` rather than
probing for attributes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import shapely
from PIL import Image

from urp_data.contract import IndicatorInfo, indicator_spec
from urp_data.util.geodesy import M_PER_DEG_LAT, M_PER_DEG_LON_EQUATOR

if TYPE_CHECKING:
    from urp_data.net.budget import RequestBudget


@dataclass(frozen=True)
class Scene:
    """The satellite scene a chip was cut from: STAC item id, acquisition time (RFC 3339, as the item
    states it) and cloud cover (percent of the scene, None when the item gives none)."""

    id: str
    datetime: str | None
    cloud_cover: float | None


@dataclass
class Chip:
    """One cut chip: its RGB image, the fraction of valid pixels, and its lon/lat footprint.

    Sources may pass an (H, W, 3) uint8 array instead of an image. Those that assemble the chip in
    PIL hand the image over as it is: turning it into an array only for the encoder to turn it
    back cost ~10 % of a chip.
    """

    image: Image.Image | np.ndarray
    valid_fraction: float
    footprint: shapely.Geometry
    scene: Scene | None = None  # set by sources that cut chips from catalogued scenes (STAC)

    def __post_init__(self) -> None:
        if isinstance(self.image, np.ndarray):
            self.image = Image.fromarray(self.image)

    @property
    def rgb(self) -> np.ndarray:
        """The pixels as an (H, W, 3) uint8 array."""
        return np.asarray(self.image)


class ImagerySource(Protocol):
    """Where chips come from: a local raster, XYZ tiles, a STAC catalog or API."""

    name: str
    path: str  # what the manifest records as the input (a file, or a redacted URL)

    @property
    def files(self) -> Sequence[str]:
        """Other files read with ``path`` (a local catalog's items and assets), checksummed too."""
        ...

    @property
    def licence(self) -> str:
        """What the manifest records (a STAC API reads it from the API on first use)."""
        ...

    def footprint(self) -> shapely.Geometry:
        """Area covered, as a lon/lat (EPSG:4326) polygon."""
        ...

    def read_chip(self, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        """The chip centred on (lat, lon) degrees, or None where the source does not cover it."""
        ...


@runtime_checkable
class NetworkSource(Protocol):
    """A source that may send requests: it says what a build would send, connects before the first
    chunk, and keeps at most ``max_in_flight`` reads in flight."""

    max_in_flight: int = 1
    """Reads the build may run at once through this source (1: one at a time; a GDAL handle is not
    thread-safe). Requests to a host are paced whatever this is (:mod:`urp_data.net.http`)."""

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float,
                       size_px: int) -> list[RequestBudget]:
        """The requests a build of samples centred on (lat, lon) degrees would send, from geometry
        alone (nothing is sent; the cache is ignored); empty when the source reads local files."""
        ...

    def connect(self) -> None:
        """Check the service before the first chunk (a STAC API's landing page and licence), so that a
        bad one fails before anything is fetched or written; by default there is nothing to check."""
        return


@runtime_checkable
class IndicatorSource(Protocol):
    """What fills an indicator column: a value per cell of a batch (NaN where it has none)."""

    name: str  # the column it fills
    info: IndicatorInfo  # what the manifest records; its scale is fitted by the build
    path: str | None  # the input the manifest checksums, or None when the values come from no file
    sha256: str | None = None  # the checksum of a downloaded input (the manifest records it)
    sha256_note: str | None = None  # why ``sha256`` was not checked against the config (e.g. "first seen: ...")

    def values(self, batch: CellBatch) -> np.ndarray:
        """float64 values, one per cell of ``batch``, NaN for no data (written as null, never 0)."""
        ...


def indicator_info(spec: dict[str, Any], source: str, resolution: str, licence: str, *, method: str,
                   resolution_km: float | None = None, radius_km: float | None = None,
                   derived_from_prompt: bool = False) -> IndicatorInfo:
    """An indicator source's manifest entry; ``resolution_km`` and ``derived_from_prompt`` in the region file override the measured ones."""
    s = indicator_spec(spec["name"], spec.get("description"), spec.get("unit"))
    km = spec.get("resolution_km", resolution_km)
    return IndicatorInfo(name=s.name, description=s.description, unit=s.unit, source=source,
                         resolution=spec.get("resolution", resolution), licence=spec.get("licence", licence),
                         resolution_km=None if km is None else round(float(km), 3), radius_km=radius_km,
                         derived_from_prompt=bool(spec.get("derived_from_prompt", derived_from_prompt)), method=method)


def encode_image(rgb: np.ndarray | Image.Image, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 array or an RGB image; JPEG by default since PNG costs 10-30x more time."""
    buf = io.BytesIO()
    image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    if fmt == "jpeg":
        image.save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def square_lonlat(lat: float, lon: float, footprint_m: float) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in degrees of a square of footprint_m metres around (lat, lon)."""
    half_lat = footprint_m / 2 / M_PER_DEG_LAT
    half_lon = footprint_m / 2 / (M_PER_DEG_LON_EQUATOR * max(math.cos(math.radians(lat)), 1e-6))
    return lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat


@dataclass
class CellBatch:
    """The samples of one chunk: centres (lat/lon degrees) and chip footprints (lon/lat polygons)."""

    lat: np.ndarray
    lon: np.ndarray
    footprints: np.ndarray  # shapely polygons, EPSG:4326
    country: list[str | None]  # ISO 3166-1 alpha-3


def footprint_array(polys: list[shapely.Geometry]) -> np.ndarray:
    """Shapely polygons as an object array (what CellBatch holds)."""
    arr = np.empty(len(polys), dtype=object)
    arr[:] = polys
    return arr
