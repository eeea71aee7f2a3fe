"""Geographic splits: invariants on random H3 cells (nothing lost, nothing in two splits, buffer, footprint)."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from urp_data.errors import RegionError
from urp_data.sampling.splits import (
    BUFFER,
    assign_splits,
    choose_unseen_groups,
    default_block_resolution,
    default_buffer_km,
    group_of,
    touch_distance_km,
)


def _cells(n: int = 3000, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-8.1, -7.8, n)
    lon = rng.uniform(-35.0, -34.7, n)
    return sorted({h3.latlng_to_cell(a, b, 8) for a, b in zip(lat, lon, strict=True)})


@pytest.fixture
def split_case():
    cells = _cells()
    groups = [group_of(c, "BRA", None, "h3:6") for c in cells]
    unseen = choose_unseen_groups(groups, fraction=0.3, seed=7)
    labels = assign_splits(cells, groups, unseen, val_fraction=0.1, test_seen_fraction=0.2, buffer_km=3.0,
                           footprint_m=1000, seed=7)
    return cells, groups, unseen, labels


def test_every_cell_gets_exactly_one_label(split_case):
    cells, _, _, labels = split_case
    assert len(labels) == len(cells)
    assert set(labels) <= {"train", "val", "test_seen", "test_unseen", BUFFER}
    assert {"train", "val", "test_seen", "test_unseen"} <= set(labels)


def test_unseen_groups_never_in_train_or_val(split_case):
    _, groups, unseen, labels = split_case
    assert unseen
    for g, label in zip(groups, labels, strict=True):
        assert (g in unseen) == (label == "test_unseen")


def _km(a: str, b: str) -> float:
    return h3.great_circle_distance(h3.cell_to_latlng(a), h3.cell_to_latlng(b), unit="km")


def test_buffer_keeps_seen_cells_away_from_unseen(split_case):
    cells, _, _, labels = split_case
    unseen_cells = [c for c, label in zip(cells, labels, strict=True) if label == "test_unseen"]
    seen_cells = [c for c, label in zip(cells, labels, strict=True) if label in ("train", "val", "test_seen")]
    assert (labels == BUFFER).sum() > 0
    assert min(_km(a, b) for a in unseen_cells for b in seen_cells) >= 3.0


def test_held_out_chips_never_touch_train_chips(split_case):
    # The footprint rule: square chips of 1 km whose centres are >= sqrt(2) km apart cannot overlap.
    cells, _, _, labels = split_case
    train = [c for c, label in zip(cells, labels, strict=True) if label == "train"]
    held = [c for c, label in zip(cells, labels, strict=True) if label in ("val", "test_seen", "test_unseen")]
    assert len(held) > 50
    assert min(_km(a, b) for a in held for b in train) >= touch_distance_km(1000)


def test_seen_holdouts_follow_blocks(split_case):
    cells, _, _, labels = split_case
    block = {c: h3.cell_to_parent(c, default_block_resolution(8, 1000)) for c in cells}
    per_block: dict[str, set] = {}
    for c, label in zip(cells, labels, strict=True):
        if label in ("train", "val", "test_seen"):
            per_block.setdefault(block[c], set()).add(label)
    assert all(len(v) == 1 for v in per_block.values())  # one split per block


def test_labels_are_stable_when_the_sample_grows(split_case):
    cells, groups, unseen, labels = split_case
    more = cells + [c for c in _cells(500, seed=2) if c not in set(cells)]
    more_groups = groups + [group_of(c, "BRA", None, "h3:6") for c in more[len(cells):]]
    relabelled = assign_splits(more, more_groups, unseen, val_fraction=0.1, test_seen_fraction=0.2,
                               buffer_km=3.0, seed=7)
    # A cell keeps its split; it may only become buffer (a new train or unseen cell next to it).
    for old, new in zip(labels, relabelled[: len(cells)], strict=True):
        assert new == old or (new == BUFFER and old != "test_unseen")
    assert np.mean(relabelled[: len(cells)] == labels) > 0.95


def test_split_fractions_follow_the_config():
    # Before the footprint rule drops border cells, blocks are drawn with the configured shares.
    cells = _cells(20000, seed=3)
    blocks = sorted({h3.cell_to_parent(c, 6) for c in cells})
    labels = assign_splits(blocks, ["g"] * len(blocks), set(), val_fraction=0.1, test_seen_fraction=0.2,
                           footprint_m=0, block_resolution=6, seed=7)
    assert np.mean(labels == "val") == pytest.approx(0.1, abs=0.05)
    assert np.mean(labels == "test_seen") == pytest.approx(0.2, abs=0.06)


def test_default_buffer_is_the_largest_input_support():
    b = default_buffer_km(1000, {"night_light": 14.8, "population": 10.0, "gdp": None})
    assert b.buffer_km == 14.8 and "night_light" in b.reason
    assert default_buffer_km(1000, {}).buffer_km == pytest.approx(2 ** 0.5)
    configured = default_buffer_km(1000, {"night_light": 14.8}, configured_km=5.0)
    assert configured.buffer_km == 5.0 and "14.8" in configured.reason and "interpolation" in configured.reason


def test_block_resolution_grows_with_the_chip():
    assert default_block_resolution(8, 1000) == 6
    assert default_block_resolution(8, 5000) < 6
    assert default_block_resolution(5, 100) == 5  # never finer than the cells


def test_seed_changes_the_unseen_groups():
    groups = [f"g{i}" for i in range(40)]
    assert choose_unseen_groups(groups, seed=1) != choose_unseen_groups(groups, seed=2)
    assert choose_unseen_groups(groups, seed=1) == choose_unseen_groups(groups, seed=1)


def test_named_unseen_group_must_exist():
    with pytest.raises(RegionError, match="no samples"):
        choose_unseen_groups(["BRA", "PRY"], named=["ARG"])


def test_cannot_hold_out_everything():
    with pytest.raises(RegionError, match="every group"):
        choose_unseen_groups(["BRA", "PRY"], named=["BRA", "PRY"])


def test_duplicate_cells_are_refused():
    with pytest.raises(ValueError, match="unique"):
        assign_splits(["8881838a3bfffff"] * 2, ["a", "a"], set())


def test_h3_groups_never_straddle_countries():
    cell = h3.latlng_to_cell(-25.51, -54.60, 8)
    assert group_of(cell, "BRA", None, "h3:6") != group_of(cell, "PRY", None, "h3:6")
    assert group_of(cell, "BRA", None, "h3:6").endswith(h3.cell_to_parent(cell, 6))
