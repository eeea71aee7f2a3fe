"""STAC imagery: the COG assets of a static catalog, and a STAC API searched chip by chip.

Two region-config forms of ``type: stac``:

- ``catalog:`` a static catalog (path or URL) or an API searched once over ``bbox``: every item
  becomes a :class:`~urp_data.sources.imagery.raster.RasterImagery` (:class:`StacImagery`);
- ``api:`` a STAC API searched for each chip (:class:`StacApiImagery`), e.g. Sentinel-2 L2A from
  Earth Search: the least-cloudy item whose footprint holds the whole chip, read from its COG
  with HTTP range requests by GDAL (``/vsicurl/``). Made for regions far larger than one scene.

Every JSON document goes through :func:`urp_data.net.http.get` (paced, retried, checked as JSON
before it is cached), searches included: they are sent as GET (the STAC API spec requires
``GET /search``; POST is optional), or as POST where a filter needs it and the API offers it
(:class:`~urp_data.sources.imagery.stac_api.StacApiImagery`); a search page is cached like any other
response, a POST's keyed on its body.

A remote catalog (any document fetched over http(s)) may only point at http(s) hrefs: a link or
an asset href to ``file://`` or a cloud URL (``s3://``, ``gs://``, ``az://``, ``abfs://`` ...)
is refused with one line, because a remote document must not make us read local files or use
the credentials of this machine (a bare path resolves against the document's URL, so it stays
on that server). A local catalog may point anywhere, as before.
"""

from __future__ import annotations

import logging
import math
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
import shapely

from urp_data.errors import InputError
from urp_data.net import answers, http
from urp_data.net.budget import RequestBudget
from urp_data.sources.base import Chip, NetworkSource, Scene
from urp_data.sources.imagery.raster import RasterImagery
from urp_data.util.fs import one_line
from urp_data.util.geodesy import M_PER_DEG_LON_EQUATOR

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


def check_stac_json(body: bytes) -> None:
    """Raise unless ``body`` is a JSON object that is not an API error (``{"code", "description"}``).

    An error sent with status 200 (a proxy, a gateway) must not be cached as a document.
    """
    doc = answers.load_json(body)
    if not isinstance(doc, dict) or ("code" in doc and "description" in doc and "type" not in doc):
        raise ValueError(f"not a STAC document: {str(doc)[:120]}")


def _search_page(body: bytes) -> None:
    """:func:`check_stac_json`, and an item collection whose items hold the values a chip is chosen by: a
    cached page without ``features``, or with an item that cannot be read, would trip every rerun."""
    check_stac_json(body)
    doc = answers.load_json(body)
    if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise ValueError("a search page must be a FeatureCollection with a features list")
    for i, item in enumerate(doc["features"]):
        check_item(item, f"features[{i}]")


def check_item(item: Any, where: str) -> None:
    """Raise :class:`urp_data.net.answers.BadValue` naming the field unless ``item`` has the values we read:
    an id, a bbox of finite lon/lat, a cloud cover in 0-100 when given, and asset hrefs."""
    item = answers.obj(item, where)
    answers.text(item.get("id"), f"{where}.id")
    bbox = item.get("bbox")
    if bbox is not None:
        if not isinstance(bbox, list) or len(bbox) not in (4, 6):
            raise answers.BadValue(f"field {where}.bbox is not [left, bottom, right, top]")
        for j, v in enumerate(bbox):
            answers.number(v, f"{where}.bbox[{j}]")
    props = answers.obj(item.get("properties", {}), f"{where}.properties")
    if props.get("eo:cloud_cover") is not None:
        answers.number(props["eo:cloud_cover"], f"{where}.properties.eo:cloud_cover", 0, 100)
    answers.text(props.get("datetime"), f"{where}.properties.datetime", optional=True)
    for name, asset in answers.obj(item.get("assets", {}), f"{where}.assets").items():
        answers.text(answers.obj(asset, f"{where}.assets.{name}").get("href"), f"{where}.assets.{name}.href")


