"""Loopback HTTP servers for the tests: a server that misbehaves on purpose, and emulations of the
Nominatim, Photon and Overpass APIs built from the sample data in data/ (test_http.py, test_online_places.py).

Faults (``Faulty.faults[path]``, played in order before normal answers, ``ok`` being a normal one):
429 with Retry-After in seconds or as an HTTP date or without it (``429-bare``; ``429-reset:<s>`` with
an ``X-RateLimit-Reset`` that many seconds ahead instead, as InvenioRDM/Zenodo send), 503, 404, 403, an HTML page
sent with status 200, truncated bodies with and without Content-Length, a slow trickle (bounded at 2 s), a status
line and headers trickled one byte a second (bounded at 30 s), redirects,
Overpass's runtime-error remark, a STAC API error object and an empty object sent with status 200.
:meth:`Faulty.play` plays them; the STAC emulation (stac_servers.py) reuses it.
A fault on a served file (``Faulty.files``, with range requests, as a COG or download host) cuts or
trickles that file. ``Faulty.latency_s`` delays every answer (a distant host's round trip) and
``Faulty.in_flight`` records how many requests the server was answering at once (benchmarks/online_build.py).

The emulated answers follow the providers' documented formats (see urp_data.sources.places.online and
urp_data.sources.places.poi.Overpass): Nominatim ``/reverse`` jsonv2 with address details, Photon ``/reverse``
GeoJSON, Overpass ``/api/interpreter`` ``[out:json]`` with ``out center`` and ``/api/status`` text.
"""

from __future__ import annotations

import email.utils
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

Route = Callable[[dict[str, list[str]]], tuple[bytes, str]]


DATA = Path(__file__).resolve().parents[3] / "data"
POLL_S = 0.02  # serve_forever's poll: shutdown() waits up to one (the default 0.5 s, hundreds of times a suite)


def indicator_raster(out: Path, block_px: int) -> Path:
    """Band 4 of the Olinda Landsat scene (data/demo) as a tiled float32 GeoTIFF in UTM, ``block_px``-pixel
    blocks as a COG's, 0 as nodata: the indicator file the online tests and the benchmark serve."""
    import rasterio

    with rasterio.open(DATA / "demo" / "olinda_l7_etm.tif") as ds:
        band = ds.read(4).astype(np.float32)
        profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "width": ds.width, "height": ds.height,
                   "crs": ds.crs, "transform": ds.transform, "nodata": 0.0, "tiled": True, "blockxsize": block_px,
                   "blockysize": block_px, "compress": "deflate"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(band, 1)
    return out


def png(path: str) -> bytes:
    """A 64 x 64 PNG whose colour depends on the path, so a wrong tile shows."""
    seed = sum(path.encode()) % 256
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (seed, 255 - seed, 7)).save(buf, format="PNG")
    return buf.getvalue()


