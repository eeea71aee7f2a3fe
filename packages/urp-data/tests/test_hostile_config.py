"""Hostile region configs (issue 22): every bad setting is refused in one line that names the key, with
exit 1, by a build and by its dry run alike. The probes are the files in tests/data/hostile/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from urp_data.cli import main

HOSTILE = Path(__file__).parent / "data" / "hostile"

PROBES = {  # file: what its one line must name
    "negative_footprint": "chip.footprint_m=-3000",
    "size_px_zero": "chip.size_px=0",
    "size_px_huge": "chip.size_px=60000",
    "nearby_negative": "geocoder.nearby=-3",
    "poi_radius_negative": "radius_km=-1",
    "resolution_fraction": "sampling.resolution=8.5",
    "bbox_below_pole": "area.bbox=[-10, -90.5, 10, 10]",
    "bbox_infinite": "area.bbox=[-inf, -10, inf, 10]",
    "min_interval_negative": "geocoder.min_interval_s=-1",
    "description_list": "region.description=",
    "settlement_billion": "sampling.samples=1,000,000,000",
}

def _refused(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and "unexpected" not in err, err
    return err

@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("probe", sorted(PROBES))
def test_a_bad_setting_is_refused_in_one_line_naming_it(probe, dry_run, tmp_path, capsys):
    argv = ["build", "--region", str(HOSTILE / f"{probe}.yaml"), "--out", str(tmp_path)]
    err = _refused(capsys, argv + (["--dry-run"] if dry_run else []))
    assert PROBES[probe] in err
    assert not (tmp_path / probe).exists()

def test_a_billion_global_samples_are_refused_before_allocating(tmp_path, capsys):
    for extra in (["--dry-run"], []):
        err = _refused(capsys, ["build", "--region", "global", "--samples", "1000000000", "--out", str(tmp_path),
                                *extra])
        assert "sampling.samples=1,000,000,000 is more than the 691,776,122 H3 cells" in err
        err = _refused(capsys, ["build", "--region", "global", "--samples", "500000000", "--out", str(tmp_path),
                                *extra])  # ~466 GiB to plan
        assert "sampling.samples=500,000,000 needs ~" in err and "GiB" in err

def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """10^9 leaves once expanded; before, the resume key's dataclasses.asdict expanded them and hung."""
    probe = HOSTILE / "alias_bomb.yaml"
    run = subprocess.run([sys.executable, "-m", "urp_data.cli", "build", "--region", str(probe), "--out",
                          str(tmp_path), "--dry-run"], check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "expands to more than 100,000 values" in run.stderr and run.stderr.count("\n") == 1


def test_an_antimeridian_box_samples_both_sides(tmp_path):
    from urp_data.sampling.cells import bbox_polygon, cell_centres, polyfill

    cells = polyfill(bbox_polygon([179.9, -17.0, -179.9, -16.9]), 8)
    _, lon = cell_centres(cells)
    assert (lon > 179.9).any() and (lon < -179.9).any() and not ((lon > -179.9) & (lon < 179.9)).any()

# ---------------------------------------------------------------- property: build or one line, never "unexpected"

_hostile_value = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(-200, 200), max_size=5), st.dictionaries(st.text(max_size=3),
                                                                                        st.integers(), max_size=2),
)
_SECTION_KEYS = {
    "sampling": ["resolution", "samples", "seed", "spread_km", "mode"],
    "chip": ["size_px", "footprint_m", "quality", "min_valid_fraction", "format"],
    "geocoder": ["nearby", "radius_km", "min_population", "zoom", "min_interval_s"],
    "splits": ["unseen_fraction", "val_fraction", "buffer_km", "block_resolution", "group_by"],
    "area": ["bbox"],
}

@st.composite
def _region(draw):
    region: dict = {"name": "prop", "area": {"bbox": [-34.90, -8.03, -34.84, -7.96]}, "countries": "gazetteer",
                    "sampling": {"resolution": 7}, "chip": {"size_px": 16}}
    for section, keys in _SECTION_KEYS.items():
        for key in draw(st.lists(st.sampled_from(keys), max_size=2, unique=True)):
            region.setdefault(section, {})[key] = draw(_hostile_value)
    if draw(st.booleans()):
        region["poi"] = [{"type": "overpass", "bbox": draw(st.lists(_hostile_value, min_size=4, max_size=4)),
                          "url": "http://127.0.0.1:9/api/interpreter", "radius_km": draw(_hostile_value)}]
    return region

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(region=_region())
def test_any_region_config_builds_or_is_refused_in_one_line(region, tmp_path, capsys):
    path = tmp_path / "prop.yaml"
    path.write_text(yaml.safe_dump(region))
    code = main(["build", "--region", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    if code == 1:
        assert captured.err.count("\n") == 1 and "unexpected" not in captured.err, (region, captured.err)


@pytest.mark.parametrize("name", ["train.parquet", "manifest.json", "README.md", "sub/page.html", "."])
def test_preview_never_writes_into_the_build_but_its_default(name, tmp_path, capsys):
    """Before, ``preview BUILD --out BUILD/train.parquet`` exited 0 and overwrote the train split with HTML."""
    build = tmp_path / "b"
    build.mkdir()
    (build / "manifest.json").write_text('{"region": "b", "resolution": 8, "indicators": {}}')
    (build / "train.parquet").write_bytes(b"PAR1 the split")
    err = _refused(capsys, ["preview", str(build), "--out", str(build / name)])
    assert "is inside the build" in err
    assert (build / "train.parquet").read_bytes() == b"PAR1 the split"
