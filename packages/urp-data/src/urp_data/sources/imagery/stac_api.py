"""Imagery from a STAC API (``/search``): the best item per chip, its COG asset read by ranges."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.errors import RasterioError

from urp_data.config.sources import StacApiConfig
from urp_data.errors import InputError, SampleSkipped
from urp_data.net import http
from urp_data.net.budget import RequestBudget
from urp_data.sources.base import Chip, NetworkSource, square_lonlat
from urp_data.sources.imagery.raster import RasterImagery
from urp_data.sources.imagery.stac_catalog import (
    ITEM_JSON_BYTES,
    JSON_TYPES,
    OPEN_COGS,
    check_stac_json,
    cog_reads,
    remote_href,
    scene_of,
    stac_reader,
    stac_refusal,
)
from urp_data.util.fs import atomic_write_bytes, cache_dir, one_line

logger = logging.getLogger(__name__)
# GDAL's /vsicurl/ says "HTTP response code: 403"; matched as a whole, since a bare "403" also
# turns up in a URL (a loopback port such as 40311 did, and made a missing scene stop the build)
_FORBIDDEN = re.compile(r"HTTP response code: 403\b")


def _chip_cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir("chips") / digest[:2] / digest


class StacApiImagery(NetworkSource):
    """The least-cloudy item of a STAC API that holds the whole chip, read from its COG by range requests.

    Per chip: one ``GET /search`` on the chip's lon/lat box (``collections``, ``datetime``,
    ``eo:cloud_cover <= max_cloud_cover`` through the Query extension, or a CQL2 ``filter`` where
    only that is offered: as cql2-json, the one language stac-server parses, in a ``POST /search``
    where the landing page has a POST ``search`` link, else as a JSON string in the GET query;
    sorted by cloud cover where the Sort extension is offered, then the first item that holds the
    chip is the answer), pages followed through ``next`` links (GET or POST) up to ``max_items``
    items. Items of other collections, or whose footprint (their valid-data outline) does not
    contain the whole chip, are passed over, so a chip never straddles a scene edge. Ties keep the server's
    order. The chosen COG is read by GDAL (``/vsicurl/``, :func:`urp_data.net.http.gdal_options`)
    after one politeness slot of its host.

    Stretch: none by default. Sentinel-2's ``visual`` asset is ESA's true-colour image (TCI):
    B04, B03, B02 with reflectance 0-0.2 coded linearly as 1-255 and 0 as no data, already
    what a chip shows; its no-data pixels lower the chip's valid fraction. Set ``rescale`` for
    other assets.

    Chips are cached under ``URP_CACHE_DIR/chips`` (keyed on the COG's URL, the chip and the
    GDAL version), so a second build reads no COG again; its searches come from the HTTP cache.
    """

    files: tuple[str, ...] = ()

    def __init__(self, cfg: StacApiConfig) -> None:
        self.cfg = cfg
        self.path = http.redact(cfg.api) + " " + ",".join(cfg.collections)
        self.name = cfg.name or self.path
        self._host = http.canonical_url(cfg.api).split("/")[2]
        self._client: Any = None
        self._licence_text: str | None = None
        self._cogs: OrderedDict[str, RasterImagery] = OrderedDict()

    def connect(self) -> None:
        """Open the API: its landing page, conformance classes and licence (once).

        Not done on construction, so that ``--dry-run`` sends nothing; a build calls it in its own
        process before any chunk (:func:`urp_data.build.sources.before_network`), so an API that cannot
        be used fails there, in one line, and searches run on the first chip otherwise.
        """
        if self._client is not None:
            return
        import pystac_client
        from pystac_client.conformance import ConformanceClasses

        cfg = self.cfg
        try:
            client = pystac_client.Client.open(cfg.api, stac_io=stac_reader(cfg.api, cfg.min_interval_s, post=True))
            if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
                raise InputError(f"{http.redact(cfg.api)} does not offer STAC item search; use catalog: for a "
                                 "static catalog")
            self._query = client.conforms_to(ConformanceClasses.QUERY)
            self._filter = not self._query and client.conforms_to(ConformanceClasses.FILTER)
            self._sorted = client.conforms_to(ConformanceClasses.SORT)
            self._post = any(link.rel == "search" and str(link.extra_fields.get("method", "")).upper() == "POST"
                             for link in client.links)
            self._licence_text = self._licence()
        except Exception as exc:  # pystac-client raises many types for an unreadable API
            raise stac_refusal(exc) or InputError(http.redact(f"cannot open STAC API {cfg.api}: {one_line(exc)}")) from exc
        self._client = client

    @property
    def licence(self) -> str:
        """The configured licence, else the collections' (read from the API on first use)."""
        self.connect()
        return self._licence_text or ""

    def _licence(self) -> str:
        """The configured licence, else each collection's ``license`` and licence link; plus the attribution."""
        text = self.cfg.licence
        if not text:
            parts = []
            for cid in self.cfg.collections:
                url = f"{self.cfg.api.rstrip('/')}/collections/{cid}"  # OGC API Features' collection path
                try:
                    col = json.loads(http.get(url, min_interval_s=self.cfg.min_interval_s, content_types=JSON_TYPES,
                                              check=check_stac_json))
                except InputError as exc:
                    raise InputError(f"cannot read the licence of collection {cid}: {exc}; set licence: on this "
                                     "source") from exc
                links = [link.get("href") for link in col.get("links", []) if link.get("rel") == "license"]
                parts.append(f"{cid}: {col.get('license', 'no licence stated')}"
                             + (f" ({', '.join(links)})" if links else ""))
            text = "; ".join(parts)
        return f"{text}; attribution: {self.cfg.attribution}" if self.cfg.attribution else text

    def footprint(self) -> shapely.Geometry:
        return shapely.box(*(self.cfg.bbox or [-180.0, -90.0, 180.0, 90.0]))

    def _search_params(self, box: tuple[float, float, float, float]) -> dict[str, Any]:
        c = self.cfg
        params: dict[str, Any] = {"method": "GET", "collections": c.collections, "bbox": [round(v, 7) for v in box],
                                  "datetime": c.datetime, "limit": min(c.limit, c.max_items), "max_items": c.max_items}
        if c.max_cloud_cover is not None and self._query:
            params["query"] = {"eo:cloud_cover": {"lte": c.max_cloud_cover}}
        elif c.max_cloud_cover is not None and self._filter:
            # cql2-json: stac-server (Earth Search) parses no cql2-text; POSTed as JSON where the API takes
            # POST searches, else a JSON string in the GET query
            params.update(filter={"op": "<=", "args": [{"property": "eo:cloud_cover"}, c.max_cloud_cover]},
                          filter_lang="cql2-json", method="POST" if self._post else "GET")
        if self._sorted:
            params["sortby"] = "+properties.eo:cloud_cover"
        return params

    def candidates(self, box: tuple[float, float, float, float]) -> Iterator[Any]:
        """The items with the asset whose footprint holds ``box`` (lon/lat), least cloudy first.

        Lazily: where the API sorts by cloud cover, a later page is fetched only when every item
        before it was passed over or unreadable; otherwise every page is read and sorted here.
        """
        self.connect()
        c, chip = self.cfg, shapely.box(*box)
        found: list[tuple[float, int, Any]] = []
        for item in self._client.search(**self._search_params(box)).items():
            cloud = item.properties.get("eo:cloud_cover")
            if c.asset not in item.assets or item.geometry is None:
                continue
            if item.collection_id is not None and item.collection_id not in c.collections:
                continue  # the server's collections are checked again, as its filter is
            if c.max_cloud_cover is not None and (cloud is None or cloud > c.max_cloud_cover):
                continue  # the server's filter is checked again: not every API offers one
            if not shapely.geometry.shape(item.geometry).contains(chip):
                continue
            if c.months is not None and (item.datetime is None or item.datetime.month not in c.months):
                continue
            if self._sorted:
                yield item
            else:  # ties keep the server's order
                found.append((math.inf if cloud is None else float(cloud), len(found), item))
        yield from (item for _, _, item in sorted(found, key=lambda f: f[:2]))

    def best_item(self, box: tuple[float, float, float, float]) -> Any | None:
        """The least-cloudy item with the asset whose footprint holds ``box`` (lon/lat), or None."""
        return next(self.candidates(box), None)

    def read_chip(self, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        """The chip from the least-cloudy item holding it whose asset reads; the next-best item when
        one does not (Earth Search has items whose assets are missing). None where no item holds
        the chip; :class:`SampleSkipped` when items hold it but none reads; a 403 stops the build."""
        if not shapely.contains_xy(self.footprint(), lon, lat):
            return None
        box = square_lonlat(lat, lon, footprint_m)
        failed: list[str] = []
        try:
            for item in self.candidates(box):
                href = remote_href(str(item.assets[self.cfg.asset].get_absolute_href()), self.cfg.api)
                try:
                    chip = self._read(href, lat, lon, footprint_m, size_px)
                    if chip is not None:
                        chip.scene = scene_of(item)
                    return chip
                except InputError as exc:
                    if _FORBIDDEN.search(str(exc)):
                        raise InputError(f"{http.redact(href)} answered HTTP 403: the asset host blocks us; "
                                         f"stopping ({one_line(exc)})") from exc
                    logger.warning("scene %s unreadable (%s); trying the next-best item", item.id, one_line(exc))
                    failed.append(item.id)
        except (InputError, SampleSkipped):
            raise
        except Exception as exc:  # pystac-client: a page that is JSON but not an item collection
            raise stac_refusal(exc) or InputError(http.redact(f"STAC API {self.cfg.api} sent an unusable search page: {one_line(exc)}")) from exc
        if failed:
            raise SampleSkipped("unreadable scene", f"no readable {self.cfg.asset} asset among {len(failed)} "
                                f"item(s) holding the chip ({', '.join(failed[:3])})")
        return None

    def _read(self, href: str, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        """The chip from the COG at ``href``, from the chip cache when there."""
        key = {"href": href, "lat": lat, "lon": lon, "footprint_m": footprint_m, "size_px": size_px,
               "bands": self.cfg.bands, "rescale": self.cfg.rescale, "gdal": rasterio.__gdal_version__}
        path = _chip_cache_path(key)
        if path.is_file():
            with np.load(path) as z:
                return Chip(z["rgb"], float(z["valid"]), shapely.from_wkb(z["footprint"].tobytes()))
        http.wait_turn(href, self.cfg.min_interval_s)
        with rasterio.Env(**http.gdal_options()):
            try:
                chip = self._cog(href).read_chip(lat, lon, footprint_m, size_px)
            except RasterioError as exc:
                raise InputError(f"cannot read {http.redact(href)}: {one_line(exc)}") from exc
        if chip is not None:
            buf = io.BytesIO()
            np.savez(buf, rgb=chip.rgb, valid=chip.valid_fraction,
                     footprint=np.frombuffer(shapely.to_wkb(chip.footprint), np.uint8))
            atomic_write_bytes(path, buf.getvalue())
        return chip

    def _cog(self, href: str) -> RasterImagery:
        """The opened COG at ``href`` (the last ``OPEN_COGS`` stay open)."""
        if href in self._cogs:
            self._cogs.move_to_end(href)
            return self._cogs[href]
        cog = RasterImagery(href, bands=self.cfg.bands, rescale=self.cfg.rescale, licence=self.licence)
        self._cogs[href] = cog
        if len(self._cogs) > OPEN_COGS:
            self._cogs.popitem(last=False)
        return cog

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float,
                       size_px: int) -> list[RequestBudget]:
        """Search pages and COG reads for chips at (lat, lon) degrees, from geometry alone.

        Per chip: one search page when the API sorts by cloud cover (the first item that holds
        the chip ends the search), else every page up to ``max_items``; then :func:`cog_reads`
        with ``gsd_m`` and ``block_px``. The COG host is not known before a search, so its line
        names the API the hrefs come from. Before the API is opened (a dry run sends nothing),
        one page a chip is counted, as for an API that sorts (Earth Search does).
        """
        c, n = self.cfg, len(lat)
        sorted_search = self._client is None or self._sorted
        pages = 1 if sorted_search else math.ceil(c.max_items / min(c.limit, c.max_items))
        reads, nbytes = cog_reads(n, footprint_m, size_px, c.gsd_m, c.block_px)
        source = f"imagery {','.join(c.collections)}"
        return [RequestBudget(f"{source} search", self._host, n * pages, n * pages * c.limit * ITEM_JSON_BYTES,
                              c.min_interval_s),
                RequestBudget(f"{source} COG reads", f"assets of {self._host}", reads, nbytes, c.min_interval_s)]
