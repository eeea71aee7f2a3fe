"""Geographic splits keyed on H3: pure functions with an explicit seed.

``test_unseen`` is a set of whole groups (countries, continents or H3 parent cells) that never
appear in train or val. The remaining cells are assigned to train / val / test_seen one by
one from a hash of (seed, cell), so a cell keeps its split when the sample grows or a build
resumes. Seen cells within ``buffer_rings`` H3 rings of an unseen cell are dropped (label
``buffer``) so that neighbouring pixels cannot leak the unseen area into training.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import h3
import numpy as np

from urp_data.errors import RegionError

BUFFER = "buffer"


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


def assign_splits(
    cells: Sequence[str],
    groups: Sequence[str],
    unseen: set[str],
    *,
    val_fraction: float = 0.1,
    test_seen_fraction: float = 0.15,
    buffer_rings: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Split label per cell: train, val, test_seen, test_unseen or buffer (dropped)."""
    if len(cells) != len(groups):
        raise ValueError(f"{len(cells)} cells but {len(groups)} groups")
    if len(set(cells)) != len(cells):
        raise ValueError("cells must be unique: one sample per H3 cell")
    labels = np.empty(len(cells), dtype=object)
    is_unseen = np.array([g in unseen for g in groups], dtype=bool)
    labels[is_unseen] = "test_unseen"
    near_unseen: set[str] = set()
    if buffer_rings > 0:
        for c in np.asarray(cells, dtype=object)[is_unseen]:
            near_unseen.update(h3.grid_disk(c, buffer_rings))
    for i in np.flatnonzero(~is_unseen):
        c = cells[i]
        if c in near_unseen:
            labels[i] = BUFFER
            continue
        u = stable_uniform(c, seed)
        labels[i] = "val" if u < val_fraction else "test_seen" if u < val_fraction + test_seen_fraction else "train"
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
