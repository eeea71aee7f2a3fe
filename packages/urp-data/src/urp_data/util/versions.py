"""What a build or a report records about its inputs and its software: file checksums and versions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (inputs may be gigabytes)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions(packages: Iterable[str], missing: str | None = None) -> dict[str, str]:
    """``{package: version}``; a package that is not installed gets ``missing``, or is left out when
    ``missing`` is None."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            if missing is not None:
                out[pkg] = missing
    return out
