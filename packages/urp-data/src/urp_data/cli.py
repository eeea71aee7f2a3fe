"""``urp-data``: build URP datasets (``build``), look at one (``preview``), list shipped regions (``regions``).

Thin: parse flags (generated from ``BuildConfig``), set up logging and the progress bar,
call the library; errors and exit codes follow the shared contract in :mod:`urp_data.util.clikit`.
"""

from __future__ import annotations

import argparse
import sys

from urp_data.util.clikit import add_dataclass_flags, config_from_args, run, setup_logging


def _require_build_stack() -> None:
    """A one-line error naming the extra when the build stack (GDAL, geopandas, OSM readers) is absent."""
    try:
        import urp_data.build.run  # noqa: F401
    except ModuleNotFoundError as exc:
        from urp_data.errors import URPDataError

        raise URPDataError(f"this command needs the build stack ({exc.name} is not installed): "
                           "pip install 'urp-data[build]'") from exc


def _cmd_build(args: argparse.Namespace) -> int:
    from urp_data.config.build import BuildConfig

    cfg = config_from_args(BuildConfig, args)
    _require_build_stack()
    if cfg.dry_run:
        from urp_data.build.dryrun import dry_run

        print(dry_run(cfg))
        return 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from urp_data.build.run import build

    with Progress(TextColumn("building {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(str(cfg.region), total=None)
        out = build(cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
    from urp_data.contract import load_manifest

    m = load_manifest(out)
    counts = ", ".join(f"{k}={v}" for k, v in m.counts["per_split"].items())
    print(f"wrote {out} ({counts}; skipped without imagery: {m.counts['skipped_no_imagery']}, "
          f"buffer: {m.counts['buffer_dropped']})")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from urp_data.config.build import PreviewConfig

    if args.build_path is not None:
        args.build = args.build_path
    cfg = config_from_args(PreviewConfig, args)
    _require_build_stack()  # pandas, h3 and plotly come with the build extra
    from urp_data.outputs.preview import write_preview

    print(f"wrote {write_preview(cfg.build, cfg.out, cfg.per_split)}")
    return 0


def _cmd_regions(args: argparse.Namespace) -> int:
    import yaml

    _require_build_stack()
    from urp_data.config.regions import list_regions

    for name, path in list_regions().items():
        desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        print(f"{name:12s} {desc}  [{path}]")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from urp_data.config.build import BuildConfig, PreviewConfig

    parser = argparse.ArgumentParser(prog="urp-data", description="Build urban-region-profiling datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a region into OUT/REGION/{train,val,test_seen,test_unseen}.parquet",
                       description="Build a region: sample H3 cells, cut image chips, geocode, attach POIs and "
                                   "indicators, write geographic splits and a manifest. Resumes an interrupted "
                                   "build of the same config.")
    add_dataclass_flags(b, BuildConfig)
    b.set_defaults(func=_cmd_build)
    p = sub.add_parser("preview", help="write an offline HTML page to look at a build",
                       description="Write one self-contained HTML page (no network needed to open it): a map of "
                                   "the samples by split with unseen groups and buffer cells, per-split counts and "
                                   "indicator histograms, and a gallery of chips with their prompts.")
    p.add_argument("build_path", nargs="?", metavar="BUILD", help="same as --build")
    add_dataclass_flags(p, PreviewConfig)
    p.set_defaults(func=_cmd_preview)
    r = sub.add_parser("regions", help="list the shipped regions")
    r.set_defaults(func=_cmd_regions)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    setup_logging()
    return run(f"urp-data {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
