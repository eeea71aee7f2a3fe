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

Any host also serves ``*.png`` tiles (coloured by their path) for XYZ sources. The COG host
serves files with HTTP range requests (206 and ``Content-Range``), as GDAL's
``/vsicurl/`` needs. Each server has its own request log (time, method, path, query) and fault queues
(``faults[path]``, played in order before normal answers, whatever the query string): ``ok``
(a normal answer), ``503``,
``429:<s>`` and ``429:date+<s>`` (Retry-After in seconds or as an HTTP date), ``html200`` (an
error page with status 200), ``json-error200`` (a STAC API error object with status 200),
``empty-page200`` (``{}`` with status 200), ``truncated`` (Content-Length says more) and ``truncated-no-length``,
``trickle`` (one byte per 20 ms, at most 100 bytes, then the connection closes), ``redirect:<url>``.

This overlaps the fault handler of test_http.py (moved to servers.py on another branch); they
differ in that each instance here keeps its own state, so two hosts can run at once.
"""

from __future__ import annotations

import email.utils
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from PIL import Image

CONFORMS = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
            "https://api.stacspec.org/v1.0.0/item-search#query", "https://api.stacspec.org/v1.0.0/item-search#sort",
            "https://api.stacspec.org/v1.0.0/collections"]


class Host(ThreadingHTTPServer):
    """One loopback host: its own request log, fault queues, files and (optionally) STAC API."""

    daemon_threads = True

    def __init__(self, files: Path | None = None, items: list[dict] | None = None,
                 conforms: list[str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.files, self.items, self.conforms = files, items, conforms or CONFORMS
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[float, str, str, str]] = []  # (time, method, path, query)
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ the STAC API

    def document(self, method: str, path: str, query: str, body: bytes) -> dict | None:
        if self.items is None:
            return None
        base = self.url
        link = {"type": "application/json"}
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


class _Handler(BaseHTTPRequestHandler):
    server: Host
    protocol_version = "HTTP/1.1"

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
            queue = srv.faults.get(path, [])
            fault = queue.pop(0) if queue and method != "HEAD" else "ok"
        doc = srv.document(method, path, query, body)
        if doc is not None:
            data, ctype = json.dumps(doc).encode(), "application/geo+json" if path == "/search" else "application/json"
        elif srv.files is not None and (srv.files / path.lstrip("/")).is_file():
            file = srv.files / path.lstrip("/")
            data, ctype = file.read_bytes(), "application/json" if file.suffix == ".json" else "image/tiff"
        elif path.endswith(".png"):  # an XYZ tile whose colour depends on its path
            seed = sum(path.encode()) % 256
            buf = io.BytesIO()
            Image.new("RGB", (64, 64), (seed, 255 - seed, 7)).save(buf, format="PNG")
            data, ctype = buf.getvalue(), "image/png"
        else:
            return self._send(404, b"not here", "text/plain")
        if fault == "ok":
            return self._ok(data, ctype, method == "HEAD")
        if fault == "503":
            return self._send(503, b"busy", "text/plain")
        if fault.startswith("429:"):
            wait = fault[4:]
            if wait.startswith("date+"):
                wait = email.utils.formatdate(time.time() + float(wait[5:]), usegmt=True)
            return self._send(429, b"slow down", "text/plain", {"Retry-After": wait})
        if fault == "json-error200":  # an API error body (code, description) sent with status 200
            return self._send(200, json.dumps({"code": "InternalServerError", "description": "try later"}).encode(),
                              "application/json")
        if fault == "empty-page200":  # valid JSON, but not an item collection
            return self._send(200, b"{}", "application/geo+json")
        if fault == "html200":
            return self._send(200, b"<html><body>Service unavailable, try later</body></html>", "text/html")
        if fault.startswith("redirect:"):
            return self._send(302, b"", "text/plain", {"Location": fault[len("redirect:"):]})
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Connection", "close")
        self.close_connection = True
        if fault in ("truncated", "trickle"):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "trickle":
            for i in range(min(len(data), 100)):  # bounded: at most 2 s
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(0.02)
        else:  # truncated, truncated-no-length
            self.wfile.write(data[: len(data) // 2])

    def _ok(self, data: bytes, ctype: str, head: bool) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and ctype == "image/tiff":
            start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
            return self._send(206, data[start:end + 1], ctype, {"Content-Range": f"bytes {start}-{end}/{len(data)}",
                                                               "Accept-Ranges": "bytes"}, head)
        return self._send(200, data, ctype, {"Accept-Ranges": "bytes"}, head)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def running(host: Host) -> Iterator[Host]:
    """``host`` serving on loopback for the block, then shut down and closed."""
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        host.shutdown()
        host.server_close()
        thread.join(timeout=10)
