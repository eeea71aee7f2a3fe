"""``urp-data build --dry-run``: per-source request budgets and the floor the slowest host sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from urp_data.cli import main
from urp_data.net.budget import RequestBudget, format_budget, per_host


def test_hosts_add_up_their_sources_and_the_slowest_sets_the_floor():
    budgets = [RequestBudget("imagery xyz", "tiles.example", 4000, 4000 * 20_000, 0.1),
               RequestBudget("indicator population", "data.example", 10, 5_000_000, 1.0),
               RequestBudget("indicator night_light", "data.example", 30, 1_000_000, 1.0),
               RequestBudget("geocoder nominatim", "nominatim.example", 1000, 1000 * 2_000, 1.0)]
    hosts = per_host(budgets)
    assert [h.host for h in hosts] == ["nominatim.example", "tiles.example", "data.example"]
    data = hosts[-1]
    assert (data.requests, data.bytes, data.seconds) == (40, 6_000_000, pytest.approx(40.0))
    assert hosts[1].seconds == pytest.approx(400.0)
    text = format_budget(budgets, samples=1000)
    lines = text.splitlines()
    hosts_at = lines.index("pace per host, and where it comes from:")
    assert hosts_at == 2 + len(budgets) and len(lines) == hosts_at + 1 + 3 + 1  # a line per host
    assert all("the source's min_interval_s" in x for x in lines[hosts_at + 1:-1])  # none of them has a policy
    assert "4,000" in lines[2] and "80.0 MB" in lines[2] and "7 min" in lines[2]
    assert lines[-1].startswith("at least 17 min (the politeness limit of nominatim.example: 1,000 requests)")


def test_a_hosts_policy_is_a_floor_under_the_configured_pace_and_is_named():
    budgets = [RequestBudget("indicator gdp", "zenodo.org", 100, 100 * 262_144, 0.1),
               RequestBudget("indicator pop", "data.example", 100, 1_000, 0.2)]
    assert [b.pace_s for b in budgets] == [0.7, 0.2]
    assert per_host(budgets)[0].seconds == pytest.approx(70.0)
    lines = format_budget(budgets, samples=100).splitlines()
    [zenodo] = [x for x in lines if x.strip().startswith("zenodo.org") and "policy" in x]
    assert "0.70s" in zenodo and "developers.zenodo.org" in zenodo


def test_dry_run_of_a_local_region_fetches_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "build"
    assert main(["build", "--region", "demo", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("599 samples; every source is local")
    assert not out.exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_grid_too_large_to_list_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, dry_run):
    """Grid sampling over the whole globe at resolution 8 (as a STAC API source without bbox would ask)."""
    import yaml

    data = Path(__file__).resolve().parents[3] / "data"
    region = tmp_path / "whole-earth.yaml"
    region.write_text(yaml.safe_dump({
        "name": "whole-earth", "area": {"from_imagery": True}, "sampling": {"mode": "polyfill", "resolution": 8, "samples": 10},
        "countries": "gazetteer",
        "imagery": [{"type": "raster", "path": str(data / "global" / "bluemarble_2700x1350.jpg"),
                     "crs": "EPSG:4326", "bounds": [-180, -90, 180, 90]}]}))
    out = tmp_path / "out"
    assert main(["build", "--region", str(region), "--out", str(out), *(["--dry-run"] if dry_run else [])]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "H3 cells at resolution 8, too many to list" in err, err
    assert not out.exists() or not any(out.rglob("*.parquet"))