class Faulty(BaseHTTPRequestHandler):
    """Serves PNGs (``*.png``), JSON (anything else) and the emulated APIs of ``routes``;
    ``faults[path]`` lists faults to play first, in order, whatever the query string."""

    faults: ClassVar[dict[str, list[str]]] = {}
    log: ClassVar[list[tuple[float, str]]] = []
    agents: ClassVar[list[str]] = []
    files: ClassVar[Path | None] = None  # also serves the files under this folder, with range requests (COGs)
    routes: ClassVar[dict[str, Route]] = {}  # path -> the emulated API answering it (its query -> body, type)
    slot_wait_s: ClassVar[int] = 0  # the emulated Overpass status reports a busy slot once, for this long
    latency_s: ClassVar[float] = 0.0  # injected before every answer: a round trip to a distant host
    in_flight: ClassVar[list[tuple[float, int]]] = []  # (time, requests being answered after it changed)
    ignore_range: ClassVar[bool] = False  # answer range requests 200 with the whole file, as data.worldpop.org does
    range_encodings: ClassVar[list[str]] = []  # the Accept-Encoding of each range request
    _lock = threading.Lock()
    _active = 0

    def handle_one_request(self):
        """Counts the requests being answered at once (the benchmark's "in flight") around each one."""
        with Faulty._lock:
            Faulty._active += 1
            Faulty.in_flight.append((time.monotonic(), Faulty._active))
        try:
            super().handle_one_request()
        finally:
            with Faulty._lock:
                Faulty._active -= 1
                Faulty.in_flight.append((time.monotonic(), Faulty._active))

    def do_HEAD(self):
        self._file(head=True)

    def do_POST(self):  # a STAC API search: the request body is read and ignored (one result page)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    def do_GET(self):
        Faulty.log.append((time.time(), self.path))
        Faulty.agents.append(self.headers.get("User-Agent", ""))
        if Faulty.latency_s:
            time.sleep(Faulty.latency_s)
        path = self.path.split("?")[0]
        queue = Faulty.faults.get(path, [])
        fault = queue.pop(0) if queue else "ok"
        if fault == "ok" and self._file():
            return
        served = (Faulty.files / path.lstrip("/")) if Faulty.files else None
        if path in Faulty.routes:
            body, ctype = Faulty.routes[path](parse_qs(urlsplit(self.path).query))
        elif served is not None and served.is_file():  # a fault on a served file cuts or trickles the file itself
            body = served.read_bytes()
            ctype = "application/json" if served.suffix == ".json" or served.name == "search" else "image/tiff"
        else:
            body = png(path) if path.endswith(".png") else json.dumps({"path": path}).encode()
            ctype = "image/png" if path.endswith(".png") else "application/json"
        self.play(fault, body, ctype)

    def play(self, fault: str, body: bytes, ctype: str) -> None:
        """Answer with ``body`` and ``ctype`` (fault ``ok``), or play ``fault`` (see the module docstring) instead."""
        if fault == "ok":
            self._send(200, body, ctype)
        elif fault == "404":
            self._send(404, b"not here", "text/plain")
        elif fault == "503":
            self._send(503, b"busy", "text/plain")
        elif fault.startswith("429:"):  # 429:<seconds> or 429:date+<seconds>
            wait = fault[4:]
            if wait.startswith("date+"):
                wait = email.utils.formatdate(time.time() + float(wait[5:]), usegmt=True)
            self._send(429, b"slow down", "text/plain", {"Retry-After": wait})
        elif fault == "429-bare":  # Zenodo's and Overpass's: a 429 with no Retry-After
            self._send(429, b"slow down", "text/plain")
        elif fault.startswith("429-reset:"):  # no Retry-After, but X-RateLimit-Reset (epoch seconds) in <seconds>
            reset = int(time.time() + float(fault[len("429-reset:"):]))
            self._send(429, b"slow down", "text/plain", {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0",
                                                         "X-RateLimit-Reset": str(reset)})
        elif fault == "403":  # a block
            self._send(403, b"<html><body>Access blocked</body></html>", "text/html")
        elif fault == "remark":  # Overpass out of time: status 200, no elements, a runtime-error remark
            self._send(200, json.dumps({"version": 0.6, "elements": [], "remark": 'runtime error: Query timed out '
                                        'in "query" at line 1 after 2 seconds.'}).encode(), "application/json")
        elif fault == "html200":
            self._send(200, b"<html><body>Service unavailable, try later</body></html>", "text/html")
        elif fault == "png-as-html":  # decodes, but a server that says text/html sent an error page
            self._send(200, body, "text/html")
        elif fault == "html200-as-png":
            self._send(200, b"<html><body>Service unavailable</body></html>", "image/png")
        elif fault in ("truncated", "truncated-no-length"):
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            if fault == "truncated":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif fault == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(min(len(body), 100)):  # bounded: at most 2 s
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(0.02)
        elif fault == "trickle-headers":  # the status line and headers one byte a second (bounded: 30 s)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            try:
                for i in range(min(len(head), 30)):
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                    time.sleep(1.0)
            except OSError:
                pass  # the client gave up: what it should do
            self.close_connection = True
        elif fault.startswith("redirect:"):
            self.send_response(302)
            self.send_header("Location", fault[len("redirect:"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif fault == "json-error200":  # a STAC API error object sent with status 200
            self._send(200, json.dumps({"code": "InternalServerError", "description": "try later"}).encode(),
                       "application/json")
        elif fault == "empty-page200":  # valid JSON, but not what was asked for
            self._send(200, b"{}", "application/json")

    def _file(self, head=False) -> bool:
        """Serve a file of ``files`` (a 206 for ``Range: bytes=a-b``); False when there is none."""
        path = (Faulty.files / self.path.split("?")[0].lstrip("/")) if Faulty.files else None
        if path is None or not path.is_file():
            if head:
                self._send(404, b"", "text/plain")
            return False
        data = path.read_bytes()
        ctype = "application/json" if path.suffix == ".json" or path.name == "search" else "image/tiff"
        self.ranged(data, ctype, head)
        return True

    def ranged(self, data: bytes, ctype: str, head: bool = False) -> None:
        """Send ``data``, or the part that ``Range: bytes=a-b`` asks for (206, as GDAL's range reads need)."""
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            Faulty.range_encodings.append(self.headers.get("Accept-Encoding", ""))
        if match and not type(self).ignore_range:  # the class's own: a subclass may keep honouring Range
            start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
            self._send(206, data[start:end + 1], ctype, {"Content-Range": f"bytes {start}-{end}/{len(data)}",
                                                        "Accept-Ranges": "bytes"}, head)
        else:
            self._send(200, data, ctype, {"Accept-Ranges": "bytes"}, head)

    def _send(self, status, body, ctype, headers=None, head=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


class Tiles(BaseHTTPRequestHandler):
    """XYZ tiles (``/z/x/y.png``) whose colour encodes (x, y, z), so a wrong tile shows in a chip.

    ``log`` gets (monotonic time, path, User-Agent) per request; a path in ``fail`` is answered
    404 that many times first.
    """

    log: ClassVar[list[tuple[float, str, str]]] = []
    fail: ClassVar[dict[str, int]] = {}

    def do_GET(self):
        Tiles.log.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
        if Tiles.fail.get(self.path, 0) > 0:
            Tiles.fail[self.path] -= 1
            self.send_response(404)
            self.end_headers()
            return
        z, x, y = (int(v) for v in self.path.strip("/").split(".")[0].split("/"))
        buf = io.BytesIO()
        Image.new("RGB", (256, 256), (x % 256, y % 256, z)).save(buf, format="PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(buf.getvalue())

    def log_message(self, *args):
        pass


@contextmanager
def _running(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on 127.0.0.1 (a free port); yields its base URL, then stops it."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, args=(POLL_S,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@contextmanager
def serve_tiles() -> Iterator[str]:
    """:class:`Tiles` with an empty log; yields its base URL."""
    Tiles.log, Tiles.fail = [], {}
    with _running(Tiles) as url:
        yield url


@contextmanager
def serve() -> Iterator[str]:
    """:class:`Faulty` with empty faults and logs; yields its base URL."""
    Faulty.faults, Faulty.log, Faulty.agents, Faulty.routes = {}, [], [], {}
    Faulty.ignore_range, Faulty.range_encodings = False, []
    Faulty.in_flight, Faulty.latency_s = [], 0.0
    with _running(Faulty) as url:
        yield url


# --------------------------------------------------------------------------- emulated APIs

OSM_COPYRIGHT = ("The data included in this document is from www.openstreetmap.org. "
                 "The data is made available under ODbL.")
NOMINATIM_LICENCE = "Data © OpenStreetMap contributors, ODbL 1.0. https://osm.org/copyright"


class OsmSample:
    """The tagged nodes and ways of an OSM extract (read with pyosmium), as the emulated APIs serve them."""

    def __init__(self, pbf: Path) -> None:
        import osmium

        self.nodes: list[dict] = []
        self.ways: list[dict] = []
        for obj in osmium.FileProcessor(str(pbf), osmium.osm.NODE | osmium.osm.WAY).with_locations():
            tags = dict(obj.tags)
            if not tags:
                continue
            if obj.is_node():
                self.nodes.append({"type": "node", "id": obj.id, "lat": obj.location.lat,
                                   "lon": obj.location.lon, "tags": tags})
            else:
                locs = np.array([(n.lat, n.lon) for n in obj.nodes if n.location.valid()])
                if len(locs):
                    (la0, lo0), (la1, lo1) = locs.min(axis=0), locs.max(axis=0)
                    self.ways.append({"type": "way", "id": obj.id, "locs": locs,
                                      "center": {"lat": round((la0 + la1) / 2, 7), "lon": round((lo0 + lo1) / 2, 7)},
                                      "nodes": [n.ref for n in obj.nodes], "tags": tags})
        self.suburbs = [n for n in self.nodes if n["tags"].get("place") in ("suburb", "quarter", "neighbourhood")
                        and "name" in n["tags"]]


def overpass_interpreter(sample: OsmSample) -> Route:
    """``/api/interpreter?data=QL`` for the queries urp sends: ``[bbox:s,w,n,e]`` and ``node|way["name"]["key"]``
    statements, answered as ``out center`` (nodes with lat/lon, ways with their bbox centre and node ids)."""

    def route(query: dict[str, list[str]]) -> tuple[bytes, str]:
        ql = query["data"][0]
        assert ql.startswith("[out:json]") and ql.endswith("out center;"), ql  # what this emulation answers
        s, w, n, e = map(float, re.search(r"\[bbox:([-\d.]+),([-\d.]+),([-\d.]+),([-\d.]+)\]", ql).groups())
        wanted = re.findall(r'(node|way)\["name"\]\["(\w+)"\]', ql)

        def inside(lat: float, lon: float) -> bool:
            return s <= lat <= n and w <= lon <= e

        found: dict[tuple[str, int], dict] = {}
        for kind, key in wanted:
            for el in (sample.nodes if kind == "node" else sample.ways):
                if "name" in el["tags"] and key in el["tags"]:
                    hit = inside(el["lat"], el["lon"]) if kind == "node" else \
                        any(inside(la, lo) for la, lo in el["locs"])
                    if hit:
                        found[(kind, el["id"])] = {k: v for k, v in el.items() if k != "locs"}
        elements = [found[k] for k in sorted(found, key=lambda k: (k[0] != "node", k[1]))]
        doc = {"version": 0.6, "generator": "Overpass API (urp test emulation)",
               "osm3s": {"timestamp_osm_base": "2023-12-25T00:00:00Z", "copyright": OSM_COPYRIGHT},
               "elements": elements}
        return json.dumps(doc).encode(), "application/json"

    return route


def overpass_status(query: dict[str, list[str]]) -> tuple[bytes, str]:
    """``/api/status`` as the public instance writes it; busy (a slot in ``Faulty.slot_wait_s`` s) once when set."""
    now = datetime.now(UTC)
    lines = ["Connected as: 2130706433", f"Current time: {now:%Y-%m-%dT%H:%M:%SZ}", "Announced endpoint: none",
             "Rate limit: 2"]
    if Faulty.slot_wait_s:
        later = datetime.fromtimestamp(now.timestamp() + Faulty.slot_wait_s, UTC)
        lines.append(f"Slot available after: {later:%Y-%m-%dT%H:%M:%SZ}, in {Faulty.slot_wait_s} seconds.")
        Faulty.slot_wait_s = 0
    else:
        lines.append("2 slots available now.")
    lines.append("Currently running queries (pid, space limit, time limit, start time):")
    return ("\n".join(lines) + "\n").encode(), "text/plain; charset=utf-8"


class ReverseGeocoder:
    """What the emulated geocoders know of a point: the nearest OSM suburb of the sample (within 3 km), and
    the nearest GeoNames place with its admin area and country (within 30 km; else nothing, like the sea)."""

    def __init__(self, sample: OsmSample) -> None:
        from urp_data.sources.places.gazetteer import Gazetteer

        self.gaz = Gazetteer(1000)
        self.sample, self.suburbs = sample, sample.suburbs

    def lookup(self, lat: float, lon: float) -> dict | None:
        from urp_data.util.geodesy import haversine_km

        idx, dist = self.gaz.nearest(np.array([lat]), np.array([lon]))
        if dist[0] > 30:
            return None
        i = int(idx[0])
        iso2 = str(self.gaz.country_iso2[i])
        iso3 = self.gaz.iso3(iso2)
        fields = {"city": str(self.gaz.places.name[i]), "state": self.gaz.admin_areas(np.array([lat]), np.array([lon]),
                                                                                       [iso3])[0],
                  "country": self.gaz.country_name(iso3), "country_code": iso2.lower(), "osm_id": 1000 + i,
                  "lat": float(self.gaz.places.lat[i]), "lon": float(self.gaz.places.lon[i])}
        if self.suburbs:
            d = [haversine_km(lat, lon, n["lat"], n["lon"]) for n in self.suburbs]
            j = int(np.argmin(d))
            if d[j] <= 3:
                sub = self.suburbs[j]
                fields.update(suburb=sub["tags"]["name"], osm_id=sub["id"], lat=sub["lat"], lon=sub["lon"])
        return {k: v for k, v in fields.items() if v is not None}


def nominatim_reverse(geo: ReverseGeocoder) -> Route:
    """``/reverse?lat=&lon=&format=jsonv2&addressdetails=1``: one place, or ``{"error": "Unable to geocode"}``."""

    def route(query: dict[str, list[str]]) -> tuple[bytes, str]:
        assert query["format"] == ["jsonv2"] and query["addressdetails"] == ["1"], query
        f = geo.lookup(float(query["lat"][0]), float(query["lon"][0]))
        if f is None:
            return json.dumps({"error": "Unable to geocode"}).encode(), "application/json"
        address = {k: f[k] for k in ("suburb", "city", "state", "country", "country_code") if k in f}
        name = f.get("suburb", f["city"])
        doc = {"place_id": f["osm_id"] % 100000, "licence": NOMINATIM_LICENCE, "osm_type": "node", "osm_id": f["osm_id"],
               "lat": f"{f['lat']:.7f}", "lon": f"{f['lon']:.7f}", "place_rank": 20 if "suburb" in f else 16,
               "category": "place", "type": "suburb" if "suburb" in f else "city", "importance": 0.1,
               "addresstype": "suburb" if "suburb" in f else "city", "name": name,
               "display_name": ", ".join(v for k, v in address.items() if k != "country_code"), "address": address,
               "boundingbox": [f"{f['lat'] - 0.01:.7f}", f"{f['lat'] + 0.01:.7f}", f"{f['lon'] - 0.01:.7f}",
                               f"{f['lon'] + 0.01:.7f}"]}
        return json.dumps(doc).encode(), "application/json"

    return route


def photon_reverse(geo: ReverseGeocoder) -> Route:
    """``/reverse?lat=&lon=``: a GeoJSON FeatureCollection of at most one feature."""

    def route(query: dict[str, list[str]]) -> tuple[bytes, str]:
        f = geo.lookup(float(query["lat"][0]), float(query["lon"][0]))
        features = []
        if f is not None:
            props = {"osm_type": "N", "osm_id": f["osm_id"], "osm_key": "place",
                     "osm_value": "suburb" if "suburb" in f else "city", "type": "district" if "suburb" in f else "city",
                     "name": f.get("suburb", f["city"]), "countrycode": f["country_code"].upper(),
                     **{k: f[k] for k in ("city", "state", "country") if k in f}}
            if "suburb" in f:
                props["district"] = f["suburb"]
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [f["lon"], f["lat"]]},
                             "properties": props})
        return json.dumps({"type": "FeatureCollection", "features": features}).encode(), "application/json"

    return route
