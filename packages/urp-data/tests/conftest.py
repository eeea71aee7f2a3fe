"""Fixtures for urp-data: the repository's real sample data and small region files around it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def write_region(tmp_path: Path):
    """Write a region YAML into tmp_path: an Olinda-only region unless overridden."""

    def _write(name: str = "mini", **overrides: Any) -> Path:
        region: dict[str, Any] = {
            "name": name,
            "description": "a small part of the Olinda scene",
            "area": {"bbox": [-34.90, -8.03, -34.84, -7.96]},  # lon/lat: (left, bottom, right, top)
            "sampling": {"resolution": 8, "seed": 0},
            "chip": {"size_px": 64, "footprint_m": 1000},
            "splits": {"group_by": "h3:7", "unseen_fraction": 0.3, "buffer_km": 1.5},  # a small area
            "countries": "gazetteer",
            "imagery": [{"type": "raster", "path": str(DATA / "demo/olinda_l7_etm.tif"), "bands": [3, 2, 1]}],
            "indicators": [
                {"name": "census_count", "type": "vector", "path": str(DATA / "demo/olinda_census_tracts.shp"),
                 "column": "V014", "method": "area_weighted_sum"},
                {"name": "population", "type": "geonames_population", "radius_km": 5},
            ],
        }
        for key, value in overrides.items():
            if key in ("sampling", "chip", "splits", "geocoder"):  # merged; other keys are replaced
                region[key] = {**region[key], **value}
            else:
                region[key] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(region))
        return path

    return _write
