"""Every ``URP_*`` environment variable in one place: its name, its default and what it changes.

As osmnx's ``settings``, this module is the reference; the code that uses a setting reads it
through :meth:`Setting.get` at the moment it needs it (so a test or a notebook may change the
environment between calls), and other docstrings point here. All three command-line tools
(``urp-data``, ``urp-train``, ``urp-eval``) honour them; a Ray build passes every ``URP_*``
variable of the driver on to its workers.

=====================  ==============================================  ============================================
variable               default                                         what it changes
=====================  ==============================================  ============================================
``URP_CACHE_DIR``      ``~/.cache/urp``                                root of every cache: HTTP responses
                                                                       (``http/``), GeoNames tables (``geonames/``),
                                                                       STAC chips (``chips/``); point it at shared
                                                                       storage on a cluster
``URP_USER_AGENT``     ``urp-data/0.1 (+https://github.com/urp-...)``  the User-Agent of every request and of
                                                                       GDAL's own reads; read once, at import
``URP_LOG_LEVEL``      the command's (``WARNING`` for urp-data,        log level of the command-line tools
                       ``INFO`` for urp-train and urp-eval)            (DEBUG, INFO, WARNING, ERROR)
``URP_DEBUG``          unset                                           any non-empty value: a traceback after the
                                                                       one-line error
``URP_REGIONS_DIR``    unset                                           a folder searched first for region files
                                                                       (``--region NAME``), before
                                                                       ``./configs/regions``
=====================  ==============================================  ============================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    """One environment variable: ``default`` is what :meth:`get` returns when it is unset or empty."""

    name: str
    default: str | None
    help: str

    def get(self) -> str | None:
        """The variable's value now, or the default."""
        return os.environ.get(self.name) or self.default


CACHE_DIR = Setting("URP_CACHE_DIR", str(Path.home() / ".cache" / "urp"),
                    "root of every cache (http/, geonames/, chips/); shared storage on a cluster")
USER_AGENT = Setting("URP_USER_AGENT", "urp-data/0.1 (+https://github.com/urp-project/urp)",
                     "User-Agent of every request urp-data sends, and of GDAL's remote reads")
LOG_LEVEL = Setting("URP_LOG_LEVEL", None, "log level of the command-line tools (default: the command's)")
DEBUG = Setting("URP_DEBUG", None, "any non-empty value prints a traceback after the one-line error")
REGIONS_DIR = Setting("URP_REGIONS_DIR", None, "a folder searched first for region files (--region NAME)")

SETTINGS = (CACHE_DIR, USER_AGENT, LOG_LEVEL, DEBUG, REGIONS_DIR)
"""Every setting, in the order the table above lists them."""
