"""The command-line contract shared by ``urp-data``, ``urp-train`` and ``urp-eval``.

Exit codes: 0 success; 1 an error (bad input, a failed run), one line on stderr that names
the fix where there is one; 2 a usage error (a bad flag, an unknown ``--config`` key, an
invalid option value); 3 a ``--fail-under``/``--max-gap`` threshold breached. ``URP_DEBUG``
set to any non-empty value adds the traceback; unexpected exceptions are one line too.
Interrupted runs exit 130.

Flags come from config dataclasses (one ``--flag`` per field, its help from the field's
metadata); ``--config FILE.yaml`` supplies any of them and explicit flags win; unknown keys
are usage errors. ``urp-train`` reads the same way through TRL's ``TrlParser``.

Light on imports (argparse, yaml): ``--help`` stays instant and the report install stays small.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from urp_data.util.fs import one_line

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_THRESHOLD, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(ValueError):
    """The command line or a ``--config`` file is wrong (exit code 2)."""


def setup_logging(default: str = "WARNING", fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Log to stderr at ``$URP_LOG_LEVEL`` (default ``default``); library modules only create loggers."""
    level = os.environ.get("URP_LOG_LEVEL", default).upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else default, format=fmt,
                        stream=sys.stderr)


def _flag_type(typ: Any) -> tuple[Any, dict[str, Any]]:
    """(element type, extra argparse keywords) for a dataclass field type."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):  # X | None: the flag's type is X
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    if typing.get_origin(typ) is typing.Literal:
        choices = typing.get_args(typ)
        return type(choices[0]), {"choices": choices}
    if typing.get_origin(typ) is list:
        inner = (typing.get_args(typ) or (str,))[0]
        return inner, {"nargs": "+", "action": "extend"}  # a repeated flag adds to the list
    if typ is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    return typ, {}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field of ``cls`` (defaults stay unset so ``--config`` values can fill them) and ``--config``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        typ, extra = _flag_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            help_text += " (required)"
        elif f.default is not dataclasses.MISSING and f.default is not None and f.default is not False:
            help_text += f" (default: {f.default})"
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text, **extra}
        if typ is not None:
            kw["type"] = typ
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file whose keys are any of these options; "
                        "explicit flags win")


def load_config_file(path: str | None) -> dict[str, Any]:
    """The option mapping of a ``--config`` YAML file (keys with ``-`` or ``_``); UsageError if unreadable."""
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"--config {path}: {one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """An instance of ``cls`` from ``--config`` then the explicit flags; invalid values are usage errors."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = load_config_file(getattr(args, "config", None))
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"--config {args.config}: unknown option(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(names))}")
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UsageError(f"missing {', '.join('--' + m.replace('_', '-') for m in missing)}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # __post_init__ checks name the bad value and the fix
        raise UsageError(one_line(exc)) from exc


def run(prog: str, command: Callable[[], int]) -> int:
    """Run ``command`` under the contract: map exceptions to one stderr line and an exit code."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 -- the contract is one line, not a traceback
        if os.environ.get("URP_DEBUG"):
            traceback.print_exc()
        from urp_data.errors import SchemaError, URPDataError

        if isinstance(exc, UsageError):
            code, msg = EXIT_USAGE, one_line(exc)
        elif isinstance(exc, (URPDataError, SchemaError, OSError, ValueError)):
            code, msg = EXIT_ERROR, one_line(exc)
        else:
            code, msg = EXIT_ERROR, f"unexpected {type(exc).__name__}: {one_line(exc)} (set URP_DEBUG=1 for the traceback)"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return code
