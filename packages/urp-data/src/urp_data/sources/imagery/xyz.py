"""XYZ (slippy-map) tile imagery: chips stitched from web-mercator tiles fetched over HTTP."""

from __future__ import annotations

import io
import math
from collections import Counter
from urllib.parse import urlsplit

import numpy as np
import shapely
from PIL import Image

from urp_data.errors import InputError
from urp_data.net import hosts, http
from urp_data.net.budget import RequestBudget
from urp_data.sources.base import Chip, NetworkSource, square_lonlat

TILE_TYPES = ("image/", "application/octet-stream")
"""Content types accepted for a tile (an HTML error page is not one, whatever its status)."""


def _decode_image(content: bytes) -> Image.Image:
    """The fully decoded image (a truncated PNG/JPEG fails here, so it is never cached)."""
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


TILE_BYTES = 20_000
"""Rough size of one 256 px JPEG/PNG web-map tile, for request budgets."""


DEFAULT_MAX_IN_FLIGHT = 4
"""Chips an XYZ source reads at once (``max_in_flight``), each one tile request at a time: enough to
keep a host paced at ``min_interval_s`` = 0.1 s busy for round trips up to 0.4 s; the pacing, not
this number, bounds the request rate."""


class XYZImagery(NetworkSource):
    """Web-map tiles (``https://host/{z}/{x}/{y}.png``): fetched through ``urp_data.net.http``.

    Requests are cached on disk, rate-limited and carry a User-Agent, as tile usage policies
    require. Tiles are Web Mercator (EPSG:3857); the chip is the mosaic of tiles covering the
    footprint at ``zoom``, cropped and resampled with PIL. A ``{s}`` in the URL is replaced by
    one of ``subdomains`` chosen from the tile, as Leaflet does (``(x + y) mod n``): the same
    tile always comes from the same host, so its cache key is stable, and each real host is
    paced on its own. Up to ``max_in_flight`` chips are read at once by the build's threads
    (:func:`urp_data.build.chunks.read_chips`); a tile two of them need is fetched once.
    """

    files: tuple[str, ...] = ()

    def __init__(self, url: str, zoom: int = 16, tile_size: int = 256, name: str | None = None,
                 licence: str = "", bounds: list[float] | None = None, min_interval_s: float = 0.1,
                 subdomains: list[str] | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if not all(k in url for k in ("{z}", "{x}", "{y}")):
            raise InputError(f"xyz url must contain {{z}}, {{x}} and {{y}}: {http.redact(url)}")
        if subdomains is not None and ("{s}" not in url or not subdomains):
            raise InputError(f"xyz url {http.redact(url)}: subdomains need a {{s}} in the url and at least one entry")
        self.subdomains = [str(s) for s in subdomains or ["a", "b", "c"]] if "{s}" in url else []
        for s in self.subdomains or [""]:  # a bad scheme or host fails here, before the build starts
            http.canonical_url(url.format(z=0, x=0, y=0, s=s))
            hosts.refuse_refused(url.format(z=0, x=0, y=0, s=s), f"xyz source {http.redact(url)}")
        self.url, self.zoom, self.tile_size = url, zoom, tile_size
        self.path = http.redact(url)  # the manifest shows no API key
        self.name = name or self.path
        self.licence = licence
        self.min_interval_s = min_interval_s
        if max_in_flight < 1:
            raise InputError(f"xyz source {self.path}: max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._bounds = bounds or [-180.0, -85.05, 180.0, 85.05]

    def footprint(self) -> shapely.Geometry:
        return shapely.box(*self._bounds)

    def tile_url(self, x: int, y: int) -> str:
        """The URL of tile (x, y) at this zoom, its subdomain fixed by (x + y)."""
        sub = self.subdomains[(x + y) % len(self.subdomains)] if self.subdomains else ""
        return self.url.format(z=self.zoom, x=x, y=y, s=sub)

    def _pixel(self, lat: float, lon: float) -> tuple[float, float]:
        """Global pixel (x, y) of (lat, lon) at this zoom (Web Mercator)."""
        n = self.tile_size * 2**self.zoom
        s = math.sin(math.radians(max(min(lat, 85.05112878), -85.05112878)))
        return (lon + 180.0) / 360.0 * n, (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n

    def _tiles(self, lat: float, lon: float, footprint_m: float) -> tuple[tuple[float, float, float, float],
                                                                          tuple[int, int, int, int]]:
        """The chip's global pixel box (x0, y0, x1, y1) and its tile range (tx0, ty0, tx1, ty1), inclusive."""
        left, bottom, right, top = square_lonlat(lat, lon, footprint_m)
        x0, y0 = self._pixel(top, left)
        x1, y1 = self._pixel(bottom, right)
        ts = self.tile_size
        return (x0, y0, x1, y1), (int(x0 // ts), int(y0 // ts), int(x1 // ts), int(y1 // ts))

    def read_chip(self, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        if not shapely.contains_xy(self.footprint(), lon, lat):
            return None
        (x0, y0, x1, y1), (tx0, ty0, tx1, ty1) = self._tiles(lat, lon, footprint_m)
        ts = self.tile_size
        mosaic = Image.new("RGB", ((tx1 - tx0 + 1) * ts, (ty1 - ty0 + 1) * ts))
        for tx in range(tx0, tx1 + 1):
            for ty in range(ty0, ty1 + 1):
                content = http.get(self.tile_url(tx % 2**self.zoom, ty), min_interval_s=self.min_interval_s,
                                   content_types=TILE_TYPES, check=_decode_image)
                tile = _decode_image(content).convert("RGB")
                mosaic.paste(tile.resize((ts, ts)), ((tx - tx0) * ts, (ty - ty0) * ts))
        crop = (x0 - tx0 * ts, y0 - ty0 * ts, x1 - tx0 * ts, y1 - ty0 * ts)
        chip = mosaic.resize((size_px, size_px), Image.Resampling.BILINEAR, box=crop)  # handed over as an image
        return Chip(chip, 1.0, shapely.box(*square_lonlat(lat, lon, footprint_m)))

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float,
                       size_px: int) -> list[RequestBudget]:
        """Tiles the chips at (lat, lon) degrees need at this zoom, per real host (no tile shared)."""
        per_host: Counter[str] = Counter()
        for la, lo in zip(lat, lon, strict=True):
            _, (tx0, ty0, tx1, ty1) = self._tiles(float(la), float(lo), footprint_m)
            for tx in range(tx0, tx1 + 1):
                for ty in range(ty0, ty1 + 1):
                    per_host[urlsplit(self.tile_url(tx % 2**self.zoom, ty)).netloc.lower()] += 1
        return [RequestBudget(f"imagery xyz z{self.zoom}", host, n, n * TILE_BYTES, self.min_interval_s)
                for host, n in sorted(per_host.items())]
