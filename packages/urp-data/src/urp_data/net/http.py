"""The one place urp-data talks to the network: XYZ tiles, STAC catalogs and APIs, GDAL's /vsicurl/.

As in osmnx's ``_http``: a deterministic cache key, the cache checked before the polite pause,
only good responses cached, retries with backoff on 429/5xx, a User-Agent that names the
project, and a log line per request and per cache hit. On top of that, because a cache that
keeps one bad response keeps it forever:

- a body is cached only after it passed every check: status 200, the checks of its reading
  (:mod:`urp_data.net.body`: a ``Content-Length`` that matches, the content type the caller
  expects, no more than ``MAX_BYTES``) and the caller's decode check (an image must decode,
  JSON must parse);
- retries are urllib3's ``Retry`` (429/500/502/503/504, exponential backoff capped at
  ``BACKOFF_MAX_S``; ``Retry-After`` honoured in seconds and HTTP-date form, capped at
  ``RETRY_AFTER_MAX_S``; a 429 without it waits for the host's documented window,
  :mod:`urp_data.net.hosts`); a body that fails a check is fetched again up to ``BODY_RETRIES`` times;
- every request has a total deadline (``DEADLINE_S``, retries and every wait included), so a server
  that trickles one byte at a time cannot hold a build;
- redirects stay within http(s) and never go from https to http;
- errors that no retry can fix (a scheme other than http(s), a malformed URL, a 4xx other
  than 429) fail at once with one line (:class:`urp_data.errors.InputError`);
- secrets in query strings (``key=``, ``token=``, ``access_token=``, ``apikey=``, ``sig=`` ...)
  and passwords in URLs are redacted from logs, errors and the manifest (:func:`redact`);
- every send, retries included, waits for its host's politeness slot, shared by every worker
  process of a build (:mod:`urp_data.net.pacing`, which lists each source's default pace).

Settings from the environment (:mod:`urp_data.util.settings`): ``URP_CACHE_DIR`` (the cache root;
responses go under ``http/``), ``URP_USER_AGENT``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from urp_data.errors import InputError
from urp_data.net import hosts, pacing
from urp_data.net.body import BadBody, check_type, read_body
from urp_data.net.deadline import install as watch_sockets
from urp_data.net.deadline import watch
from urp_data.net.retries import PacedRetry, deadline_at
from urp_data.util import settings
from urp_data.util.fs import atomic_write_bytes, cache_dir, one_line

logger = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = str(settings.USER_AGENT.get())
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
MAX_REDIRECTS = 5
DEFAULT_MIN_INTERVAL_S = 1.0
STAC_MIN_INTERVAL_S = 0.1
RETRY_STATUS = (429, 500, 502, 503, 504)
SECRET_PARAMS = frozenset({"key", "apikey", "api_key", "token", "access_token", "auth", "sig", "signature",
                           "password", "secret", "client_secret", "x-amz-signature", "x-amz-credential",
                           "x-amz-security-token"})
"""Query parameters whose values never reach a log, an error or the manifest (``sig``: Azure SAS tokens)."""


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
    return cache_file(canonical_url(url, params))


def cache_file(key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return CACHE_DIR / digest[:2] / digest


def _pace(host: str, min_interval_s: float) -> None:
    """Wait for ``host``'s next politeness slot; the slot files live with the cache, under ``.pace``."""
    pacing.pace(host, min_interval_s, CACHE_DIR / ".pace")


def wait_turn(url: str, min_interval_s: float) -> None:
    """Wait for a politeness slot of ``url``'s host for a read this module does not send itself.

    GDAL's ``/vsicurl/`` range reads of a COG bypass :class:`PoliteSession`; a source calls this
    once before each such read so the reads of all workers together keep the host's pace.
    """
    _pace(pacing.host_of(url), min_interval_s)


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
        retry = PacedRetry(total=RETRIES, connect=RETRIES, read=2, redirect=0, status=RETRIES,
                           status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET", "HEAD", "POST"}),
                           backoff_factor=BACKOFF_FACTOR, backoff_max=BACKOFF_MAX_S,
                           respect_retry_after_header=True, retry_after_max=RETRY_AFTER_MAX_S,
                           raise_on_status=False, raise_on_redirect=False)
        retry.min_interval_s, retry.pace = min_interval_s, _pace
        adapter = HTTPAdapter(max_retries=retry, pool_connections=8, pool_maxsize=16)
        watch_sockets(adapter)  # the request's deadline closes its socket, whatever it is waiting for
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        _pace(pacing.host_of(request.url or ""), self.min_interval_s)
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


