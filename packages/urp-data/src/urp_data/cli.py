"""``urp-data``: build URP datasets (``build``), look at one (``preview``), list shipped regions (``regions``).

Thin: each command is a :class:`urp_data.util.clikit.Command` (flags generated from its config
dataclass, ``main(cfg)`` sets up the progress bar and calls the library); errors and exit codes
follow the shared contract in :mod:`urp_data.util.clikit`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from urp_data.config.build import BuildConfig, PreviewConfig
from urp_data.util.clikit import Command, dispatch


def _require_build_stack() -> None:
    """A one-line error naming the extra when the build stack (GDAL, geopandas, OSM readers) is absent."""
    try:
        import urp_data.build.run  # noqa: F401
    except ModuleNotFoundError as exc:
        from urp_data.errors import URPDataError

        raise URPDataError(f"this command needs the build stack ({exc.name} is not installed): "
                           "pip install 'urp-data[build]'") from exc


def _build(cfg: BuildConfig) -> int:
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


def _preview(cfg: PreviewConfig) -> int:
    _require_build_stack()  # pandas, h3 and plotly come with the build extra
    from urp_data.outputs.preview import write_preview

    print(f"wrote {write_preview(cfg.build, cfg.out, cfg.per_split)}")
    return 0


def _regions(_: None) -> int:
    import yaml

    _require_build_stack()
    from urp_data.config.regions import list_regions

    for name, path in list_regions().items():
        desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        print(f"{name:12s} {desc}  [{path}]")
    return 0


COMMANDS = [
    Command("build", "build a region into OUT/REGION/{train,val,test_seen,test_unseen}.parquet", _build, BuildConfig,
            description="Build a region: sample H3 cells, cut image chips, geocode, attach POIs and indicators, "
                        "write geographic splits and a manifest. Resumes an interrupted build of the same config.",
            groups={"what to build": ["region", "out", "resolution", "samples", "seed"],
                    "how to run it": ["engine", "workers", "ray_address", "chunk_size"],
                    "network": ["dry_run", "allow_bulk"]}),
    Command("preview", "write an offline HTML page to look at a build", _preview, PreviewConfig,
            description="Write one self-contained HTML page (no network needed to open it): a map of the samples "
                        "by split with unseen groups and buffer cells, per-split counts and indicator histograms, "
                        "and a gallery of chips with their prompts.",
            positionals=("build",)),
    Command("regions", "list the shipped regions", _regions),
]


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("urp-data", "Build urban-region-profiling datasets.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
