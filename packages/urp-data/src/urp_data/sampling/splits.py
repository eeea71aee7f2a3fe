"""Geographic splits keyed on H3: pure functions with an explicit seed.

``test_unseen`` is a set of whole groups (countries, continents, admin areas or H3 parent
cells) that never appear in train or val. The remaining (seen) cells are assigned to
train / val / test_seen by **blocks**: every cell of one H3 parent cell (the block, coarse
enough for the chip footprint) gets the split drawn from a hash of (seed, block), so a cell
keeps its split when the sample grows or a build resumes.

Two rules then drop cells (label ``buffer``) so that no evaluated chip shares ground with a
training chip or with a label computed from the same inputs:

* the **footprint rule**: a ``val`` or ``test_seen`` cell whose centre lies within
  √2 × the chip footprint of a ``train`` cell is dropped. Two squares of side w whose centres
  are at least w·√2 apart cannot intersect, whatever their orientation, so held-out chips
  never overlap training chips (we drop held-out cells, not training cells, so training data
  does not depend on the holdout draw of neighbouring blocks);
* the **unseen buffer**: a seen cell within ``buffer_km`` of an unseen cell is dropped.
  ``buffer_km`` defaults to the largest ground distance over which a label pools its inputs
  (:func:`default_buffer_km`), so unseen labels are not interpolations of training labels.

A cell's split never changes as the sample grows; a held-out cell can only become ``buffer``
when a new training cell appears next to it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import h3
import numpy as np
from scipy.spatial import cKDTree

from urp_data.errors import RegionError
from urp_data.util.geodesy import chord_for_km, unit_vectors

BUFFER = "buffer"
BLOCK_EDGE_CHIPS = 2.0
"""Default blocks: the finest H3 resolution whose mean hexagon edge is at least this many chip widths."""


def stable_uniform(key: str, seed: int) -> float:
    """A number in [0, 1) that depends only on (seed, key)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_unseen_groups(
    groups: Sequence[str],
    *,
    named: Sequence[str] = (),
    fraction: float = 0.2,
    seed: int = 0,
) -> set[str]:
    """The unseen groups: those named (when any), else a seeded ``fraction`` of all groups (at least one).

    At least one group must stay seen; a named group that does not occur is an error, since
    a typo would silently leave the unseen split empty.
    """
    present = sorted(set(groups))
    if named:
        missing = sorted(set(named) - set(present))
        if missing:
            raise RegionError(f"unseen group(s) {missing} have no samples; present groups: {present[:20]}")
        unseen = set(named)
    else:
        if len(present) < 2 or fraction <= 0:
            return set()
        k = min(len(present) - 1, max(1, math.ceil(fraction * len(present))))
        unseen = set(sorted(present, key=lambda g: stable_uniform(g, seed))[:k])
    if unseen >= set(present):
        raise RegionError("every group is unseen; name fewer unseen groups so something is left to train on")
    return unseen


def touch_distance_km(footprint_m: float) -> float:
    """Centre distance below which two square chips of ``footprint_m`` metres may share ground (w·√2)."""
    return footprint_m / 1000.0 * math.sqrt(2.0)


def default_block_resolution(cell_resolution: int, footprint_m: float) -> int:
    """The finest H3 resolution (at most the cells') whose mean hexagon edge is >= 2 chip widths.

    For 1 km chips that is resolution 6 (edge ~3.7 km, ~36 km² per block): blocks much wider
    than a chip, so the footprint rule drops only the held-out cells along block borders.
    """
    for res in range(cell_resolution, -1, -1):
        if h3.average_hexagon_edge_length(res, unit="km") >= BLOCK_EDGE_CHIPS * footprint_m / 1000.0:
            return res
    return 0


@dataclass
class BufferChoice:
    """The unseen buffer of a build and why: recorded in the manifest (``config.splits``)."""

    buffer_km: float
    reason: str
    candidates_km: dict[str, float] = field(default_factory=dict)


def default_buffer_km(footprint_m: float, indicator_support_km: Mapping[str, float | None],
                      configured_km: float | None = None) -> BufferChoice:
    """The unseen buffer: ``configured_km`` if given, else the largest of the candidates.

    Candidates: the chip footprint's touch distance (w·√2) and, per indicator, the ground
    distance over which its label pools inputs (``indicator_support_km``: the source
    resolution or the aggregation diameter; None for labels no buffer can separate, such as
    country-level tables, which only whole unseen countries keep apart).
    """
    cands = {"chip footprint (x sqrt 2)": touch_distance_km(footprint_m)}
    cands |= {f"indicator {k}": float(v) for k, v in indicator_support_km.items() if v is not None}
    largest = max(cands, key=lambda k: cands[k])
    if configured_km is not None:
        below = configured_km < cands[largest]
        reason = (f"configured (splits.buffer_km); the inputs call for {cands[largest]:.3g} km ({largest})"
                  + (": unseen labels near the border are partly interpolations of seen ones" if below else ""))
        return BufferChoice(float(configured_km), reason, cands)
    return BufferChoice(cands[largest], f"default: the largest candidate, {largest}", cands)


