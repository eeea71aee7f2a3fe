"""Where to sample: the H3 cells of an area, a seeded subsample, or cells near settlements.

Cells are H3 indexes (strings); centres are returned as (lat, lon) degrees, boxes are given as
(left, bottom, right, top) in lon/lat degrees."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h3
import numpy as np
import shapely
from shapely.geometry import box, mapping

from urp_data.errors import RegionError
from urp_data.util.geodesy import KM_PER_DEG_LAT, KM_PER_DEG_LON_EQUATOR


def polyfill(area: shapely.Geometry, resolution: int) -> list[str]:
    """H3 cells whose centres fall inside ``area`` (lon/lat polygon), sorted for determinism."""
    if area.is_empty:
        return []
    return sorted(h3.geo_to_cells(mapping(area), resolution))


def subsample(cells: list[str], n: int | None, seed: int) -> list[str]:
    """A seeded subsample of n cells (all of them when n is None or larger)."""
    if n is None or n >= len(cells):
        return cells
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(cells), size=n, replace=False))
    return [cells[i] for i in idx]


def settlement_sample(
    place_lat: np.ndarray,
    place_lon: np.ndarray,
    place_pop: np.ndarray,
    n: int,
    resolution: int,
    seed: int,
    spread_km: float,
    keep: Any = None,
    max_rounds: int = 50,
) -> list[str]:
    """Draw n distinct H3 cells near settlements, each place chosen with probability ∝ population.

    A cell is the one containing a point drawn uniformly in a disk of ``spread_km`` around the
    chosen place (lat/lon in degrees). ``keep(lat, lon) -> bool array`` rejects points (e.g. at
    sea). Draws proceed in rounds so the result for a given seed does not depend on chunking.
    """
    rng = np.random.default_rng(seed)
    p = place_pop.astype(np.float64)
    p = p / p.sum()
    chosen: dict[str, None] = {}
    for _ in range(max_rounds):
        need = n - len(chosen)
        if need <= 0:
            break
        m = int(need * 1.3) + 16
        idx = rng.choice(len(p), size=m, p=p)
        r = spread_km * np.sqrt(rng.random(m))
        theta = rng.random(m) * 2 * np.pi
        lat = place_lat[idx] + (r * np.cos(theta)) / KM_PER_DEG_LAT
        lon = place_lon[idx] + (r * np.sin(theta)) / (KM_PER_DEG_LON_EQUATOR * np.maximum(np.cos(np.radians(place_lat[idx])), 0.05))
        lat = np.clip(lat, -89.9, 89.9)
        lon = (lon + 180) % 360 - 180
        ok = keep(lat, lon) if keep is not None else np.ones(m, bool)
        for la, lo in zip(lat[ok], lon[ok], strict=True):
            chosen.setdefault(h3.latlng_to_cell(float(la), float(lo), resolution))
            if len(chosen) >= n:
                break
    if len(chosen) < n:
        raise RegionError(f"could draw only {len(chosen)} of {n} distinct cells; lower --samples or raise spread_km")
    return list(chosen)


def cell_centres(cells: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres as (lat, lon) arrays in degrees."""
    ll = np.array([h3.cell_to_latlng(c) for c in cells], dtype=np.float64).reshape(-1, 2)
    return ll[:, 0], ll[:, 1]


def bbox_polygon(bbox: list[float]) -> shapely.Geometry:
    """A lon/lat polygon for (left, bottom, right, top); left > right crosses the antimeridian and gives
    two boxes, one on each side of it."""
    left, bottom, right, top = bbox
    if left > right:
        return shapely.MultiPolygon([box(left, bottom, 180, top), box(-180, bottom, right, top)])
    return box(*bbox)
