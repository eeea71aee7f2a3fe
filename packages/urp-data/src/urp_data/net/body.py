"""Reading a response's body so that no bad body is ever kept: checked while it streams in.

A body is refused (:class:`BadBody`, worth another try, never cached) when it breaks off, stops
short of its ``Content-Length`` (a truncated body is a failure), is still arriving at the request's
deadline (a server that trickles one byte at a time cannot hold a build) or has a content type the
caller does not expect (an HTML error page sent with status 200 is not a tile); a body over
``MAX_BYTES`` is an InputError at once, before it fills memory. :func:`urp_data.net.http.read_with_retries`
sends the request again while a read raises :class:`BadBody`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import requests

from urp_data.errors import InputError
from urp_data.util.fs import one_line

MAX_BYTES = 64 * 2**20
"""Largest body accepted (64 MiB); a bigger one is refused before it fills memory."""


class BadBody(Exception):
    """A response whose body failed a check; worth one more try, never cached."""


def stream_body(resp: requests.Response, shown: str, deadline: float, max_bytes: int) -> Iterator[bytes]:
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
                raise BadBody(f"{shown} was still sending at the request's deadline")
            yield chunk
    except requests.exceptions.RequestException as exc:
        raise BadBody(f"{shown} broke off: {one_line(exc)}") from exc
    except Exception as exc:  # urllib3's ProtocolError/IncompleteRead: a truncated body
        if isinstance(exc, (InputError, BadBody)):
            raise
        raise BadBody(f"{shown} broke off: {one_line(exc)}") from exc
    encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if declared is not None and not encoded and declared.isdigit() and int(declared) != size:
        raise BadBody(f"{shown} is truncated: {size} of {declared} bytes")


def read_body(resp: requests.Response, shown: str, deadline: float) -> bytes:
    """The whole body in memory (at most ``MAX_BYTES``), checked as :func:`stream_body` does."""
    return b"".join(stream_body(resp, shown, deadline, MAX_BYTES))


def check_type(resp: requests.Response, shown: str, content_types: tuple[str, ...] | None) -> None:
    """Refuse (:class:`BadBody`) a ``Content-Type`` that starts with none of ``content_types`` (None: any)."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_types and not ctype.startswith(content_types):
        raise BadBody(f"{shown} sent {ctype or 'no content type'}, not {' or '.join(content_types)}")
