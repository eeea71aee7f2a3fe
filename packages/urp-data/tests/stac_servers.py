"""Loopback emulations for the STAC API tests: a STAC API and a COG host, each able to misbehave.

The API follows the STAC API spec (radiantearth/stac-api-spec: core, item-search) and Earth
Search's stac-server usage guide (stac-utils/stac-server docs/usage): a landing page (``/``) with
``conformsTo`` and ``search`` links for GET and POST, ``/conformance``, ``/collections`` and
``/collections/{id}`` (with ``license`` and a ``license`` link), and ``/search`` by GET (query
string: comma-separated ``collections`` and ``bbox``, ``datetime`` interval, ``limit``, the Query
extension's ``query`` as JSON, the Sort extension's ``sortby=+properties.eo:cloud_cover``) and by
POST (the same fields as JSON). Pages hold ``limit`` items and a ``next`` link: for GET the same
query plus ``token=<offset>``; for POST a link with ``method: POST``, ``body: {token}`` and
``merge: true``.

Recorded answers replace the emulated ones where set: ``landing`` (``/``) and ``pages`` (``/search``,
picked by the request's ``next`` token; data/recorded/). Every POST's JSON body is kept in ``posted``.

Any host also serves ``*.png`` tiles (coloured by their path) for XYZ sources, and the files of
its folder with HTTP range requests (206 and ``Content-Range``), as GDAL's ``/vsicurl/`` needs.
Each host keeps its own request log (time, method, path, query) and fault queues (``faults[path]``,
played in order before normal answers, whatever the query string; HEAD requests play none but a 403) with
:meth:`servers.Faulty.play`, whose faults are listed in servers.py. Unlike ``servers.Faulty``
(one state for its class), the state lives on each server, so an API and a COG host can run at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from servers import POLL_S, Faulty, png

CONFORMS = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
            "https://api.stacspec.org/v1.0.0/item-search#query", "https://api.stacspec.org/v1.0.0/item-search#sort",
            "https://api.stacspec.org/v1.0.0/collections"]


class Host(ThreadingHTTPServer):
    """One loopback host: its own request log, fault queues, files and (optionally) STAC API."""

    daemon_threads = True

    def __init__(self, files: Path | None = None, items: list[dict] | None = None,
                 conforms: list[str] | None = None, landing: dict | None = None,
                 pages: dict[str | None, dict] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.files, self.items, self.conforms = files, items, conforms or CONFORMS
        self.landing = landing  # a recorded landing page served as ``/`` instead of the emulated one
        # recorded search pages served for ``/search`` instead of the emulated search, by the request's
        # ``next`` token (the POST body's or the GET query's; None: the first page); another token is a 404
        self.pages = pages
        self.posted: list[dict] = []  # the JSON body of every POST
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[float, str, str, str]] = []  # (time, method, path, query)
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ the STAC API

    def document(self, method: str, path: str, query: str, body: bytes) -> dict | None:
        if self.items is None:
            return None
        base = self.url
        link = {"type": "application/json"}
        if path == "/" and self.landing is not None:
            return self.landing
        if path == "/":
            return {"type": "Catalog", "stac_version": "1.0.0", "id": "loopback", "description": "emulated STAC API",
                    "conformsTo": self.conforms,
                    "links": [{"rel": "self", "href": base + "/", **link}, {"rel": "root", "href": base + "/", **link},
                              {"rel": "conformance", "href": base + "/conformance", **link},
                              {"rel": "data", "href": base + "/collections", **link},
                              {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "GET"},
                              {"rel": "search", "href": base + "/search", "type": "application/geo+json",
                               "method": "POST"}]}
        if path == "/conformance":
            return {"conformsTo": self.conforms}
        if path == "/collections":
            return {"collections": [self._collection(c) for c in sorted({i["collection"] for i in self.items})],
                    "links": []}
        if path.startswith("/collections/"):
            return self._collection(path.split("/")[2])
        if path == "/search" and self.pages is not None:
            token = json.loads(body or b"{}").get("next") if method == "POST" else parse_qs(query).get("next", [None])[0]
            return self.pages.get(token)
        if path == "/search":
            if method == "POST":
                params = json.loads(body or b"{}")
            else:
                q = {k: v[0] for k, v in parse_qs(query).items()}
                params = {**q, "collections": q["collections"].split(",") if "collections" in q else None,
                          "bbox": [float(v) for v in q["bbox"].split(",")] if "bbox" in q else None,
                          "query": json.loads(q["query"]) if "query" in q else None}
            return self._search(method, params, query)
        return None

    def _collection(self, cid: str) -> dict:
        return {"type": "Collection", "stac_version": "1.0.0", "id": cid, "description": "emulated",
                "license": "proprietary", "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                                     "temporal": {"interval": [[None, None]]}},
                "links": [{"rel": "license", "href": "https://sentinel.example/legal-notice", "type": "text/html"}]}

    def _search(self, method: str, p: dict[str, Any], query: str) -> dict:
        hits = self.items
        if p.get("collections"):
            hits = [i for i in hits if i["collection"] in p["collections"]]
        if p.get("bbox"):
            left, bottom, right, top = p["bbox"]
            hits = [i for i in hits if i["bbox"][0] <= right and i["bbox"][2] >= left
                    and i["bbox"][1] <= top and i["bbox"][3] >= bottom]
        if p.get("datetime"):
            start, _, end = p["datetime"].partition("/")
            when = [datetime.fromisoformat(s) if s not in ("", "..") else None for s in (start, end or start)]
            hits = [i for i in hits if (when[0] is None or datetime.fromisoformat(i["properties"]["datetime"]) >= when[0])
                    and (when[1] is None or datetime.fromisoformat(i["properties"]["datetime"]) <= when[1])]
        for prop, ops in (p.get("query") or {}).items():
            for op, value in ops.items():
                cmp = {"lt": float.__lt__, "lte": float.__le__, "gt": float.__gt__, "gte": float.__ge__}[op]
                hits = [i for i in hits if prop in i["properties"] and cmp(float(i["properties"][prop]), float(value))]
        sortby = p.get("sortby")
        if isinstance(sortby, str):
            sortby = [{"field": s.lstrip("+-"), "direction": "desc" if s.startswith("-") else "asc"}
                      for s in sortby.split(",")]
        for s in reversed(sortby or []):
            key = s["field"].removeprefix("properties.")
            hits = sorted(hits, key=lambda i, k=key: i["properties"].get(k, 0), reverse=s["direction"] == "desc")
        start, limit = int(p.get("token") or 0), int(p.get("limit") or 10)
        page = {"type": "FeatureCollection", "features": hits[start:start + limit], "links": []}
        if start + limit < len(hits):
            if method == "POST":
                page["links"].append({"rel": "next", "href": self.url + "/search", "method": "POST",
                                      "body": {"token": start + limit}, "merge": True})
            else:
                q = {k: v[0] for k, v in parse_qs(query).items()} | {"token": start + limit}
                page["links"].append({"rel": "next", "href": f"{self.url}/search?{urlencode(q)}",
                                      "type": "application/geo+json"})
        return page


class _Handler(Faulty):
    """Answers for its :class:`Host` (state per server, not per class) and plays faults with :meth:`Faulty.play`."""

    server: Host
    ignore_range = False  # honours Range whatever Faulty.ignore_range (the WorldPop emulation) says

    def do_HEAD(self):
        self._answer("HEAD")

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST", self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _answer(self, method: str, body: bytes = b"") -> None:
        srv = self.server
        path, _, query = self.path.partition("?")
        with srv.lock:
            srv.log.append((time.time(), method, path, query))
            if method == "POST":
                srv.posted.append(json.loads(body or b"{}"))
            queue = srv.faults.get(path, [])
            fault = queue.pop(0) if queue and (method != "HEAD" or queue[0] == "403") else "ok"  # a block blocks HEAD too
        doc = srv.document(method, path, query, body)
        file = srv.files / path.lstrip("/") if srv.files is not None else None
        if doc is not None:
            data, ctype = json.dumps(doc).encode(), "application/geo+json" if path == "/search" else "application/json"
        elif file is not None and file.is_file():
            data, ctype = file.read_bytes(), "application/json" if file.suffix == ".json" else "image/tiff"
        elif path.endswith(".png"):  # an XYZ tile whose colour depends on its path
            data, ctype = png(path), "image/png"
        else:
            return self._send(404, b"not here", "text/plain")
        if fault == "ok":
            return self.ranged(data, ctype, head=method == "HEAD")
        self.play(fault, data, ctype)


def olinda_cogs(folder: Path, scene: Path) -> Path:
    """a.tif (bands 3, 2, 1 of the demo's Olinda scene ``scene``) and b.tif (1, 2, 3) as 8-bit COGs with
    128 px tiles, in ``folder``."""
    import rasterio

    with rasterio.open(scene) as ds:
        profile = {"driver": "COG", "dtype": "uint8", "count": 3, "width": ds.width, "height": ds.height,
                   "crs": ds.crs, "transform": ds.transform, "nodata": 0, "blocksize": 128, "compress": "deflate"}
        for name, bands in (("a.tif", [3, 2, 1]), ("b.tif", [1, 2, 3])):
            with rasterio.open(folder / name, "w", **profile) as out:
                out.write(ds.read(bands))
    return folder


def olinda_items(cogs: Path, cog_url: str, href_a: str | None = None, collection: str = "sentinel-2-l2a") -> list[dict]:
    """Sentinel-2-like items over :func:`olinda_cogs`: ``a`` (cloud 12 %, the whole scene), ``b`` (cloud 3 %,
    only west of lon -34.87), a cloudier one (35 %), one without the asset, one outside 2024."""
    import shapely
    import shapely.geometry
    from urp_data.sources.imagery.raster import RasterImagery

    fp = RasterImagery(cogs / "a.tif").footprint()
    west = fp.intersection(shapely.box(-180, -90, -34.87, 90))

    def item(iid, geom, cloud, asset, when="2024-06-01T12:00:00+00:00"):
        assets = {"thumbnail": {"href": cog_url + "/thumb.jpg", "type": "image/jpeg"}}
        if asset:
            assets["visual"] = {"href": asset, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
        return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": collection,
                "geometry": shapely.geometry.mapping(geom), "bbox": list(geom.bounds),
                "properties": {"datetime": when, "eo:cloud_cover": cloud}, "assets": assets, "links": []}

    return [item("a", fp, 12.0, href_a or cog_url + "/a.tif"), item("b", west, 3.0, cog_url + "/b.tif"),
            item("cloudy", fp, 35.0, cog_url + "/b.tif"), item("no-visual", fp, 1.0, None),
            item("old", fp, 0.5, cog_url + "/b.tif", when="2019-06-01T12:00:00+00:00")]


@contextmanager
def running(host: Host) -> Iterator[Host]:
    """``host`` serving on loopback for the block, then shut down and closed."""
    thread = threading.Thread(target=host.serve_forever, args=(POLL_S,), daemon=True)
    thread.start()
    try:
        yield host
    finally:
        host.shutdown()
        host.server_close()
        thread.join(timeout=10)
