"""STAC imagery: the COG assets of a static catalog, and a STAC API searched chip by chip.

Two region-config forms of ``type: stac``:

- ``catalog:`` a static catalog (path or URL) or an API searched once over ``bbox``: every item
  becomes a :class:`~urp_data.imagery.RasterImagery` (:class:`StacImagery`);
- ``api:`` a STAC API searched for each chip (:class:`StacApiImagery`), e.g. Sentinel-2 L2A from
  Earth Search: the least-cloudy item whose footprint holds the whole chip, read from its COG
  with HTTP range requests by GDAL (``/vsicurl/``). Made for regions far larger than one scene.

Every JSON document goes through :func:`urp_data.http.get` (paced, retried, checked as JSON
before it is cached), searches included: they are sent as GET (the STAC API spec requires
``GET /search``; POST is optional), so a search page is cached like any other response.

A remote catalog (any document fetched over http(s)) may only point at http(s) hrefs: a link or
an asset href to ``file://`` or a cloud URL (``s3://``, ``gs://``, ``az://``, ``abfs://`` ...)
is refused with one line, because a remote document must not make us read local files or use
the credentials of this machine (a bare path resolves against the document's URL, so it stays
on that server). A local catalog may point anywhere, as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
import shapely

from urp_data import http
from urp_data.budget import RequestBudget
from urp_data.errors import InputError
from urp_data.fsutil import atomic_write_bytes, cache_dir, one_line
from urp_data.imagery import Chip, RasterImagery, square_lonlat

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/geo+json", "text/plain")
"""Content types accepted for a STAC document (static catalogs on object stores are often text/plain)."""
ITEM_JSON_BYTES = 16_000
"""Rough size of one Sentinel-2 item in a search page (its ~20 assets), for request budgets."""
COG_HEADER_BYTES = 16_384
"""GDAL's first read of a COG (the header and tile index), for request budgets."""
COG_COMPRESSION = 0.5
"""Assumed compressed/raw size of a COG tile (DEFLATE on 8-bit imagery), for request budgets."""
OPEN_COGS = 8
"""COGs kept open per process: neighbouring chips (rows are in H3 order) share a scene."""


def cog_reads(n: int, footprint_m: float, size_px: int, gsd_m: float, block_px: int) -> tuple[int, int]:
    """(requests, bytes) GDAL sends for ``n`` chips from COGs of ``gsd_m`` metres and ``block_px`` tiles.

    Per chip: the COG's opening (a HEAD and the header's GET, counted for every chip: which
    chips share a scene is not known from geometry) and one range read per tile under the chip
    at the overview GDAL reads for ``size_px`` (the coarsest still at least as fine as the chip);
    a window of ``w`` px on tiles of ``b`` px meets ``1 + w / b`` tiles a side on average.
    """
    px = footprint_m / gsd_m
    while px >= 2 * size_px:
        px /= 2
    tiles = (1 + px / block_px) ** 2
    return 2 * n + math.ceil(n * tiles), int(n * (COG_HEADER_BYTES + tiles * block_px**2 * 3 * COG_COMPRESSION))


def _scheme(href: str) -> str:
    return href.split("://", 1)[0].lower() if "://" in href else ""


def remote_href(href: str, catalog: str) -> str:
    """``href`` if a remote catalog may point at it (http or https), else a one-line InputError."""
    if _scheme(href) not in ("http", "https"):
        raise InputError(http.redact(
            f"remote STAC catalog {catalog} points at {href}; only http(s) hrefs are followed from a remote "
            "catalog (a remote document may not make us read local files or use cloud credentials)"))
    return href


def _stac_json(body: bytes) -> None:
    """Raise unless ``body`` is a JSON object that is not an API error (``{"code", "description"}``).

    An error sent with status 200 (a proxy, a gateway) must not be cached as a document.
    """
    doc = json.loads(body)
    if not isinstance(doc, dict) or ("code" in doc and "description" in doc and "type" not in doc):
        raise ValueError(f"not a STAC document: {str(doc)[:120]}")


