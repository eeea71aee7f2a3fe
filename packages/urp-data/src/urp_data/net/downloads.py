"""Whole files and byte ranges over HTTP, verified before they are cached.

Both go through :func:`urp_data.net.http.read_with_retries` (paced, retried, one deadline) and
differ from :func:`urp_data.net.http.get` only in how a response is read and checked: a
download is streamed to a temporary file while hashed, a range is answered 206 with the range
asked for, or 200 with the whole file by a host that ignores ``Range`` (then kept like a download).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from urp_data.errors import InputError
from urp_data.net import hosts, http
from urp_data.net.body import BadBody, check_type, read_body, stream_body
from urp_data.util.fs import atomic_write_bytes, default_mode

logger = logging.getLogger(__name__)

DOWNLOAD_MAX_BYTES = 32 * 2**30
"""Largest file :func:`download` accepts (32 GiB; the gridded global layers are 0.1-10 GB)."""
DOWNLOAD_DEADLINE_S = 6 * 3600.0
"""Total time for one :func:`download`, retries included: a trickling server cannot hold a build for ever."""
DOWNLOAD_TYPES = ("image/", "application/", "binary/")
"""Content types accepted for a downloaded file (GeoTIFF, zip, NetCDF, octet-stream): never ``text/html``."""


def sha256_digest(sha256: object, url: str) -> str:
    """A configured ``sha256:`` of ``url``, lower-cased; anything but 64 hex digits fails here."""
    digest = str(sha256).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InputError(f"sha256 of {http.redact(url)} must be 64 hexadecimal digits, got {sha256!r}")
    return digest


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
    digest = sha256_digest(sha256, url)
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
            def check(got: str) -> None:
                if got != digest and resp.headers.get("Content-Length") is None:  # a cut body looks complete
                    raise BadBody(f"{shown} does not match its sha256 and sent no Content-Length: maybe cut off")
                if got != digest:
                    raise InputError(f"checksum mismatch for {shown}: expected sha256 {digest[:12]}..., got "
                                     f"{got[:12]}...; the provider may have changed the file: check it "
                                     "and update sha256: in the region config")

            _stream_into(resp, path, shown, deadline, check)
            return path

        return http.read_with_retries(url, shown, min_interval_s, deadline, keep)


def _stream_into(resp: requests.Response, path: Path, shown: str, deadline: float,
                 check: Callable[[str], None]) -> str:
    """Stream a checked body (type, length, ``DOWNLOAD_MAX_BYTES``, ``deadline``) to a temporary file
    next to ``path`` while hashing it; ``check(sha256)`` raises to keep nothing, else the file is
    renamed to ``path``. Returns the body's sha256."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            check_type(resp, shown, DOWNLOAD_TYPES)
            for chunk in stream_body(resp, shown, deadline, DOWNLOAD_MAX_BYTES):
                h.update(chunk)
                f.write(chunk)
        check(h.hexdigest())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
        return h.hexdigest()
    finally:
        Path(tmp).unlink(missing_ok=True)


class RangesIgnored(Exception):
    """Raised while :func:`whole_files_deferred` is on, when a host answers a range request with the
    whole file: ``advertised`` is its ``Content-Length`` in bytes (None when it sent none)."""

    def __init__(self, url: str, advertised: int | None) -> None:
        super().__init__(f"{url} ignores Range")
        self.advertised = advertised


_deferring = [False]  # set by whole_files_deferred


@contextmanager
def whole_files_deferred() -> Iterator[None]:
    """Within this block a host that ignores ``Range`` raises :class:`RangesIgnored` instead of
    being downloaded whole: ``--dry-run`` counts the download and sends nothing more."""
    _deferring[0] = True
    try:
        yield
    finally:
        _deferring[0] = False


@dataclass(frozen=True)
class WholeFile:
    """A remote file downloaded whole because its host ignored ``Range``: where it is, its sha256, and
    whether that checksum was the one the config gave (else it is the checksum first seen)."""

    path: Path
    sha256: str
    checked: bool


def whole_file(url: str) -> WholeFile | None:
    """The cached whole copy of ``url`` kept by :func:`get_range` when its host ignored ``Range``, if any."""
    folder = _whole_folder(http.canonical_url(url))
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    path = folder / meta["name"]
    return WholeFile(path, meta["sha256"], meta["checked"]) if path.is_file() else None


