"""Files written whole or not at all, and only where they belong.

Every output of urp (a build, a predictions file, a report) is written under a temporary
name and renamed into place, so a killed or failed run leaves either the old output or the
new one, never a mix. Every rename and every removal is first checked to stay inside the
output folder the user named: names that come from configs (region names) or symbolic
links must not turn a cleanup into the deletion of someone else's folder.

Light on imports (no GDAL, no torch): the bias report uses it too.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from urp_data.errors import OutputError, RegionError
from urp_data.util import settings

if TYPE_CHECKING:
    import pyarrow as pa

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
"""Names that become file or folder names (regions): letters, digits, ``_ . -``; no separators, no ``..``."""
_NAME_RE = re.compile(NAME_PATTERN)


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name): one line for the CLI."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_name(name: object, what: str) -> str:
    """``name`` if it is safe as one path component (see :data:`NAME_PATTERN`), else a RegionError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise RegionError(f"{what} {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit (it becomes a folder name)")
    return name


def inside(root: str | Path, path: str | Path) -> Path:
    """``path`` resolved, if it lies strictly inside ``root`` (both resolved, links followed).

    Raises :class:`OutputError` otherwise: the caller was about to write or delete outside
    the output folder.
    """
    base, target = Path(root).resolve(), Path(path).resolve()
    if target == base or base not in target.parents:
        raise OutputError(f"refusing to write or delete {path}: it is outside the output folder {root}")
    return target


def remove_tree(root: str | Path, path: str | Path) -> None:
    """Delete the folder ``path`` (if present) after checking that it is inside ``root``."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_symlink():  # never follow a link when deleting: remove the link itself
        inside(root, p.parent)
        p.unlink()
        return
    shutil.rmtree(inside(root, p))


def replace_dir(root: str | Path, new: str | Path, target: str | Path) -> None:
    """Move the finished folder ``new`` to ``target`` (replacing it), all inside ``root``.

    The old ``target`` is renamed aside first and removed only after the new one is in
    place, so a crash in between leaves one complete folder under one of the two names.
    """
    new_p, target_p = inside(root, new), inside(root, target)
    old = target_p.with_name(f".{target_p.name}.old-{os.getpid()}")
    remove_tree(root, old)
    if target_p.exists() or target_p.is_symlink():
        os.replace(target_p, old)
    os.replace(new_p, target_p)
    remove_tree(root, old)


def default_mode(directory: bool = False) -> int:
    """The permissions a plain ``open``/``mkdir`` would give under the current umask.

    ``tempfile`` creates private files (0600) and folders (0700); outputs that are renamed into
    place must be as readable as any other file the user writes (a dataset card, a report).
    """
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def cache_dir(kind: str) -> Path:
    """``URP_CACHE_DIR/<kind>``: one root for every urp cache (:mod:`urp_data.util.settings`).

    HTTP responses live under ``http/``, the GeoNames tables under ``geonames/``; point
    ``URP_CACHE_DIR`` at shared storage and every worker of a cluster shares both.
    """
    return Path(str(settings.CACHE_DIR.get())) / kind


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, default_mode())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_table(table: pa.Table, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write an Arrow table as Parquet through a temporary file and a rename (extra schema metadata optional)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sidecars(path: str | Path) -> list[Path]:
    """Local files that GDAL/OGR read together with ``path``: same folder, same stem.

    A shapefile's .shx/.dbf/.prj/.cpg, a raster's .aux.xml/.ovr/world file: editing one
    changes what is read, so caches and resume keys cover each.
    """
    p = Path(path)
    if not p.is_file():
        return []
    return sorted(q for q in p.parent.glob(glob.escape(p.stem) + ".*") if q.is_file() and q != p)
