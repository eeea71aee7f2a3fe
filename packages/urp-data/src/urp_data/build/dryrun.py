"""What a build would ask of the network, before it asks: ``urp-data build --dry-run``.

The sources are opened and the cells planned exactly as a build does; then every network source
answers its request budget from geometry alone (no request is sent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from urp_data.net.budget import RequestBudget, format_budget


def sources_with_budgets(src: Any) -> Iterator[tuple[str, Any]]:
    """(kind, source) for every opened source of a build that talks to the network."""
    from dataclasses import fields

    for f in fields(src):
        value = getattr(src, f.name)
        for item in value if isinstance(value, list) else [value]:
            if hasattr(item, "request_budget"):
                yield f.name, item


def plan_budget(region: Any, src: Any, lat: np.ndarray, lon: np.ndarray) -> list[RequestBudget]:
    """Every network source's budget for the planned sample centres.

    Imagery sources are tried in order and the first that covers a sample serves it, so each
    imagery source is asked only about the samples that the ones before it do not cover.
    """
    import shapely

    budgets: list[RequestBudget] = []
    left = np.ones(len(lat), dtype=bool)
    for source in src.imagery:
        covered = left & shapely.contains_xy(source.footprint(), lon, lat)
        if hasattr(source, "request_budget") and covered.any():
            budgets += source.request_budget(lat[covered], lon[covered], region.chip.footprint_m, region.chip.size_px)
        left &= ~covered
    for kind, source in sources_with_budgets(src):
        if kind != "imagery":
            budgets += source.request_budget(lat, lon, region.chip.footprint_m, region.chip.size_px)
    return budgets


def dry_run(cfg: Any) -> str:
    """The ``--dry-run`` report for a build config: sources opened and cells planned, nothing fetched."""
    from urp_data.build.plan import apply_overrides, make_plan
    from urp_data.build.sources import open_sources
    from urp_data.config.regions import load_region

    region = apply_overrides(load_region(cfg.region), cfg)
    src = open_sources(region)
    plan = make_plan(region, src)
    return format_budget(plan_budget(region, src, plan.lat, plan.lon), len(plan.cells))
