"""The one place urp-data talks to the network: XYZ tiles, STAC catalogs and APIs, GDAL's /vsicurl/.

As in osmnx's ``_http``: a deterministic cache key, the cache checked before the polite pause,
only good responses cached, retries with backoff on 429/5xx, a User-Agent that names the
project, and a log line per request and per cache hit. On top of that, because a cache that
keeps one bad response keeps it forever:

- a body is cached only after it passed every check: status 200, a ``Content-Length`` that
  matches (a truncated body is a failure), the content type the caller expects (an HTML error
  page sent with status 200 is not a tile), and the caller's decode check (an image must
  decode, JSON must parse);
- retries are urllib3's ``Retry`` (429/500/502/503/504, exponential backoff capped at
  ``BACKOFF_MAX_S``; ``Retry-After`` honoured in seconds and HTTP-date form, capped at
  ``RETRY_AFTER_MAX_S``); a body that fails a check is fetched again up to ``BODY_RETRIES`` times;
- every request has a total deadline (``DEADLINE_S``, retries and waits included), so a server
  that trickles one byte at a time cannot hold a build; bodies over ``MAX_BYTES`` are refused;
- redirects stay within http(s) and never go from https to http;
- errors that no retry can fix (a scheme other than http(s), a malformed URL, a 4xx other
  than 429) fail at once with one line (:class:`urp_data.errors.InputError`);
- secrets in query strings (``key=``, ``token=``, ``access_token=``, ``apikey=``, ``sig=`` ...)
  and passwords in URLs are redacted from logs, errors and the manifest (:func:`redact`).

Politeness is per host and shared by every worker process of a build: send times are handed
out from a small slot file per host under the cache folder, under a file lock (so a limit of
1 request/s holds for ``--workers 4`` as a whole); under the Ray engine one named actor does
the same for the cluster (:func:`set_pacer`). Each source sets its own ``min_interval_s``;
the defaults follow the providers' usage policies:

=====================================  =========================================
source                                 default ``min_interval_s`` (seconds)
=====================================  =========================================
XYZ tile server (``type: xyz``)        0.1 (set 1.0 or more for tile.openstreetmap.org)
STAC catalogs and APIs                 ``STAC_MIN_INTERVAL_S`` = 0.1
anything else (:func:`get`)            ``DEFAULT_MIN_INTERVAL_S`` = 1.0
=====================================  =========================================

Settings from the environment: ``URP_CACHE_DIR`` (the cache root; responses go under ``http/``),
``URP_USER_AGENT``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from urp_data.errors import InputError
from urp_data.util.fs import atomic_write_bytes, cache_dir, default_mode, one_line

logger = logging.getLogger(__name__)

USER_AGENT = os.environ.get("URP_USER_AGENT", "urp-data/0.1 (+https://github.com/urp-project/urp)")
CACHE_DIR = cache_dir("http")
RETRIES = 4
"""Retries of a request answered 429/500/502/503/504 or failing to connect (urllib3 ``Retry``)."""
BODY_RETRIES = 2
"""Further tries of a request whose body failed a check (truncated, wrong type, undecodable)."""
BACKOFF_FACTOR = 0.5
"""urllib3 backoff: waits of 0.5, 1, 2, 4 ... seconds between retries, capped at ``BACKOFF_MAX_S``."""
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 60
"""A server's ``Retry-After`` is honoured up to this many seconds."""
CONNECT_TIMEOUT_S = 10.0
DEADLINE_S = 120.0
"""Total time for one :func:`get`, retries, waits and the whole body included."""
MAX_BYTES = 64 * 2**20
"""Largest body accepted (64 MiB); a bigger one is refused before it fills memory."""
MAX_REDIRECTS = 5
DEFAULT_MIN_INTERVAL_S = 1.0
STAC_MIN_INTERVAL_S = 0.1
RETRY_STATUS = (429, 500, 502, 503, 504)
SECRET_PARAMS = frozenset({"key", "apikey", "api_key", "token", "access_token", "auth", "sig", "signature",
                           "password", "secret", "client_secret", "x-amz-signature", "x-amz-credential",
                           "x-amz-security-token"})
