"""Whole files and byte ranges over HTTP, verified before they are cached.

Both go through :func:`urp_data.net.http.read_with_retries` (paced, retried, one deadline) and
differ from :func:`urp_data.net.http.get` only in how a response is read and checked: a
download is streamed to a temporary file while hashed, a range must be answered 206 with the
range asked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from urp_data.errors import InputError
from urp_data.net import http
from urp_data.util.fs import atomic_write_bytes, default_mode

logger = logging.getLogger(__name__)

DOWNLOAD_MAX_BYTES = 32 * 2**30
"""Largest file :func:`download` accepts (32 GiB; the gridded global layers are 0.1-10 GB)."""
DOWNLOAD_DEADLINE_S = 6 * 3600.0
"""Total time for one :func:`download`, retries included: a trickling server cannot hold a build for ever."""
DOWNLOAD_TYPES = ("image/", "application/", "binary/")
"""Content types accepted for a downloaded file (GeoTIFF, zip, NetCDF, octet-stream): never ``text/html``."""


def download(url: str, sha256: str, min_interval_s: float = http.DEFAULT_MIN_INTERVAL_S,
             deadline_s: float | None = None) -> Path:
    """A file fetched once into ``CACHE_DIR/files/<sha256>/<its name>``, verified before it is kept.

    For large gridded layers that are read whole (a global raster, a zip of NetCDF files):
    streamed to a temporary file while hashed, so memory stays flat; renamed into the cache only
    when status, ``Content-Length``, content type and the ``sha256`` checksum all match. A
    truncated body is fetched again (``BODY_RETRIES``), and so is a body without ``Content-Length``
    whose checksum differs (it may have been cut off); a body of the declared length with another
    checksum is not (the provider changed the file: say so at once, before gigabytes are fetched twice).
    Keyed on the checksum, so a mirror with the same file is a cache hit.
    """
    digest = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InputError(f"sha256 of {http.redact(url)} must be 64 hexadecimal digits, got {sha256!r}")
    shown = http.redact(http.canonical_url(url))
    name = Path(urlsplit(url).path).name or "download"
    path = http.CACHE_DIR / "files" / digest / name
    if path.is_file():
        logger.debug("cache hit %s", shown)
        return path
    with http.one_flight(f"file:{digest}"):
        if path.is_file():
            return path
        deadline = time.monotonic() + (DOWNLOAD_DEADLINE_S if deadline_s is None else deadline_s)
        path.parent.mkdir(parents=True, exist_ok=True)

        def keep(resp: requests.Response) -> Path:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".tmp")
            try:
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as f:
                    http.check_type(resp, shown, DOWNLOAD_TYPES)
                    for chunk in http.stream_body(resp, shown, deadline, DOWNLOAD_MAX_BYTES):
                        h.update(chunk)
                        f.write(chunk)
                sized = resp.headers.get("Content-Length") is not None
                if h.hexdigest() != digest and not sized:  # without a length, a cut body looks complete
                    raise http.BadBody(f"{shown} does not match its sha256 and sent no Content-Length: maybe cut off")
                if h.hexdigest() != digest:
                    raise InputError(f"checksum mismatch for {shown}: expected sha256 {digest[:12]}..., got "
                                     f"{h.hexdigest()[:12]}...; the provider may have changed the file: check it "
                                     "and update sha256: in the region config")
                os.chmod(tmp, default_mode())
                os.replace(tmp, path)
                return path
            finally:
                Path(tmp).unlink(missing_ok=True)

        return http.read_with_retries(url, shown, min_interval_s, deadline, keep)


def get_range(url: str, start: int, length: int, min_interval_s: float = http.DEFAULT_MIN_INTERVAL_S,
              deadline_s: float | None = None) -> tuple[bytes, int]:
    """Bytes ``start`` to ``start + length - 1`` of ``url`` and the file's total size, from the cache when present.

    A range request (``Range: bytes=a-b``) must be answered 206 with a ``Content-Range`` that
    starts at ``a``, a body of the stated length and a content type that is not an HTML page;
    anything else (a 200 with a page or the whole file, a cut body) is fetched again and never
    cached. A host that does not serve ranges fails in one line that names ``mode: download``.
    """
    end = start + length - 1
    base = http.canonical_url(url)
    shown = http.redact(base)
    key = f"{base}#bytes={start}-{end}"
    path = http.cache_file(key)
    size_path = path.with_name(path.name + ".size")
    if path.is_file() and size_path.is_file():
        logger.debug("cache hit %s bytes %d-%d", shown, start, end)
        return path.read_bytes(), int(size_path.read_text())
    with http.one_flight(key):
        if path.is_file() and size_path.is_file():
            return path.read_bytes(), int(size_path.read_text())
        deadline = time.monotonic() + (http.DEADLINE_S if deadline_s is None else deadline_s)

        def read(resp: requests.Response) -> tuple[bytes, str]:
            if resp.status_code != 206:
                raise http.BadBody(f"{shown} answered a range request with HTTP {resp.status_code}, not 206 "
                                   "(if the host serves no ranges, use mode: download)")
            got = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", "").strip())
            if got is None or int(got[1]) != start:
                raise http.BadBody(f"{shown} sent Content-Range {resp.headers.get('Content-Range')!r} for bytes "
                                   f"{start}-{end}")
            http.check_type(resp, shown, DOWNLOAD_TYPES)
            body = http.read_body(resp, shown, deadline)
            if len(body) != int(got[2]) - start + 1:
                raise http.BadBody(f"{shown} is truncated: {len(body)} of {int(got[2]) - start + 1} bytes")
            return body, got[3]

        body, total = http.read_with_retries(url, shown, min_interval_s, deadline, read,
                                             headers={"Range": f"bytes={start}-{end}"}, ok=(200, 206))
        atomic_write_bytes(size_path, total.encode())
        atomic_write_bytes(path, body)
        return body, int(total)
