"""Geographic splits: invariants on random H3 cells (nothing lost, nothing in two splits, buffer)."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from urp_data.errors import RegionError
from urp_data.splits import BUFFER, assign_splits, choose_unseen_groups, group_of


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
    labels = assign_splits(cells, groups, unseen, val_fraction=0.1, test_seen_fraction=0.2, buffer_rings=2, seed=7)
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


def test_buffer_keeps_seen_cells_away_from_unseen(split_case):
    cells, _, _, labels = split_case
    unseen_cells = [c for c, label in zip(cells, labels, strict=True) if label == "test_unseen"]
    seen_cells = {c for c, label in zip(cells, labels, strict=True) if label in ("train", "val", "test_seen")}
    assert (labels == BUFFER).sum() > 0
    for c in unseen_cells:
        assert not (set(h3.grid_disk(c, 2)) & seen_cells)


def test_labels_are_stable_when_the_sample_grows(split_case):
    cells, groups, unseen, _ = split_case
    more = cells + [c for c in _cells(500, seed=2) if c not in set(cells)]
    more_groups = groups + [group_of(c, "BRA", None, "h3:6") for c in more[len(cells):]]
    relabelled = assign_splits(more, more_groups, unseen, val_fraction=0.1, test_seen_fraction=0.2,
                               buffer_rings=0, seed=7)
    base = assign_splits(cells, groups, unseen, val_fraction=0.1, test_seen_fraction=0.2, buffer_rings=0, seed=7)
    assert list(relabelled[: len(cells)]) == list(base)


def test_split_fractions_follow_the_config(split_case):
    _, _, _, labels = split_case
    seen = labels[np.isin(labels, ["train", "val", "test_seen"])]
    assert np.mean(seen == "val") == pytest.approx(0.1, abs=0.03)
    assert np.mean(seen == "test_seen") == pytest.approx(0.2, abs=0.03)


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
