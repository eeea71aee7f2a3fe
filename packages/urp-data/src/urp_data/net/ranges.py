"""GDAL reads of a remote file through :mod:`urp_data.net.http`: cached, paced, checked range requests.

GDAL's own ``/vsicurl/`` keeps what it read in memory only, so every build would read a remote
COG again, and its requests pass by the politeness slots, the body checks and the cache of
:mod:`urp_data.net.http`. Opening the URL with :func:`open_remote` instead hands GDAL a Python file
(rasterio's ``opener``) whose reads are served from aligned chunks of ``CHUNK_BYTES`` fetched
with :func:`urp_data.net.downloads.get_range`: each chunk is one request, paced per host like every
other, cached on disk (a second build sends no request) and never cached when a fault mangled it.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any

CHUNK_BYTES = 256 * 1024
"""Bytes per range request: a compressed 256 x 256 COG tile fits in one, the header in the first."""
CHUNKS_IN_MEMORY = 64
"""Chunks a file keeps in memory (16 MiB) besides the on-disk cache: GDAL reads a tile in small pieces."""


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over ``url`` whose bytes come from cached chunk requests
    (``sha256``: the file's checksum, checked if its host ignores ``Range`` and sends it whole)."""

    def __init__(self, url: str, min_interval_s: float, sha256: str | None = None) -> None:
        super().__init__()
        self.url, self.min_interval_s, self.sha256 = url, min_interval_s, sha256
        self._pos = 0
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self._size = 0
        self._chunk(0)  # the first chunk also tells the file's size
        self.size = self._size

    def _chunk(self, k: int) -> bytes:
        from urp_data.net import downloads

        if k in self._chunks:
            self._chunks.move_to_end(k)
            return self._chunks[k]
        body, self._size = downloads.get_range(self.url, k * CHUNK_BYTES, CHUNK_BYTES, self.min_interval_s,
                                               sha256=self.sha256)
        self._chunks[k] = body
        if len(self._chunks) > CHUNKS_IN_MEMORY:
            self._chunks.popitem(last=False)
        return body

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence] + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        parts = []
        while self._pos < end:
            k, off = divmod(self._pos, CHUNK_BYTES)
            piece = self._chunk(k)[off:off + end - self._pos]
            if not piece:
                break
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)


def opener(url: str, min_interval_s: float, sha256: str | None = None) -> Any:
    """A rasterio ``opener`` that serves ``url`` (and only it) as a :class:`RangeFile`."""
    from rasterio._vsiopener import FileContainer

    class Remote(FileContainer):
        def __init__(self) -> None:
            self._file: RangeFile | None = None

        def _open(self) -> RangeFile:
            if self._file is None:
                self._file = RangeFile(url, min_interval_s, sha256)
            return self._file

        def open(self, path: str, mode: str = "rb", **kwargs: Any) -> RangeFile:
            return RangeFile(url, min_interval_s, sha256)

        def size(self, path: str) -> int:
            return self._open().size

        def isfile(self, path: str) -> bool:
            return True

        def isdir(self, path: str) -> bool:
            return False

        def ls(self, path: str) -> list[str]:
            return []

        def mtime(self, path: str) -> int:
            return 0

        def rm(self, path: str) -> None:
            raise OSError(f"{path} is read-only")

    return Remote()
