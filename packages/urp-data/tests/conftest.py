"""Fixtures for urp-data: the repository's real sample data and small region files around it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # the loopback servers (servers.py) shared by test files

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).parent))  # the tests' helper modules (servers.py): not a package
DATA = REPO / "data"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The faulty server's base URL (files under tmp_path/www); tiny backoffs; an empty cache for this test."""
    from servers import Faulty, serve
    from urp_data.net import http

    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(http, "BACKOFF_FACTOR", 0.01)
    monkeypatch.setattr(http, "BACKOFF_MAX_S", 0.05)
    Faulty.files = tmp_path / "www"
    with serve() as url:
        yield url


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def region_yaml(folder: Path, name: str = "mini", **overrides: Any) -> Path:
    """Write a region YAML into ``folder``: an Olinda-only region unless overridden."""
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
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(region))
    return path


@pytest.fixture
def write_region(tmp_path: Path):
    """``region_yaml`` into tmp_path."""

    def _write(name: str = "mini", **overrides: Any) -> Path:
        return region_yaml(tmp_path, name, **overrides)

    return _write


@pytest.fixture(scope="session")
def mini_local_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(region YAML, build folder): the default mini region built once by the local engine with
    chunks of 8, in a fresh process that fails if the local engine imports Ray. The Ray engine's
    builds are compared with it."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("mini-local")
    region = region_yaml(folder)
    code = ("import sys; from urp_data.build.run import build_region; "
            f"build_region({str(region)!r}, out={str(folder / 'out')!r}, chunk_size=8); "
            "assert 'ray' not in sys.modules, 'the local engine imported ray'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return region, folder / "out" / "mini"
