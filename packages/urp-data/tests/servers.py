"""Loopback HTTP servers for the tests and benchmarks of urp-data's network sources.

:class:`Faulty` serves generated PNG tiles (``*.png``), JSON (anything else) and the files of a
folder (with HTTP range requests, as COG hosts do), and plays the faults that the issue names
before the good answer: 429 with ``Retry-After`` (seconds or an HTTP date), 503 bursts, HTML
error pages sent with status 200, truncated bodies with and without ``Content-Length``, slow
trickles and redirects. It can add a fixed latency to every answer and records how many
requests it was answering at once. Only ever bound to 127.0.0.1.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

from PIL import Image


def png(path: str) -> bytes:
    """A 64 x 64 PNG whose colour depends on the path, so a wrong tile shows."""
    seed = sum(path.encode()) % 256
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (seed, 255 - seed, 7)).save(buf, format="PNG")
    return buf.getvalue()


class Faulty(BaseHTTPRequestHandler):
    """Serves PNGs (``*.png``) and JSON (anything else); ``faults[path]`` lists faults to play first, in order."""

    faults: ClassVar[dict[str, list[str]]] = {}
    log: ClassVar[list[tuple[float, str]]] = []
    agents: ClassVar[list[str]] = []
    files: ClassVar[Path | None] = None  # also serves the files under this folder, with range requests (COGs)
    latency_s: ClassVar[float] = 0.0  # injected before every answer: a round trip to a distant host
    in_flight: ClassVar[list[tuple[float, int]]] = []  # (time, requests being answered after it changed)
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
        Faulty.log.append((time.time(), "HEAD " + self.path))
        Faulty.agents.append(self.headers.get("User-Agent", ""))
        self._file(head=True)

    def do_POST(self):  # a STAC API search: the request body is read and ignored (one result page)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    def do_GET(self):
        if Faulty.latency_s:
            time.sleep(Faulty.latency_s)
        Faulty.log.append((time.time(), self.path))
        Faulty.agents.append(self.headers.get("User-Agent", ""))
        path = self.path.split("?")[0]
        queue = Faulty.faults.get(path, [])
        fault = queue.pop(0) if queue else "ok"
        if fault == "ok" and self._file():
            return
        served = (Faulty.files / path.lstrip("/")) if Faulty.files else None
        if served is not None and served.is_file():  # a fault on a served file cuts or trickles the file itself
            body = served.read_bytes()
            ctype = "application/json" if served.suffix == ".json" or served.name == "search" else "image/tiff"
        else:
            body = png(path) if path.endswith(".png") else json.dumps({"path": path}).encode()
            ctype = "image/png" if path.endswith(".png") else "application/json"
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
            for i in range(min(len(body), 100)):  # bounded: at most 5 s
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        elif fault.startswith("redirect:"):
            self.send_response(302)
            self.send_header("Location", fault[len("redirect:"):])
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _file(self, head=False) -> bool:
        """Serve a file of ``files`` (a 206 for ``Range: bytes=a-b``); False when there is none."""
        path = (Faulty.files / self.path.split("?")[0].lstrip("/")) if Faulty.files else None
        if path is None or not path.is_file():
            if head:
                self._send(404, b"", "text/plain")
            return False
        data = path.read_bytes()
        ctype = "application/json" if path.suffix == ".json" or path.name == "search" else "image/tiff"
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
            self._send(206, data[start:end + 1], ctype, {"Content-Range": f"bytes {start}-{end}/{len(data)}",
                                                        "Accept-Ranges": "bytes"}, head)
        else:
            self._send(200, data, ctype, {"Accept-Ranges": "bytes"}, head)
        return True

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


@contextmanager
def serve() -> Iterator[str]:
    """Run :class:`Faulty` on 127.0.0.1 (a free port) with empty faults and logs, no files and no latency;
    yields its base URL, then stops it."""
    Faulty.faults, Faulty.log, Faulty.agents, Faulty.in_flight = {}, [], [], []
    Faulty.files, Faulty.latency_s = None, 0.0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Faulty)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)