def _search_page(body: bytes) -> None:
    """:func:`_stac_json`, and an item collection: a cached page without ``features`` would hide items for good."""
    _stac_json(body)
    doc = json.loads(body)
    if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise ValueError("a search page must be a FeatureCollection with a features list")


def _refusal(exc: BaseException) -> InputError | None:
    """The InputError (a refused href, a failed fetch) behind ``exc``, which pystac may have wrapped."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, InputError):
        seen = seen.__cause__ or seen.__context__
    return seen


def _reader(catalog: str, min_interval_s: float = http.STAC_MIN_INTERVAL_S) -> Any:
    """A pystac-client ``StacApiIO`` whose every read goes through :func:`urp_data.http.get`.

    One reader serves static catalogs (pystac) and APIs (pystac-client): JSON is fetched with
    GET, paced at ``min_interval_s`` per host, retried and cached only once it parses; a catalog
    read over http(s) may not lead to a local file or a cloud URL. Built on first use: pystac takes a quarter of a second
    to import.
    """
    import pystac
    import pystac.stac_io
    from pystac_client.stac_api_io import StacApiIO

    remote = _scheme(catalog) in ("http", "https")

    class Reader(StacApiIO):
        def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
            method, params = kwargs.get("method") or "GET", kwargs.get("parameters")
            if isinstance(source, pystac.Link):
                link = source.to_dict()
                href, method, params = link["href"], link.get("method", "GET"), None  # a GET link holds its query
            else:
                href = str(source)
            if str(method).upper() != "GET":
                raise InputError(http.redact(f"STAC API {catalog} asks for a {method} request to {href}; urp "
                                             "searches with GET only (GET /search is required by the STAC API spec)"))
            if _scheme(href) in ("http", "https"):
                search = urlsplit(href).path.rstrip("/").endswith("/search")
                body = http.get(href, min_interval_s=min_interval_s, params=params, content_types=JSON_TYPES,
                                check=_search_page if search else _stac_json)
                return body.decode()
            if remote:
                remote_href(href, catalog)
            return str(pystac.stac_io.DefaultStacIO.read_text_from_href(self, href))  # a local catalog, as before

        def read_text_from_href(self, href: str) -> str:
            return self.read_text(href)

    return Reader()


class StacImagery:
    """Rasters listed in a STAC catalog: a static catalog (path or URL) or a STAC API (searched).

    Every item intersecting ``bbox`` (lon/lat) contributes its ``asset`` (a COG, read remotely
    by GDAL when its href is a URL) as a ``RasterImagery``; a chip comes from the first item
    whose footprint covers it, in catalog order (sort the search, e.g. by cloud cover, upstream).
    """

    def __init__(self, catalog: str, asset: str = "visual", bbox: list[float] | None = None,
                 collections: list[str] | None = None, datetime: str | None = None, max_items: int = 50,
                 bands: list[int] | None = None, rescale: Any = "auto", licence: str = "", name: str | None = None) -> None:
        import pystac
        import pystac_client

        self.path = http.redact(catalog)  # the manifest shows no token
        self.name = name or self.path
        self.licence = licence
        remote = _scheme(catalog) in ("http", "https")
        try:
            items: list[Any]
            reader = _reader(catalog)
            kind: Any = {"Catalog": pystac.Catalog, "Collection": pystac.Collection}.get(
                reader.read_json(catalog).get("type"), pystac.Item)
            root = kind.from_file(catalog, stac_io=reader)  # children are read with the same reader
            if isinstance(root, pystac.Catalog) and any(link.rel == "search" for link in root.links):
                search = pystac_client.Client.open(catalog, stac_io=reader).search(
                    method="GET", bbox=bbox, collections=collections, datetime=datetime, max_items=max_items)
                items = list(search.items())
            elif isinstance(root, pystac.Catalog):
                items = [i for i in root.get_items(recursive=True)
                         if bbox is None or shapely.intersects(shapely.box(*bbox), shapely.geometry.shape(i.geometry))]
            else:
                items = [root]
        except Exception as exc:  # pystac and pystac-client raise many types for unreadable catalogs
            raise _refusal(exc) or InputError(http.redact(f"cannot read STAC catalog {catalog}: {one_line(exc)}")) from exc
        items = [i for i in items if asset in i.assets][:max_items]
        if not items:
            raise InputError(f"STAC catalog {self.path} has no item with asset {asset!r} in bbox {bbox}")
        # An item read over http(s) (from a remote catalog, or a remote part of a local one) may
        # only point at http(s) assets.
        hrefs = [str(i.assets[asset].get_absolute_href()) for i in items]
        hrefs = [remote_href(h, i.get_self_href() or catalog)
                 if remote or _scheme(i.get_self_href() or "") in ("http", "https") else h
                 for i, h in zip(items, hrefs, strict=True)]
        with rasterio.Env(**http.gdal_options()):  # remote COGs: GDAL's own HTTP reads
            self.sources = [RasterImagery(h, bands=bands, rescale=rescale, name=i.id, licence=licence)
                            for i, h in zip(items, hrefs, strict=True)]
        # Every local file the build reads (item JSONs, assets): the resume key checksums each.
        self.files = [h for i, a in zip(items, hrefs, strict=True) for h in (i.get_self_href(), a)
                      if h and "://" not in h]

    def footprint(self) -> shapely.Geometry:
        return shapely.union_all([s.footprint() for s in self.sources])

    def read_chip(self, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        with rasterio.Env(**http.gdal_options()):
            return self._best_chip(lat, lon, footprint_m, size_px)

    def _best_chip(self, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        best = None
        for src in self.sources:
            if shapely.contains_xy(src.footprint(), lon, lat):
                if _scheme(src.path) in ("http", "https"):  # GDAL's reads, one politeness slot a chip
                    http.wait_turn(src.path, http.STAC_MIN_INTERVAL_S)
                chip = src.read_chip(lat, lon, footprint_m, size_px)
                if chip is not None and (best is None or chip.valid_fraction > best.valid_fraction):
                    best = chip
                    if chip.valid_fraction == 1.0:
                        break
        return best

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float,
                       size_px: int) -> list[RequestBudget]:
        """GDAL's reads of the remote COGs that serve chips at (lat, lon) degrees (:func:`cog_reads`).

        The catalog itself was read when the source was opened. Each chip is counted once, for
        the first item that covers its centre, with that COG's pixel size and tile width.
        """
        per_host: dict[str, list[int]] = {}
        left = np.ones(len(lat), dtype=bool)
        for src in self.sources:
            covered = left & shapely.contains_xy(src.footprint(), lon, lat)
            left &= ~covered
            if not covered.any() or _scheme(src.path) not in ("http", "https"):
                continue
            ds = src.ds
            gsd_m = abs(ds.res[0]) * (111_320.0 if ds.crs.is_geographic else float(ds.crs.linear_units_factor[1]))
            reads = cog_reads(int(covered.sum()), footprint_m, size_px, gsd_m, ds.block_shapes[0][1])
            row = per_host.setdefault(urlsplit(src.path).netloc, [0, 0])
            row[0] += reads[0]
            row[1] += reads[1]
        return [RequestBudget(f"imagery stac {self.name} COG reads", host, n, b, http.STAC_MIN_INTERVAL_S)
                for host, (n, b) in sorted(per_host.items())]


@dataclass
class StacApiConfig:
    """A STAC API searched chip by chip (``type: stac`` with ``api:``), e.g. Sentinel-2 L2A on Earth Search."""

    api: str = field(metadata={"help": "the API's landing page, e.g. https://earth-search.aws.element84.com/v1"})
    collections: list[str] = field(metadata={"help": "collections searched, e.g. [sentinel-2-l2a]"})
    asset: str = field(default="visual", metadata={
        "help": "the item asset read as the chip; Sentinel-2's `visual` is ESA's 8-bit true-colour image (TCI)"})
    datetime: str | None = field(default=None, metadata={
        "help": "RFC 3339 instant or interval searched, e.g. 2024-01-01/2024-12-31 (none: any date)"})
    max_cloud_cover: float | None = field(default=20.0, metadata={
        "help": "largest eo:cloud_cover (percent of the scene) accepted; null accepts items without one"})
    bands: list[int] | None = field(default=None, metadata={"help": "1-based bands in R, G, B order (default 1, 2, 3)"})
    rescale: Any = field(default=None, metadata={
        "help": "null (8-bit assets such as the TCI, used as they are), auto (2-98 % per COG) or [low, high]"})
    bbox: list[float] | None = field(default=None, metadata={
        "help": "[left, bottom, right, top] lon/lat the source is used in (default: the whole globe)"})
    limit: int = field(default=10, metadata={
        "help": "items per search page (sorted by cloud cover, the first page usually holds the answer)"})
    max_items: int = field(default=100, metadata={"help": "most items looked at per chip (bounds the paging)"})
    min_interval_s: float = field(default=http.STAC_MIN_INTERVAL_S, metadata={
        "help": "seconds between two requests to the API host, and between two chip reads from a COG host"})
    gsd_m: float = field(default=10.0, metadata={"help": "ground sample distance of the asset in metres (budgets only)"})
    block_px: int = field(default=1024, metadata={"help": "COG tile size in pixels (budgets only)"})
    licence: str = field(default="", metadata={
        "help": "licence recorded in the manifest; default: the collections' `license` and licence links"})
    attribution: str = field(default="", metadata={
        "help": "credit line recorded with the licence, e.g. 'Contains modified Copernicus Sentinel data 2024'"})
    name: str | None = field(default=None, metadata={"help": "name shown in logs (default: the API URL)"})

    def __post_init__(self) -> None:
        http.canonical_url(self.api)  # a bad scheme or host fails here, before any request
        if not self.collections or not all(isinstance(c, str) for c in self.collections):
            raise InputError(f"stac api {http.redact(self.api)}: collections must name at least one collection")
        if self.bbox is not None and (len(self.bbox) != 4 or self.bbox[0] >= self.bbox[2] or self.bbox[1] >= self.bbox[3]):
            raise InputError(f"stac api {http.redact(self.api)}: bbox must be [left, bottom, right, top], got {self.bbox}")
        if not 1 <= self.limit <= 10_000 or self.max_items < 1:
            raise InputError(f"stac api {http.redact(self.api)}: limit must be 1-10000 and max_items >= 1 "
                             f"(got {self.limit}, {self.max_items})")


def _chip_cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir("chips") / digest[:2] / digest


class StacApiImagery:
    """The least-cloudy item of a STAC API that holds the whole chip, read from its COG by range requests.

    Per chip: one ``GET /search`` on the chip's lon/lat box (``collections``, ``datetime``,
    ``eo:cloud_cover <= max_cloud_cover`` through the Query extension, or CQL2 ``filter`` where
    only that is offered; sorted by cloud cover where the Sort extension is offered, then the
    first item that holds the chip is the answer), pages followed through ``next`` links up to
    ``max_items`` items. Items whose footprint (their valid-data outline) does not contain the
    whole chip are passed over, so a chip never straddles a scene edge. Ties keep the server's
    order. The chosen COG is read by GDAL (``/vsicurl/``, :func:`urp_data.http.gdal_options`)
    after one politeness slot of its host.

    Stretch: none by default. Sentinel-2's ``visual`` asset is ESA's true-colour image (TCI):
    B04, B03, B02 with reflectance 0-0.2 coded linearly as 1-255 and 0 as no data, already
    what a chip shows; its no-data pixels lower the chip's valid fraction. Set ``rescale`` for
    other assets.

    Chips are cached under ``URP_CACHE_DIR/chips`` (keyed on the COG's URL, the chip and the
    GDAL version), so a second build reads no COG again; its searches come from the HTTP cache.
    """

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
        process before any chunk (:func:`urp_data.pipeline.before_network`), so an API that cannot
        be used fails there, in one line, and searches run on the first chip otherwise.
        """
        if self._client is not None:
            return
        import pystac_client
        from pystac_client.conformance import ConformanceClasses

        cfg = self.cfg
        try:
            client = pystac_client.Client.open(cfg.api, stac_io=_reader(cfg.api, cfg.min_interval_s))
            if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
                raise InputError(f"{http.redact(cfg.api)} does not offer STAC item search; use catalog: for a "
                                 "static catalog")
            self._query = client.conforms_to(ConformanceClasses.QUERY)
            self._filter = not self._query and client.conforms_to(ConformanceClasses.FILTER)
            self._sorted = client.conforms_to(ConformanceClasses.SORT)
            self._licence_text = self._licence()
        except Exception as exc:  # pystac-client raises many types for an unreadable API
            raise _refusal(exc) or InputError(http.redact(f"cannot open STAC API {cfg.api}: {one_line(exc)}")) from exc
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
                                              check=_stac_json))
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
            params.update(filter=f'"eo:cloud_cover" <= {c.max_cloud_cover}', filter_lang="cql2-text")
        if self._sorted:
            params["sortby"] = "+properties.eo:cloud_cover"
        return params

    def best_item(self, box: tuple[float, float, float, float]) -> Any | None:
        """The least-cloudy item with the asset whose footprint holds ``box`` (lon/lat), or None."""
        self.connect()
        c, chip = self.cfg, shapely.box(*box)
        best, best_cloud = None, math.inf
        for item in self._client.search(**self._search_params(box)).items():
            cloud = item.properties.get("eo:cloud_cover")
            if c.asset not in item.assets or item.geometry is None:
                continue
            if c.max_cloud_cover is not None and (cloud is None or cloud > c.max_cloud_cover):
                continue  # the server's filter is checked again: not every API offers one
            if not shapely.geometry.shape(item.geometry).contains(chip):
                continue
            rank = math.inf if cloud is None else float(cloud)
            if best is None or rank < best_cloud:
                best, best_cloud = item, rank
            if self._sorted:
                break
        return best

    def read_chip(self, lat: float, lon: float, footprint_m: float, size_px: int) -> Chip | None:
        if not shapely.contains_xy(self.footprint(), lon, lat):
            return None
        box = square_lonlat(lat, lon, footprint_m)
        try:
            item = self.best_item(box)
        except Exception as exc:  # pystac-client: a page that is JSON but not an item collection
            raise _refusal(exc) or InputError(http.redact(f"STAC API {self.cfg.api} sent an unusable search page: {one_line(exc)}")) from exc
        if item is None:
            return None
        href = remote_href(str(item.assets[self.cfg.asset].get_absolute_href()), self.cfg.api)
        key = {"href": href, "lat": lat, "lon": lon, "footprint_m": footprint_m, "size_px": size_px,
               "bands": self.cfg.bands, "rescale": self.cfg.rescale, "gdal": rasterio.__gdal_version__}
        path = _chip_cache_path(key)
        if path.is_file():
            with np.load(path) as z:
                return Chip(z["rgb"], float(z["valid"]), shapely.from_wkb(z["footprint"].tobytes()))
        http.wait_turn(href, self.cfg.min_interval_s)
        with rasterio.Env(**http.gdal_options()):
            chip = self._cog(href).read_chip(lat, lon, footprint_m, size_px)
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


def stac_from_config(spec: dict[str, Any], resolve: Any) -> StacImagery | StacApiImagery:
    """The source of one ``type: stac`` entry: ``api:`` (searched per chip) or ``catalog:``."""
    if "api" in spec:
        known = {f.name for f in fields(StacApiConfig)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise InputError(f"stac api source: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return StacApiImagery(StacApiConfig(**spec))
    catalog = str(spec.pop("catalog"))
    return StacImagery(catalog if "://" in catalog else str(resolve(catalog)), **spec)

