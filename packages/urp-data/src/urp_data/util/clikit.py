"""The command-line contract shared by ``urp-data``, ``urp-train`` and ``urp-eval``.

Exit codes: 0 success; 1 an error (bad input, a failed run), one line on stderr that names
the fix where there is one; 2 a usage error (a bad flag, an unknown ``--config`` key, an
invalid option value); 3 a ``--fail-under``/``--max-gap`` threshold breached. ``URP_DEBUG``
set to any non-empty value adds the traceback; unexpected exceptions are one line too.
Interrupted runs exit 130.

Every command has TRL's script shape (:class:`Command`: ``make_parser(subparsers=None)`` and
``main(cfg)``), and :func:`dispatch` runs one. Flags come from config dataclasses (one flag per
field in both spellings, ``--a-b`` and ``--a_b``, its help from the field's metadata, its default
shown by argparse's formatter, grouped by topic); ``--config FILE.yaml`` supplies any of them
and explicit flags win; unknown keys are usage errors. ``urp-train``'s ``grpo`` and ``sft`` read
the same way through TRL's ``TrlParser``, which is the command's own ``parse`` (imported only when
the command runs).

Light on imports (argparse, yaml): ``--help`` stays instant and the report install stays small.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from urp_data.util import settings
from urp_data.util.fs import one_line

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_THRESHOLD, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(ValueError):
    """The command line or a ``--config`` file is wrong (exit code 2)."""


def setup_logging(default: str = "WARNING", fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Log to stderr at ``URP_LOG_LEVEL`` (:mod:`urp_data.util.settings`; default ``default``); library
    modules only create loggers."""
    level = (settings.LOG_LEVEL.get() or default).upper()
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


def flag_names(name: str) -> list[str]:
    """``--a-b`` for a field ``a_b``, and ``--a_b`` too (TRL's parser accepts both spellings)."""
    dashed = "--" + name.replace("_", "-")
    return [dashed, "--" + name] if "_" in name else [dashed]


def shown_defaults(cls: type) -> dict[str, Any]:
    """The defaults ``--help`` shows for the fields of ``cls`` (none for None, False or a required field)."""
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value is not dataclasses.MISSING and value is not None and value is not False and value != []:
            out[f.name] = value
    return out


def defaults_formatter(defaults: Mapping[str, Any]) -> type[argparse.HelpFormatter]:
    """argparse's ``ArgumentDefaultsHelpFormatter``, showing ``defaults`` (the config dataclass's).

    The parser's own defaults stay None, so that a value from ``--config`` can be told apart from
    a flag that was not given; the formatter is told what the dataclass would use instead.
    """

    class Formatter(argparse.ArgumentDefaultsHelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str:
            text = action.help or ""
            if action.dest in defaults and "%(default)" not in text:
                return f"{text} (default: {defaults[action.dest]})"
            return text

    return Formatter


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type,
                        groups: Mapping[str, Sequence[str]] | None = None) -> None:
    """One flag per field of ``cls`` (both spellings, :func:`flag_names`), grouped under the titles of
    ``groups`` (title -> field names; the rest under "options"), and ``--config``.

    The flags' defaults stay unset so ``--config`` values can fill them; ``--help`` shows the
    dataclass's defaults through :func:`defaults_formatter`.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    where: dict[str, Any] = {}
    for title, members in (groups or {}).items():
        unknown = set(members) - names
        if unknown:
            raise ValueError(f"flag group {title!r} names no field of {cls.__name__}: {sorted(unknown)}")
        where.update(dict.fromkeys(members, parser.add_argument_group(title)))
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        typ, extra = _flag_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            help_text += " (required)"
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text, **extra}
        if typ is not None:
            kw["type"] = typ
        where.get(f.name, parser).add_argument(*flag_names(f.name), **kw)
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
        if settings.DEBUG.get():
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


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand of a tool, in TRL's script shape: :meth:`make_parser` and ``main(cfg)``.

    Its flags come from ``config`` (a dataclass; None for a command without options), grouped
    by ``groups``; ``positionals`` are fields that may also be given as positional arguments.
    A command with ``parse`` reads its own arguments instead (every argument after its name, ``--help``
    included) and returns ``main``'s config: ``urp-train``'s TRL recipes, whose parser imports torch.
    """

    name: str
    help: str
    main: Callable[[Any], int]
    config: type | None = None
    description: str | None = None
    groups: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    positionals: tuple[str, ...] = ()
    parse: Callable[[list[str]], Any] | None = None

    def make_parser(self, subparsers: Any = None) -> argparse.ArgumentParser:
        """This command's parser: added to ``subparsers`` (a tool's), or on its own when None."""
        kw: dict[str, Any] = {"description": self.description or self.help,
                              "formatter_class": defaults_formatter(shown_defaults(self.config) if self.config else {}),
                              "add_help": self.parse is None}
        parser = subparsers.add_parser(self.name, help=self.help, **kw) if subparsers is not None \
            else argparse.ArgumentParser(prog=self.name, **kw)
        for name in self.positionals:
            parser.add_argument(f"{name}__positional", nargs="?", metavar=name.upper(), help=f"same as --{name.replace('_', '-')}")
        if self.config is not None:
            add_dataclass_flags(parser, self.config, self.groups)
        return parser

    def config_from(self, args: argparse.Namespace) -> Any:
        """The command's config from parsed ``args`` (positionals, ``--config``, flags); None without one."""
        for name in self.positionals:
            given = getattr(args, f"{name}__positional")
            if given is not None:
                setattr(args, name, given)
        return config_from_args(self.config, args) if self.config is not None else None


def dispatch(prog: str, description: str, commands: Sequence[Command], argv: Sequence[str] | None,
             log_level: str = "WARNING", log_format: str | None = None) -> int:
    """Parse ``argv`` for one of ``commands``, set up logging and run the command under the contract."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    by_name = {c.name: c for c in commands}
    for c in commands:
        c.make_parser(sub)
    args, rest = parser.parse_known_args(argv)
    command = by_name[args.command]
    if rest and command.parse is None:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    setup_logging(log_level, *(() if log_format is None else (log_format,)))
    parse = command.parse
    return run(f"{prog} {command.name}",
               lambda: command.main(parse(rest) if parse is not None else command.config_from(args)))
