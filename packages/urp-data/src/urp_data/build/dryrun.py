"""What a build would ask of the network, before it asks: ``urp-data build --dry-run``.

The sources are opened and the cells planned exactly as a build does; then every network source
answers its request budget from geometry alone (no request is sent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import shapely

from urp_data.build.plan import apply_overrides, make_plan
from urp_data.build.sources import Sources, open_sources
from urp_data.config.build import BuildConfig
from urp_data.config.regions import RegionConfig, load_region
from urp_data.net import downloads
from urp_data.net.budget import RequestBudget, format_budget
from urp_data.sources.base import NetworkSource


def network_sources(src: Sources) -> Iterator[tuple[str, NetworkSource]]:
    """(kind, source) for every opened source of a build that may talk to the network, imagery first."""
    kinds: list[tuple[str, list[Any]]] = [("imagery", src.imagery), ("pois", src.pois),
                                          ("indicators", src.indicators), ("geocoder", [src.geocoder])]
    for kind, items in kinds:
        for item in items:
            if isinstance(item, NetworkSource):
                yield kind, item


def plan_budget(region: RegionConfig, src: Sources, lat: np.ndarray, lon: np.ndarray) -> list[RequestBudget]:
    """Every network source's budget for the planned sample centres (lat/lon degrees).

    Imagery sources are tried in order and the first that covers a sample serves it, so each
    imagery source is asked only about the samples that the ones before it do not cover.
    """
    budgets: list[RequestBudget] = []
    left = np.ones(len(lat), dtype=bool)
    for source in src.imagery:
        covered = left & shapely.contains_xy(source.footprint(), lon, lat)
        if isinstance(source, NetworkSource) and covered.any():
            budgets += source.request_budget(lat[covered], lon[covered], region.chip.footprint_m, region.chip.size_px)
        left &= ~covered
    for kind, net in network_sources(src):
        if kind != "imagery":
            budgets += net.request_budget(lat, lon, region.chip.footprint_m, region.chip.size_px)
    return budgets


def dry_run(cfg: BuildConfig) -> str:
    """The ``--dry-run`` report for a build config: sources opened and cells planned, nothing fetched."""
    region = apply_overrides(load_region(cfg.region), cfg)
    with downloads.whole_files_deferred():  # a host that ignores Range is counted, not downloaded
        src = open_sources(region)
    plan = make_plan(region, src)
    return format_budget(plan_budget(region, src, plan.lat, plan.lon), len(plan.cells))
