"""urp_data: build urban-region-profiling datasets, and the data contract training and evaluation share.

The short public API is below; everything else is reached by its module (the layers are
described in ``docs/architecture.md``). The build's names need the ``build`` extra and are
imported on first use, so that ``import urp_data`` stays light for urp-train and urp-eval. A
build from a config is ``urp_data.build.run.build(BuildConfig(...))`` (``urp_data.build`` is the
subpackage, not a function).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from urp_data.contract import (
    Manifest,
    ScoreScale,
    arrow_schema,
    load_manifest,
    parse_answer,
    render_messages,
    split_path,
)
from urp_data.errors import InputError, NoImageryError, OutputError, RegionError, SchemaError, URPDataError

if TYPE_CHECKING:
    from urp_data.build.run import build_region
    from urp_data.config.build import BuildConfig
    from urp_data.config.regions import RegionConfig, list_regions, load_region

__all__ = [
    "BuildConfig", "InputError", "Manifest", "NoImageryError", "OutputError", "RegionConfig", "RegionError",
    "SchemaError", "ScoreScale", "URPDataError", "arrow_schema", "build_region", "list_regions",
    "load_manifest", "load_region", "parse_answer", "render_messages", "split_path",
]


def __getattr__(name: str) -> Any:
    """The build's public names, imported when first asked for (they need the ``build`` extra)."""
    if name == "build_region":
        from urp_data.build.run import build_region

        return build_region
    if name == "BuildConfig":
        from urp_data.config.build import BuildConfig

        return BuildConfig
    if name in ("RegionConfig", "list_regions", "load_region"):
        from urp_data.config import regions

        return getattr(regions, name)
    raise AttributeError(f"module 'urp_data' has no attribute {name!r}")