"""Query parameters whose values never reach a log, an error or the manifest (``sig``: Azure SAS tokens)."""


class Pacer:
    """Per-host politeness: hands out send times at least ``min_interval_s`` apart for each host.

    Under the Ray engine one named actor of this class paces every worker of the cluster
    (:func:`set_pacer`, :mod:`urp_data.build.engines.ray`), so a host's limit holds for the whole build,
    not per worker; processes on one machine share :func:`file_reserve` instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def reserve_at(self, host: str, min_interval_s: float) -> float:
        """Reserve the next free slot for ``host``; returns its send time (wall-clock seconds).

        A time, not a wait: a worker that asks a Ray actor gets the answer after a round trip of
        varying length, and a wait counted from the actor's clock would shift each send by that
        round trip (two sends could fall closer than ``min_interval_s``).
        """
        with self._lock:
            slot = max(time.time(), self._next.get(host, 0.0))
            self._next[host] = slot + min_interval_s
            return slot


def file_reserve(host: str, min_interval_s: float) -> float:
    """The seconds to wait for ``host``'s next slot (like :meth:`Pacer.reserve_at`), shared by every
    process that uses the same cache folder.

    The next free send time of ``host`` (wall-clock seconds, since processes share no monotonic
    clock) lives in ``CACHE_DIR/.pace/<hash of host>``, read and advanced under a file lock.
    """
    if min_interval_s <= 0:
        return 0.0
    from filelock import FileLock

    folder = CACHE_DIR / ".pace"
    folder.mkdir(parents=True, exist_ok=True)
    slot_file = folder / hashlib.sha256(host.encode()).hexdigest()[:32]
    with FileLock(str(slot_file) + ".lock"):
        now = time.time()
        try:
            booked = float(slot_file.read_text() or 0.0)
        except (OSError, ValueError):
            booked = 0.0
        slot = max(now, booked)
        slot_file.write_text(repr(slot + min_interval_s))  # under the lock: no reader sees it half written
    return slot - now


_reserve: Callable[[str, float], float] = file_reserve


def set_pacer(reserve: Callable[[str, float], float]) -> None:
    """Route this process's politeness pauses through ``reserve(host, min_interval_s) -> seconds``."""
    global _reserve
    _reserve = reserve


_SECRET_NAMES = "|".join(map(re.escape, sorted(SECRET_PARAMS)))
_SECRET_RE = re.compile(rf"(?i)([?&;](?:{_SECRET_NAMES})=)[^&#;\s'\"]*")
_PASSWORD_RE = re.compile(r"(://[^/\s:@]*:)[^/\s@]*@")


def redact(text: str) -> str:
    """``text`` (a URL, or a message that contains URLs) with secret query values and passwords as ``***``."""
    return _PASSWORD_RE.sub(r"\1***@", _SECRET_RE.sub(r"\1***", text))


def canonical_url(url: str, params: Mapping[str, Any] | None = None) -> str:
    """``url`` with ``params`` merged into its query, parameters sorted, scheme and host lower-cased.

    Raises InputError at once for what no retry can fix: a scheme other than http(s) or no host.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        _ = parts.port  # a malformed port raises here
    except ValueError as exc:
        raise InputError(f"malformed URL {redact(url)}: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise InputError(f"cannot fetch {redact(url)}: only http:// and https:// URLs are fetched")
    if not host:
        raise InputError(f"malformed URL {redact(url)}: it names no host")
    query = sorted(parse_qsl(parts.query, keep_blank_values=True) + [(k, str(v)) for k, v in (params or {}).items()])
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", urlencode(query), ""))


def cache_path(url: str, params: Mapping[str, Any] | None = None) -> Path:
    """Where the response to ``url`` (with ``params``) is cached: sha256 of its canonical form."""
    return _cache_file(canonical_url(url, params))


def _cache_file(key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return CACHE_DIR / digest[:2] / digest


def _pace(host: str, min_interval_s: float) -> None:
    """Wait for ``host``'s next politeness slot (shared by every process of the build)."""
    wait = _reserve(host, min_interval_s)
    if wait > 0:
        time.sleep(wait)


