"""Small exception classes for bad input: each message names the input and the fix.

They subclass builtins so callers can catch them broadly; the CLI turns any of them into
a one-line message and exit code 1 (a traceback only with ``URP_DEBUG=1``).
"""

from __future__ import annotations


class SchemaError(ValueError):
    """A file or a value does not follow the URP data contract (not a URPDataError: urp-train and
    urp-eval raise it too)."""


class URPDataError(Exception):
    """Base class of every error urp-data reports to the user."""


class RegionError(URPDataError, ValueError):
    """Unknown region name, invalid region config, or an empty region."""


class InputError(URPDataError, ValueError):
    """An input file is missing, corrupt, truncated, or lacks what it needs (e.g. a CRS)."""


class NoImageryError(URPDataError, LookupError):
    """No imagery source covers a sample (raised only with ``on_missing_imagery: fail``)."""


class SampleSkipped(URPDataError, LookupError):
    """One sample cannot be served (every scene holding it is unreadable): skipped and counted per
    ``reason``, unless too many are (``chip.max_failed_fraction``), when the build stops."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class OutputError(URPDataError, OSError):
    """The output folder cannot be written."""


class ChunkError(URPDataError, RuntimeError):
    """A chunk of a build failed on every attempt (Ray engine); the message names the chunk."""
