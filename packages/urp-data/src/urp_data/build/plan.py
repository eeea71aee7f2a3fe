"""The plan of a build: which cells, in which countries, groups and splits (small; made once, by the driver)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from urp_data.build.sources import Sources
from urp_data.config.build import BuildConfig
from urp_data.config.regions import RegionConfig
from urp_data.errors import RegionError
from urp_data.sampling.cells import bbox_polygon, cell_centres, polyfill, settlement_sample, subsample
from urp_data.sampling.splits import (
    BUFFER,
    assign_splits,
    choose_unseen_groups,
    default_block_resolution,
    default_buffer_km,
    group_of,
    touch_distance_km,
)
from urp_data.sources.vectors import read_vector
from urp_data.util.geodesy import M_PER_DEG_LON_EQUATOR

logger = logging.getLogger(__name__)


def plan_cells(region: RegionConfig, src: Sources) -> list[str]:
    """The sample cells of a region, deterministic for its config."""
    s = region.sampling
    if s.mode == "settlement":
        g = src.gazetteer
        big = g.population >= s.min_population
        area = _area(region, src)
        shapely.prepare(area)
        cells = settlement_sample(g.places.lat[big], g.places.lon[big], g.population[big], int(s.samples or 0),
                                  s.resolution, s.seed, s.spread_km,
                                  keep=lambda la, lo: shapely.contains_xy(area, lo, la))
    else:
        area = _area(region, src)
        _check_polyfill_size(region, area)
        cells = subsample(polyfill(area, s.resolution), s.samples, s.seed)
    if not cells:
        raise RegionError(f"region {region.name} has no H3 cells at resolution {s.resolution}; "
                          "check its area (is it smaller than one cell, or outside the imagery?)")
    return cells


MAX_POLYFILL_CELLS = 20_000_000
"""Grid sampling lists every cell of the area first; beyond this many (~2 GB of cell ids) it is refused."""


BYTES_PER_SAMPLE = 1000
"""Driver memory a planned sample takes (ours, measured with margin: its cell id, centre, country, group and
split in the plan, and the settlement draw's candidates); a count beyond what the machine holds is refused."""


def available_memory_bytes() -> int:
    """Memory this machine has free now (physical pages; a container's cgroup limit is not read)."""
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_sample_count(region: RegionConfig) -> None:
    """Refuse, before anything is allocated, a sample count that has no cells to draw or no memory to plan.

    Settlement sampling draws ``samples`` distinct cells (H3 has ~122 * 7**resolution of them), and
    the plan holds every one in the driver's memory.
    """
    import h3

    s = region.sampling
    if s.samples is None:
        return
    cells = h3.get_num_cells(s.resolution)
    if s.mode == "settlement" and s.samples > cells:
        raise RegionError(f"sampling.samples={s.samples:,} is more than the {cells:,} H3 cells at resolution "
                          f"{s.resolution}; lower --samples or raise --resolution")
    need, free = s.samples * BYTES_PER_SAMPLE, available_memory_bytes()
    if need > free:
        raise RegionError(f"sampling.samples={s.samples:,} needs ~{need / 2**30:,.1f} GiB to plan and this machine has "
                          f"{free / 2**30:,.1f} GiB free; lower --samples to at most {free // BYTES_PER_SAMPLE:,}")


def _check_polyfill_size(region: RegionConfig, area: shapely.Geometry) -> None:
    """Refuse, in one line and before any work, an area whose H3 grid would not fit in memory.

    A STAC API source without ``bbox`` covers the globe, so ``area`` taken from the imagery can be
    the whole Earth: 690 million resolution-8 cells.
    """
    import h3
    from pyproj import Transformer

    # Planar area in an equal-area projection: lon/lat polygons have straight edges in degrees,
    # which geodesic areas would read as great circles (a whole-Earth box has geodesic area 0).
    to_equal_area = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
    km2 = shapely.transform(area, lambda xy: np.column_stack(to_equal_area.transform(xy[:, 0], xy[:, 1]))).area / 1e6
    cells = km2 / h3.average_hexagon_area(region.sampling.resolution, "km^2")
    if not cells <= MAX_POLYFILL_CELLS:  # NaN (an area no projection can measure) is refused too
        raise RegionError(f"region {region.name}: its area ({km2:,.0f} km2) holds ~{cells:,.0f} H3 cells at "
                          f"resolution {region.sampling.resolution}, too many to list; give area: bbox or boundary "
                          "(a STAC API source without bbox covers the globe), or use sampling mode settlement")


def _area(region: RegionConfig, src: Sources) -> shapely.Geometry:
    a = region.area
    if a.bbox is not None:
        return bbox_polygon(a.bbox)
    if a.boundary is not None:
        return shapely.union_all(read_vector(region.resolve(a.boundary), "area boundary").geometry.values)
    if a.land:
        if src.countries.gdf is None:
            raise RegionError("area.land needs country polygons; set countries: to a polygon file")
        return shapely.union_all(src.countries.gdf.geometry.values)
    # Shrink each footprint by half a chip so edge cells still get a full chip.
    half_deg = region.chip.footprint_m / 2 / M_PER_DEG_LON_EQUATOR
    return shapely.union_all([s.footprint().buffer(-half_deg) for s in src.imagery])


@dataclass
class Plan:
    cells: list[str]
    lat: np.ndarray
    lon: np.ndarray
    country: list[str | None]
    group: list[str]
    split: np.ndarray
    unseen_groups: set[str]
    buffer_cells: list[str]
    splits: dict[str, Any]  # the buffer and holdout rule actually used, for the manifest

    def take(self, rows: range) -> Plan:
        """The rows a chunk needs, numbered from 0: what a worker process is sent, so that its
        memory does not grow with the size of the build."""
        sl = slice(rows.start, rows.stop)
        return Plan(self.cells[sl], self.lat[sl], self.lon[sl], self.country[sl], self.group[sl],
                    self.split[sl], set(), [], {})


def make_plan(region: RegionConfig, src: Sources) -> Plan:
    cells = plan_cells(region, src)
    lat, lon = cell_centres(cells)
    country = src.countries.lookup(lat, lon)
    sc = region.splits
    continent = [src.gazetteer.continent(c) for c in country] if sc.group_by == "continent" or sc.unseen_continents \
        else [None] * len(cells)
    admin = src.gazetteer.admin_areas(lat, lon, country) if sc.group_by == "admin" else [None] * len(cells)
    groups = [group_of(c, co, ct, sc.group_by, ad) for c, co, ct, ad in zip(cells, country, continent, admin,
                                                                          strict=True)]
    named = set(sc.unseen_groups)
    named |= {g for g, co, ct in zip(groups, country, continent, strict=True)
              if co in sc.unseen_countries or (ct is not None and ct in sc.unseen_continents)}
    if (sc.unseen_countries or sc.unseen_continents) and not named - set(sc.unseen_groups):
        raise RegionError(f"no samples fall in the unseen countries/continents "
                          f"{sc.unseen_countries + sc.unseen_continents} of region {region.name}")
    unseen = choose_unseen_groups(groups, named=sorted(named), fraction=sc.unseen_fraction, seed=region.sampling.seed)
    buffer = default_buffer_km(region.chip.footprint_m, {i.name: i.info.support_km() for i in src.indicators},
                               sc.buffer_km)
    block_res = sc.block_resolution if sc.block_resolution is not None else \
        default_block_resolution(region.sampling.resolution, region.chip.footprint_m)
    labels = assign_splits(cells, groups, unseen, val_fraction=sc.val_fraction,
                           test_seen_fraction=sc.test_seen_fraction, buffer_km=buffer.buffer_km,
                           footprint_m=region.chip.footprint_m, block_resolution=block_res,
                           seed=region.sampling.seed)
    keep = labels != BUFFER
    # Rows in H3 index order, which is also the order of every ancestor cell: a chunk holds the
    # children of a few parent cells, so neighbouring samples share a chunk (a worker, a Ray task)
    # and its source reads (raster blocks, cached tiles).
    idx = np.flatnonzero(keep)
    splits = {"buffer_km": round(buffer.buffer_km, 3), "buffer_reason": buffer.reason,
              "buffer_candidates_km": {k: round(v, 3) for k, v in buffer.candidates_km.items()},
              "block_resolution": block_res,
              "holdout_rule": f"val and test_seen are drawn by H3 blocks at resolution {block_res}; held-out cells "
                              f"within {touch_distance_km(region.chip.footprint_m):.3g} km (chip footprint x sqrt 2) "
                              "of a train cell are dropped, so no held-out chip shares ground with a train chip"}
    idx = idx[np.argsort(np.asarray(cells)[idx], kind="stable")]
    return Plan([cells[i] for i in idx], lat[idx], lon[idx], [country[i] for i in idx], [groups[i] for i in idx],
                labels[idx], unseen, [cells[i] for i in np.flatnonzero(~keep)], splits)


def apply_overrides(region: RegionConfig, cfg: BuildConfig) -> RegionConfig:
    """The region config with the build's command-line overrides applied (re-validated)."""
    s = region.sampling
    if cfg.resolution is not None:
        s.resolution = cfg.resolution
    if cfg.samples is not None:
        s.samples = cfg.samples
    if cfg.seed is not None:
        s.seed = cfg.seed
    s.__post_init__()
    check_sample_count(region)
    if cfg.allow_bulk:
        region.geocoder.allow_bulk = True
    return region
