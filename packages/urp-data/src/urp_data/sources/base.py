"""What every source shares: the chip an imagery source returns, the batch of cells an indicator
is asked about, and the protocols a source satisfies."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import shapely
from PIL import Image

from urp_data.util.geodesy import M_PER_DEG_LAT, M_PER_DEG_LON_EQUATOR


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

    def __post_init__(self) -> None:
        if isinstance(self.image, np.ndarray):
            self.image = Image.fromarray(self.image)

    @property
    def rgb(self) -> np.ndarray:
        """The pixels as an (H, W, 3) uint8 array."""
        return np.asarray(self.image)


class ImagerySource(Protocol):
    name: str
    path: str

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