def scene_of(item: Any) -> Scene:
    """The scene a chip cut from ``item``'s asset names: its id, acquisition time and cloud cover."""
    cloud = item.properties.get("eo:cloud_cover")
    return Scene(item.id, item.properties.get("datetime"), None if cloud is None else float(cloud))


def stac_refusal(exc: BaseException) -> InputError | None:
    """The InputError (a refused href, a failed fetch) behind ``exc``, which pystac may have wrapped."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, InputError):
        seen = seen.__cause__ or seen.__context__
    return seen


def stac_reader(catalog: str, min_interval_s: float = http.STAC_MIN_INTERVAL_S, post: bool = False) -> Any:
    """A pystac-client ``StacApiIO`` whose every read goes through :func:`urp_data.net.http.get`.

    One reader serves static catalogs (pystac) and APIs (pystac-client): JSON is fetched with
    GET (or POST, with ``post``: a search sent as POST and the POST ``next`` links of its pages,
    their ``body`` merged into the search's when they say ``merge``), paced at ``min_interval_s``
    per host, retried and cached only once it parses; a catalog
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
                href, method = link["href"], str(link.get("method", "GET")).upper()
                # a GET link holds its query; a POST link its body, merged into the search's if it says so
                params = None if method != "POST" else \
                    {**(params or {}), **link.get("body", {})} if link.get("merge") else link.get("body", {})
            else:
                href = str(source)
            method = str(method).upper()
            if method not in (("GET", "POST") if post else ("GET",)):
                raise InputError(http.redact(f"STAC API {catalog} asks for a {method} request to {href}; urp "
                                             "reads catalogs with GET only (GET /search is required by the STAC API "
                                             "spec)"))
            if _scheme(href) in ("http", "https"):
                search = urlsplit(href).path.rstrip("/").endswith("/search")
                body = http.get(href, min_interval_s=min_interval_s, params=None if method == "POST" else params,
                                content_types=JSON_TYPES, check=_search_page if search else check_stac_json,
                                json_body=(params or {}) if method == "POST" else None)
                return body.decode()
            if remote:
                remote_href(href, catalog)
            return str(pystac.stac_io.DefaultStacIO.read_text_from_href(self, href))  # a local catalog, as before

        def read_text_from_href(self, href: str) -> str:
            return self.read_text(href)

    return Reader()


class StacImagery(NetworkSource):
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
            reader = stac_reader(catalog)
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
            raise stac_refusal(exc) or InputError(http.redact(f"cannot read STAC catalog {catalog}: {one_line(exc)}")) from exc
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
        self.scenes = [scene_of(i) for i in items]  # the row's scene_id, scene_datetime, scene_cloud_cover
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
        for src, scene in zip(self.sources, self.scenes, strict=True):
            if shapely.contains_xy(src.footprint(), lon, lat):
                if _scheme(src.path) in ("http", "https"):  # GDAL's reads, one politeness slot a chip
                    http.wait_turn(src.path, http.STAC_MIN_INTERVAL_S)
                chip = src.read_chip(lat, lon, footprint_m, size_px)
                if chip is not None and (best is None or chip.valid_fraction > best.valid_fraction):
                    best = chip
                    best.scene = scene
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
            gsd_m = abs(ds.res[0]) * (M_PER_DEG_LON_EQUATOR if ds.crs.is_geographic else float(ds.crs.linear_units_factor[1]))
            reads = cog_reads(int(covered.sum()), footprint_m, size_px, gsd_m, ds.block_shapes[0][1])
            row = per_host.setdefault(urlsplit(src.path).netloc, [0, 0])
            row[0] += reads[0]
            row[1] += reads[1]
        return [RequestBudget(f"imagery stac {self.name} COG reads", host, n, b, http.STAC_MIN_INTERVAL_S)
                for host, (n, b) in sorted(per_host.items())]