def _whole_folder(base: str) -> Path:
    return http.CACHE_DIR / "files" / "by-url" / hashlib.sha256(base.encode()).hexdigest()


def _keep_whole(resp: requests.Response, base: str, shown: str, sha256: str | None) -> WholeFile:
    """Stream a 200 answer to a range request (the whole file) into the cache, checked against
    ``sha256`` when given; logged once, since later ranges of the file are read from the copy."""
    declared = resp.headers.get("Content-Length")
    if _deferring[0]:
        raise RangesIgnored(shown, int(declared) if declared and declared.isdigit() else None)
    logger.warning("%s ignores Range (answered 200 with the whole file, %s bytes): downloading it once into "
                   "the cache and reading it there", shown, declared or "an unknown number of")
    folder = _whole_folder(base)
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(urlsplit(base).path).name or "download"

    def check(got: str) -> None:
        if sha256 is not None and got != sha256:
            raise InputError(f"checksum mismatch for {shown} (downloaded whole: its host ignores Range): expected "
                             f"sha256 {sha256[:12]}..., got {got[:12]}...; check the file and update sha256:")

    got = _stream_into(resp, folder / name, shown, time.monotonic() + DOWNLOAD_DEADLINE_S, check)
    whole = WholeFile(folder / name, got, sha256 is not None)
    atomic_write_bytes(folder / "meta.json", json.dumps({"name": name, "sha256": whole.sha256,
                                                         "checked": whole.checked}).encode())
    return whole


def _slice(whole: WholeFile, start: int, length: int) -> tuple[bytes, int]:
    with whole.path.open("rb") as f:
        f.seek(start)
        return f.read(length), whole.path.stat().st_size


def get_range(url: str, start: int, length: int, min_interval_s: float = http.DEFAULT_MIN_INTERVAL_S,
              deadline_s: float | None = None, sha256: str | None = None) -> tuple[bytes, int]:
    """Bytes ``start`` to ``start + length - 1`` of ``url`` and the file's total size, from the cache when present.

    A range request (``Range: bytes=a-b``, ``Accept-Encoding: identity`` so the offsets are the
    file's) must be answered 206 with a ``Content-Range`` that starts at ``a``, a body of the
    stated length and a content type that is not an HTML page; a cut body is fetched again and
    never cached. A host that ignores ``Range`` and answers 200 with the whole file (data.worldpop.org
    does; its policy in :mod:`urp_data.net.hosts` says so, and it is sent no Range at all) is not an error: the file is streamed into the cache once (at most ``DOWNLOAD_MAX_BYTES``,
    checked against ``sha256`` when given) and every range is read from that copy.
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
    if (whole := whole_file(url)) is not None:
        return _slice(whole, start, length)
    with http.one_flight(key), http.one_flight(f"whole:{base}"):
        if path.is_file() and size_path.is_file():
            return path.read_bytes(), int(size_path.read_text())
        if (whole := whole_file(url)) is not None:
            return _slice(whole, start, length)
        deadline = time.monotonic() + (http.DEADLINE_S if deadline_s is None else deadline_s)

        def read(resp: requests.Response) -> tuple[bytes, str] | WholeFile:
            if resp.status_code == 200:
                return _keep_whole(resp, base, shown, sha256)
            got = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", "").strip())
            if got is None or int(got[1]) != start:
                raise BadBody(f"{shown} sent Content-Range {resp.headers.get('Content-Range')!r} for bytes "
                                   f"{start}-{end}")
            check_type(resp, shown, DOWNLOAD_TYPES)
            body = read_body(resp, shown, deadline)
            if len(body) != int(got[2]) - start + 1:
                raise BadBody(f"{shown} is truncated: {len(body)} of {int(got[2]) - start + 1} bytes")
            return body, got[3]

        policy = hosts.policy(base)
        ask = {"Range": f"bytes={start}-{end}"} if policy is None or policy.ranges else {}  # known to ignore it
        answer = http.read_with_retries(url, shown, min_interval_s, deadline, read, ok=(200, 206),
                                        headers={**ask, "Accept-Encoding": "identity"})
        if isinstance(answer, WholeFile):
            return _slice(answer, start, length)
        body, total = answer
        atomic_write_bytes(size_path, total.encode())
        atomic_write_bytes(path, body)
        return body, int(total)