def send(url: str, shown: str, min_interval_s: float, params: Mapping[str, Any] | None,
          remaining: float, headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200,),
          json_body: Any = None) -> requests.Response:
    """A paced, retried, streaming GET (a POST of ``json_body`` when given); a status not in ``ok``
    is an InputError that says what to do."""
    try:
        with deadline_at(time.monotonic() + remaining):  # urllib3's retry waits count against it too
            # The URL as given (a signed URL must keep its encoding); the sorted form is only the cache key.
            resp = session(min_interval_s).request("GET" if json_body is None else "POST", url, params=params,
                                                   json=json_body, stream=True, headers=headers,
                                                   timeout=(CONNECT_TIMEOUT_S, min(remaining, 30.0)))
    except InputError:
        raise
    except requests.exceptions.InvalidURL as exc:
        raise InputError(f"malformed URL {shown}: {one_line(exc)}") from exc
    except requests.RequestException as exc:
        raise InputError(f"cannot fetch {shown}: {redact(one_line(exc))}") from exc
    if resp.status_code == 403:  # a block: no retry, no other source of the same host will fare better
        resp.close()
        policy = hosts.policy(url)
        raise InputError(f"{shown} answered HTTP 403: the host blocks us; "
                         + (f"see its usage policy ({policy.source})" if policy else "check its usage policy"))
    if resp.status_code not in ok:
        resp.close()
        hint = "the server is overloaded or limiting us" if resp.status_code in RETRY_STATUS else \
            "check the URL and the server's usage policy"
        retried = f" after {RETRIES} retries" if resp.status_code in RETRY_STATUS else ""
        raise InputError(f"{shown} answered HTTP {resp.status_code}{retried}; {hint}")
    return resp


_flight_lock = threading.Lock()
_flights: dict[str, list[Any]] = {}  # cache key -> [lock, number of threads holding or waiting]


@contextmanager
def one_flight(key: str) -> Iterator[None]:
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
        deadline_s: float | None = None, cache: bool = True, json_body: Any = None) -> bytes:
    """The body of a GET on ``url`` (plus query ``params``), from the cache when present.

    With ``json_body``, a POST of it instead (a STAC API search whose filter only POST carries): its
    answer is cached as a GET's is, keyed on the body too, so a rebuild sends it no more than a GET.

    ``content_types`` are accepted ``Content-Type`` prefixes (e.g. ``("image/",)``); ``check``
    raises on a body that does not decode. Only a body that passes both is cached. Waits
    ``min_interval_s`` per host between sends, shared by every process of the build.
    ``cache=False`` is for answers that change from one call to the next (a server's status):
    neither read from nor written to the cache, checked all the same.
    """
    key = canonical_url(url, params)
    shown = redact(key)
    if json_body is not None:
        key += " POST " + json.dumps(json_body, sort_keys=True)
        shown = "POST " + shown
    path = cache_file(key)
    if cache and path.is_file():
        logger.debug("cache hit %s", shown)
        return path.read_bytes()
    with one_flight(key):
        if cache and path.is_file():  # another thread of this process fetched it meanwhile
            logger.debug("cache hit %s", shown)
            return path.read_bytes()
        body = _fetch(url, shown, min_interval_s, params, content_types, check,
                      time.monotonic() + (DEADLINE_S if deadline_s is None else deadline_s), json_body)
        if cache:
            atomic_write_bytes(path, body)
        return body


def _fetch(url: str, shown: str, min_interval_s: float, params: Mapping[str, Any] | None,
           content_types: tuple[str, ...] | None, check: Callable[[bytes], object] | None, deadline: float,
           json_body: Any = None) -> bytes:
    """The checked body of ``url``; a body that fails a check is fetched again (``BODY_RETRIES``)."""

    def read(resp: requests.Response) -> bytes:
        body = read_body(resp, shown, deadline)
        check_type(resp, shown, content_types)
        if check is not None:
            try:
                check(body)
            except Exception as exc:  # the caller's decoder: any failure means a bad body
                raise BadBody(f"{shown} sent a body that does not decode: {one_line(exc)}") from exc
        return body

    return read_with_retries(url, shown, min_interval_s, deadline, read, params=params, json_body=json_body)


def read_with_retries(url: str, shown: str, min_interval_s: float, deadline: float,
                      read: Callable[[requests.Response], T], *, params: Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200,),
                      json_body: Any = None) -> T:
    """``read(response)`` of a paced, retried GET; sent again while ``read`` raises :class:`BadBody`,
    ``BODY_RETRIES`` more times at most and never past ``deadline`` (``time.monotonic()`` seconds).

    The one retry loop of this package: a whole body (:func:`get`), a byte range and a streamed
    download (:mod:`urp_data.net.downloads`) differ only in how they read and check a response.
    """
    failure = ""
    with watch(deadline) as watchdog:
        try:
            for _ in range(1 + BODY_RETRIES):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with send(url, shown, min_interval_s, params, remaining, headers, ok, json_body) as resp:
                    try:
                        return read(resp)
                    except BadBody as exc:
                        failure = str(exc)
                        logger.warning("%s; trying again", failure)
        except InputError:
            if not watchdog.expired:
                raise
    if watchdog.expired:
        failure = f"{shown} did not answer in full before the request's deadline"
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
