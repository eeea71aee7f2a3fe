"""``urp-data``: build URP datasets (``build``) and list shipped regions (``regions``).

Thin: parse flags (generated from ``BuildConfig``), set up logging and the progress bar,
call the library, map known errors to one line and exit code 1 (usage errors: 2). A
traceback is shown only with ``URP_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any

import yaml


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        base = next((a for a in typing.get_args(typ) if a is not type(None)), typ)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=base, default=None,
                            required=False, help=f.metadata.get("help", "") + (" (required)" if required else ""))


def _load_flags_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise SystemExit(_usage_error(f"config file {path} not found"))
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(_usage_error(f"config file {path} must hold a mapping of flags"))
    return {k.replace("-", "_"): v for k, v in data.items()}


def _usage_error(msg: str) -> int:
    print(f"urp-data: error: {msg}", file=sys.stderr)
    return 2


def _cmd_build(args: argparse.Namespace) -> int:
    from urp_data.config import BuildConfig
    from urp_data.pipeline import build

    names = {f.name for f in dataclasses.fields(BuildConfig)}
    values = _load_flags_config(args.config)
    unknown = sorted(set(values) - names)
    if unknown:
        return _usage_error(f"unknown key(s) {unknown} in {args.config}; allowed: {sorted(names)}")
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})  # explicit flags win
    if "region" not in values:
        return _usage_error("--region is required (a shipped name such as demo, or a region YAML path)")
    cfg = BuildConfig(**values)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("building {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(str(cfg.region), total=None)
        out = build(cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
    from urp_data.schema import load_manifest

    m = load_manifest(out)
    counts = ", ".join(f"{k}={v}" for k, v in m.counts["per_split"].items())
    print(f"wrote {out} ({counts}; skipped without imagery: {m.counts['skipped_no_imagery']}, "
          f"buffer: {m.counts['buffer_dropped']})")
    return 0


def _cmd_regions(args: argparse.Namespace) -> int:
    from urp_data.regions import list_regions

    for name, path in list_regions().items():
        desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        print(f"{name:12s} {desc}  [{path}]")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from urp_data.config import BuildConfig

    parser = argparse.ArgumentParser(prog="urp-data", description="Build urban-region-profiling datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a region into OUT/REGION/{train,val,test_seen,test_unseen}.parquet",
                       description="Build a region: sample H3 cells, cut image chips, geocode, attach POIs and "
                                   "indicators, write geographic splits and a manifest. Resumes an interrupted "
                                   "build of the same config.")
    b.add_argument("--config", help="YAML file of these flags (explicit flags win)")
    _add_dataclass_flags(b, BuildConfig)
    b.set_defaults(func=_cmd_build)
    r = sub.add_parser("regions", help="list the shipped regions")
    r.set_defaults(func=_cmd_regions)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("URP_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    from urp_data.errors import URPDataError
    from urp_data.schema import SchemaError

    try:
        return args.func(args)
    except (URPDataError, SchemaError) as exc:
        if os.environ.get("URP_DEBUG"):
            raise
        print(f"urp-data: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("urp-data: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