def wait_turn(url: str, min_interval_s: float) -> None:
    """Wait for a politeness slot of ``url``'s host for a read this module does not send itself.

    GDAL's ``/vsicurl/`` range reads of a COG bypass :class:`PoliteSession`; a source calls this
    once before each such read so the reads of all workers together keep the host's pace.
    """
    _pace(_host(url), min_interval_s)


def _host(url: str) -> str:
    """``host:port`` of ``url`` (default port filled in): the unit of politeness."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class _PacedRetry(Retry):
    """urllib3's ``Retry`` whose retries of a response also wait for a politeness slot of their host.

    urllib3 retries inside one ``send``, out of sight of :class:`PoliteSession`; without this a
    503 burst would be retried at the backoff's pace rather than the host's limit.
    """

    min_interval_s = 0.0

    def new(self, **kw: Any) -> _PacedRetry:
        retry = super().new(**kw)
        retry.min_interval_s = self.min_interval_s
        return retry

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        pool = getattr(response, "_pool", None)  # urllib3 sets it on every response of a pool
        if pool is not None:
            _pace(f"{pool.host}:{pool.port}", self.min_interval_s)


class PoliteSession(requests.Session):
    """A pooled ``requests.Session`` with urllib3 retries, per-host pacing and guarded redirects.

    Third-party clients (pystac-client's ``StacApiIO``) can be handed one: their requests are
    then paced and retried like ours, and their redirects checked the same way.
    """

    def __init__(self, min_interval_s: float = DEFAULT_MIN_INTERVAL_S) -> None:
        super().__init__()
        self.min_interval_s = min_interval_s
        self.max_redirects = MAX_REDIRECTS
        self.headers["User-Agent"] = USER_AGENT
        retry = _PacedRetry(total=RETRIES, connect=RETRIES, read=2, redirect=0, status=RETRIES,
                      status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET", "HEAD", "POST"}),
                      backoff_factor=BACKOFF_FACTOR, backoff_max=BACKOFF_MAX_S,
                      respect_retry_after_header=True, retry_after_max=RETRY_AFTER_MAX_S,
                      raise_on_status=False, raise_on_redirect=False)
        retry.min_interval_s = min_interval_s
        adapter = HTTPAdapter(max_retries=retry, pool_connections=8, pool_maxsize=16)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        _pace(_host(request.url or ""), self.min_interval_s)
        logger.info("%s %s", request.method, redact(request.url or ""))
        return super().send(request, **kwargs)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """The redirect's target, refused when it leaves http(s) or goes from https to http."""
        target = super().get_redirect_target(resp)
        if target is None:
            return None
        new = urlsplit(urljoin(resp.url, target)).scheme.lower()
        old = urlsplit(resp.url).scheme.lower()
        if new not in ("http", "https") or (old == "https" and new == "http"):
            raise InputError(f"{redact(resp.url)} redirects to a {new}:// URL; only http(s) redirects are "
                             "followed, never from https to http")
        return target


_sessions = threading.local()


def session(min_interval_s: float = DEFAULT_MIN_INTERVAL_S) -> PoliteSession:
    """This thread's session for sources paced at ``min_interval_s`` (connections are pooled per session)."""
    cache: dict[tuple[float, ...], PoliteSession] = _sessions.__dict__.setdefault("by_settings", {})
    # Keyed on the process (a forked worker must not share its parent's pooled sockets) and on
    # the retry settings, so that changing a module setting takes effect.
    key = (os.getpid(), min_interval_s, RETRIES, BACKOFF_FACTOR, BACKOFF_MAX_S, RETRY_AFTER_MAX_S)
    if key not in cache:
        cache[key] = PoliteSession(min_interval_s)
    return cache[key]


class _BadBody(Exception):
    """A response whose body failed a check; worth one more try, never cached."""


def _stream_body(resp: requests.Response, shown: str, deadline: float, max_bytes: int) -> Iterator[bytes]:
    """The body chunk by chunk, checked against ``Content-Length``, ``max_bytes`` and the deadline."""
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise InputError(f"{shown} is {int(declared)} bytes, over the {max_bytes}-byte limit")
    size = 0
    try:
        while chunk := resp.raw.read1(65536, decode_content=True):
            size += len(chunk)
            if size > max_bytes:
                raise InputError(f"{shown} sent more than the {max_bytes}-byte limit")
            if time.monotonic() > deadline:
                raise _BadBody(f"{shown} was still sending at the request's deadline")
            yield chunk
    except requests.exceptions.RequestException as exc:
        raise _BadBody(f"{shown} broke off: {one_line(exc)}") from exc
    except Exception as exc:  # urllib3's ProtocolError/IncompleteRead: a truncated body
        if isinstance(exc, (InputError, _BadBody)):
            raise
        raise _BadBody(f"{shown} broke off: {one_line(exc)}") from exc
    encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if declared is not None and not encoded and declared.isdigit() and int(declared) != size:
        raise _BadBody(f"{shown} is truncated: {size} of {declared} bytes")


def _read_body(resp: requests.Response, shown: str, deadline: float) -> bytes:
    """The whole body in memory (at most ``MAX_BYTES``), checked as :func:`_stream_body` does."""
    return b"".join(_stream_body(resp, shown, deadline, MAX_BYTES))


def _send(url: str, shown: str, min_interval_s: float, params: Mapping[str, Any] | None,
          remaining: float, headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> requests.Response:
    """A paced, retried, streaming GET; a status not in ``ok`` is an InputError that says what to do."""
    try:
        # The URL as given (a signed URL must keep its encoding); the sorted form is only the cache key.
        resp = session(min_interval_s).get(url, params=params, stream=True, headers=headers,
                                           timeout=(CONNECT_TIMEOUT_S, min(remaining, 30.0)))
    except InputError:
        raise
    except requests.exceptions.InvalidURL as exc:
        raise InputError(f"malformed URL {shown}: {one_line(exc)}") from exc
    except requests.RequestException as exc:
        raise InputError(f"cannot fetch {shown}: {redact(one_line(exc))}") from exc
    if resp.status_code not in ok:
        resp.close()
        hint = "the server is overloaded or limiting us" if resp.status_code in RETRY_STATUS else \
            "check the URL and the server's usage policy"
        retried = f" after {RETRIES} retries" if resp.status_code in RETRY_STATUS else ""
        raise InputError(f"{shown} answered HTTP {resp.status_code}{retried}; {hint}")
    return resp


def _check_type(resp: requests.Response, shown: str, content_types: tuple[str, ...] | None) -> None:
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_types and not ctype.startswith(content_types):
        raise _BadBody(f"{shown} sent {ctype or 'no content type'}, not {' or '.join(content_types)}")


_flight_lock = threading.Lock()
_flights: dict[str, list[Any]] = {}  # cache key -> [lock, number of threads holding or waiting]


@contextmanager
def _one_flight(key: str) -> Iterator[None]:
    """One request at a time per cache key in this process.

    Chips read concurrently share tiles; the second thread to want a tile waits for the first
    and then finds it in the cache, so concurrency sends no request that a sequential build
    would not send.
    """
    with _flight_lock:
        entry = _flights.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _flight_lock:
            entry[1] -= 1
            if entry[1] == 0:
                del _flights[key]


def get(url: str, min_interval_s: float = DEFAULT_MIN_INTERVAL_S, params: Mapping[str, Any] | None = None,
        content_types: tuple[str, ...] | None = None, check: Callable[[bytes], object] | None = None,
        deadline_s: float | None = None, cache: bool = True) -> bytes:
    """The body of a GET on ``url`` (plus query ``params``), from the cache when present.

    ``content_types`` are accepted ``Content-Type`` prefixes (e.g. ``("image/",)``); ``check``
    raises on a body that does not decode. Only a body that passes both is cached. Waits
    ``min_interval_s`` per host between sends, shared by every process of the build.
    ``cache=False`` is for answers that change from one call to the next (a server's status):
    neither read from nor written to the cache, checked all the same.
    """
    key = canonical_url(url, params)
    shown = redact(key)
    path = cache_path(url, params)
    if cache and path.is_file():
        logger.debug("cache hit %s", shown)
        return path.read_bytes()
    with _one_flight(key):
        if cache and path.is_file():  # another thread of this process fetched it meanwhile
            logger.debug("cache hit %s", shown)
            return path.read_bytes()
        body = _fetch(url, shown, min_interval_s, params, content_types, check,
                      time.monotonic() + (DEADLINE_S if deadline_s is None else deadline_s))
        if cache:
            atomic_write_bytes(path, body)
        return body


def _fetch(url: str, shown: str, min_interval_s: float, params: Mapping[str, Any] | None,
           content_types: tuple[str, ...] | None, check: Callable[[bytes], object] | None, deadline: float) -> bytes:
    """The checked body of ``url``; a body that fails a check is fetched again (``BODY_RETRIES``)."""
    failure = ""
    for _ in range(1 + BODY_RETRIES):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        with _send(url, shown, min_interval_s, params, remaining) as resp:
            try:
                body = _read_body(resp, shown, deadline)
                _check_type(resp, shown, content_types)
                if check is not None:
                    try:
                        check(body)
                    except Exception as exc:  # the caller's decoder: any failure means a bad body
                        raise _BadBody(f"{shown} sent a body that does not decode: {one_line(exc)}") from exc
            except _BadBody as exc:
                failure = str(exc)
                logger.warning("%s; trying again", failure)
                continue
        return body
    raise InputError(failure or f"cannot fetch {shown} before the request's deadline")


DOWNLOAD_MAX_BYTES = 32 * 2**30
"""Largest file :func:`download` accepts (32 GiB; the gridded global layers are 0.1-10 GB)."""
DOWNLOAD_DEADLINE_S = 6 * 3600.0
"""Total time for one :func:`download`, retries included: a trickling server cannot hold a build for ever."""
DOWNLOAD_TYPES = ("image/", "application/", "binary/")
"""Content types accepted for a downloaded file (GeoTIFF, zip, NetCDF, octet-stream): never ``text/html``."""


def download(url: str, sha256: str, min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
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
        raise InputError(f"sha256 of {redact(url)} must be 64 hexadecimal digits, got {sha256!r}")
    shown = redact(canonical_url(url))
    name = Path(urlsplit(url).path).name or "download"
    path = CACHE_DIR / "files" / digest / name
    if path.is_file():
        logger.debug("cache hit %s", shown)
        return path
    with _one_flight(f"file:{digest}"):
        if path.is_file():
            return path
        deadline = time.monotonic() + (DOWNLOAD_DEADLINE_S if deadline_s is None else deadline_s)
        path.parent.mkdir(parents=True, exist_ok=True)
        failure = ""
        for _ in range(1 + BODY_RETRIES):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".tmp")
            try:
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as f, _send(url, shown, min_interval_s, None, remaining) as resp:
                    _check_type(resp, shown, DOWNLOAD_TYPES)
                    for chunk in _stream_body(resp, shown, deadline, DOWNLOAD_MAX_BYTES):
                        h.update(chunk)
                        f.write(chunk)
                    sized = resp.headers.get("Content-Length") is not None
                if h.hexdigest() != digest and not sized:  # without a length, a cut body looks complete
                    raise _BadBody(f"{shown} does not match its sha256 and sent no Content-Length: maybe cut off")
                if h.hexdigest() != digest:
                    raise InputError(f"checksum mismatch for {shown}: expected sha256 {digest[:12]}..., got "
                                     f"{h.hexdigest()[:12]}...; the provider may have changed the file: check it "
                                     "and update sha256: in the region config")
                os.chmod(tmp, default_mode())
                os.replace(tmp, path)
                return path
            except _BadBody as exc:
                failure = str(exc)
                logger.warning("%s; trying again", failure)
            finally:
                Path(tmp).unlink(missing_ok=True)
        raise InputError(failure or f"cannot fetch {shown} before the download's deadline")


def get_range(url: str, start: int, length: int, min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
              deadline_s: float | None = None) -> tuple[bytes, int]:
    """Bytes ``start`` to ``start + length - 1`` of ``url`` and the file's total size, from the cache when present.

    A range request (``Range: bytes=a-b``) must be answered 206 with a ``Content-Range`` that
    starts at ``a``, a body of the stated length and a content type that is not an HTML page;
    anything else (a 200 with a page or the whole file, a cut body) is fetched again and never
    cached. A host that does not serve ranges fails in one line that names ``mode: download``.
    """
    end = start + length - 1
    base = canonical_url(url)
    shown = redact(base)
    key = f"{base}#bytes={start}-{end}"
    path = _cache_file(key)
    size_path = path.with_name(path.name + ".size")
    if path.is_file() and size_path.is_file():
        logger.debug("cache hit %s bytes %d-%d", shown, start, end)
        return path.read_bytes(), int(size_path.read_text())
    with _one_flight(key):
        if path.is_file() and size_path.is_file():
            return path.read_bytes(), int(size_path.read_text())
        deadline = time.monotonic() + (DEADLINE_S if deadline_s is None else deadline_s)
        failure = ""
        for _ in range(1 + BODY_RETRIES):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with _send(url, shown, min_interval_s, None, remaining, {"Range": f"bytes={start}-{end}"},
                       ok=(200, 206)) as resp:
                try:
                    if resp.status_code != 206:
                        raise _BadBody(f"{shown} answered a range request with HTTP {resp.status_code}, not 206 "
                                       "(if the host serves no ranges, use mode: download)")
                    got = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", "").strip())
                    if got is None or int(got[1]) != start:
                        raise _BadBody(f"{shown} sent Content-Range {resp.headers.get('Content-Range')!r} for bytes "
                                       f"{start}-{end}")
                    _check_type(resp, shown, DOWNLOAD_TYPES)
                    body = _read_body(resp, shown, deadline)
                    if len(body) != int(got[2]) - start + 1:
                        raise _BadBody(f"{shown} is truncated: {len(body)} of {int(got[2]) - start + 1} bytes")
                except _BadBody as exc:
                    failure = str(exc)
                    logger.warning("%s; trying again", failure)
                    continue
            atomic_write_bytes(size_path, got[3].encode())
            atomic_write_bytes(path, body)
            return body, int(got[3])
        raise InputError(failure or f"cannot fetch {shown} before the request's deadline")


def gdal_options() -> dict[str, Any]:
    """GDAL settings for its own remote reads (``/vsicurl/``, COGs in STAC): timeouts, retries, User-Agent.

    Used as ``rasterio.Env(**gdal_options())`` around every open and read of a remote raster.
    """
    return {
        "GDAL_HTTP_USERAGENT": USER_AGENT,
        "GDAL_HTTP_CONNECTTIMEOUT": int(CONNECT_TIMEOUT_S),
        "GDAL_HTTP_TIMEOUT": 30,
        "GDAL_HTTP_MAX_RETRY": RETRIES,
        "GDAL_HTTP_RETRY_DELAY": BACKOFF_FACTOR,
        "GDAL_HTTP_RETRY_CODES": ",".join(map(str, RETRY_STATUS)),
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per COG
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    }