def _unit_vectors(cells: Sequence[str] | np.ndarray) -> np.ndarray:
    ll = np.array([h3.cell_to_latlng(c) for c in cells], dtype=np.float64).reshape(-1, 2)
    return unit_vectors(ll[:, 0], ll[:, 1])


def near(query: Sequence[str] | np.ndarray, targets: Sequence[str] | np.ndarray, km: float) -> np.ndarray:
    """For each cell of ``query``: does a cell of ``targets`` lie within ``km`` (great circle, centres)?"""
    out = np.zeros(len(query), dtype=bool)
    if not len(query) or not len(targets) or km <= 0:
        return out
    chord = chord_for_km(km)
    tree = cKDTree(_unit_vectors(targets))
    dist, _ = tree.query(_unit_vectors(query), k=1, distance_upper_bound=chord)
    return np.isfinite(dist)


def assign_splits(
    cells: Sequence[str],
    groups: Sequence[str],
    unseen: set[str],
    *,
    val_fraction: float = 0.1,
    test_seen_fraction: float = 0.15,
    buffer_km: float = 0.0,
    footprint_m: float = 1000.0,
    block_resolution: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Split label per cell: train, val, test_seen, test_unseen or buffer (dropped); see the module docstring.

    ``block_resolution`` is the H3 resolution of the seen holdout blocks (default:
    :func:`default_block_resolution`); ``footprint_m`` the chip width in metres. The unseen
    buffer is never below the footprint's touch distance, so no unseen chip overlaps a seen one.
    """
    if len(cells) != len(groups):
        raise ValueError(f"{len(cells)} cells but {len(groups)} groups")
    if len(set(cells)) != len(cells):
        raise ValueError("cells must be unique: one sample per H3 cell")
    labels = np.empty(len(cells), dtype=object)
    if not len(cells):
        return labels
    res = h3.get_resolution(cells[0])
    block_res = default_block_resolution(res, footprint_m) if block_resolution is None else min(block_resolution, res)
    is_unseen = np.array([g in unseen for g in groups], dtype=bool)
    labels[is_unseen] = "test_unseen"
    for i in np.flatnonzero(~is_unseen):
        c = cells[i]
        block = h3.cell_to_parent(c, min(block_res, h3.get_resolution(c)))
        u = stable_uniform(block, seed)
        labels[i] = "val" if u < val_fraction else "test_seen" if u < val_fraction + test_seen_fraction else "train"
    cells_arr = np.asarray(cells, dtype=object)
    seen = np.flatnonzero(~is_unseen)
    touch = touch_distance_km(footprint_m)
    labels[seen[near(cells_arr[seen], cells_arr[is_unseen], max(buffer_km, touch))]] = BUFFER
    held = np.flatnonzero(np.isin(labels, ["val", "test_seen"]))
    train = cells_arr[labels == "train"]
    labels[held[near(cells_arr[held], train, touch)]] = BUFFER
    return labels


def group_of(cell: str, country: str | None, continent: str | None, group_by: str,
             admin: str | None = None) -> str:
    """The group key of a cell: its country, its continent, ``<country>-<admin area>`` for ``admin``,
    or ``<country>-<H3 parent>`` for ``h3:R``.

    Admin areas and H3 parents are prefixed with the country so no group straddles a border
    (an unseen country then consists of whole groups).
    """
    if group_by == "country":
        return country or "unknown"
    if group_by == "continent":
        return continent or "unknown"
    if group_by == "admin":
        return f"{country or 'unknown'}-{admin or 'unknown'}"
    res = int(group_by.split(":", 1)[1])
    parent = h3.cell_to_parent(cell, min(res, h3.get_resolution(cell)))
    return f"{country or 'unknown'}-{parent}"


def shared_ground(held_out: Sequence[bytes], train: Sequence[bytes]) -> int:
    """How many chips of ``held_out`` intersect (share ground with) a chip of ``train``; both WKB footprints.

    The check a build's splits must pass: 0 for val, test_seen and test_unseen against train.
    """
    import shapely

    a, b = shapely.from_wkb(list(held_out)), shapely.from_wkb(list(train))
    if not len(a) or not len(b):
        return 0
    hits = shapely.STRtree(b).query(a, predicate="intersects")
    return len(np.unique(hits[0]))
