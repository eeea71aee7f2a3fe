"""Hostile region configs and output folders: one line, exit 1, nothing outside the output folder touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from urp_data.build.identity import config_key, library_versions, manifest_inputs
from urp_data.build.run import build
from urp_data.build.sources import open_sources
from urp_data.cli import main
from urp_data.config.build import BuildConfig
from urp_data.config.regions import load_region
from urp_data.errors import OutputError, RegionError
from urp_data.util.fs import check_name, inside, replace_dir


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder beside the output folder that a hostile config would like to delete."""
    v = tmp_path / "victim"
    (v / "sub").mkdir(parents=True)
    (v / "precious.txt").write_text("keep me")
    (v / "sub" / "data.bin").write_bytes(b"\x00" * 10)
    return v


@pytest.mark.parametrize("name", ["../victim", "a/b", "..", "", ".hidden", "-flag", "x" * 65, "a\x00b", "/abs",
                                  "ok..no", "na me"])
def test_region_names_that_could_escape_are_refused(write_region, tmp_path, victim, capsys, name):
    region = write_region()
    data = yaml.safe_load(region.read_text())
    data["name"] = name
    region.write_text(yaml.safe_dump(data))
    before = _snapshot(victim)
    assert main(["build", "--region", str(region), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "region name" in err and "not allowed" in err
    assert _snapshot(victim) == before
    assert not (tmp_path / "out").exists()


def test_names_that_are_fine():
    for name in ("demo", "my_city", "Olinda-2010", "v1.2"):
        assert check_name(name, "region name") == name
    with pytest.raises(RegionError):
        check_name(5, "region name")


@pytest.mark.parametrize("link", [".mini.partial", "mini"])
def test_links_out_of_the_output_folder_are_not_followed(write_region, tmp_path, victim, capsys, link):
    out = tmp_path / "out"
    out.mkdir()
    (out / link).symlink_to(victim, target_is_directory=True)
    before = _snapshot(victim)
    assert main(["build", "--region", str(write_region()), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the output folder" in err
    assert _snapshot(victim) == before


def test_replace_dir_and_inside_refuse_paths_outside(tmp_path, victim):
    out = tmp_path / "out"
    (out / "new").mkdir(parents=True)
    with pytest.raises(OutputError):
        replace_dir(out, out / "new", victim)
    with pytest.raises(OutputError):
        inside(out, out)  # the folder itself is not inside it
    assert (out / "new").is_dir() and (victim / "precious.txt").is_file()


def test_unreadable_state_file_starts_afresh(write_region, tmp_path):
    out = tmp_path / "out"
    (out / ".mini.partial").mkdir(parents=True)
    (out / ".mini.partial" / "state.json").write_text("{not json")
    built = build(BuildConfig(region=str(write_region()), out=str(out)))
    assert (built / "train.parquet").is_file() and not (out / ".mini.partial").exists()


def test_resume_key_covers_sidecars_and_library_versions(write_region, tmp_path, data_dir):
    shp = tmp_path / "tracts"
    shp.mkdir()
    for f in (data_dir / "demo").glob("olinda_census_tracts.*"):
        shutil.copy(f, shp / f.name)
    region = write_region(indicators=[{"name": "census_count", "type": "vector", "method": "area_weighted_sum",
                                       "path": str(shp / "olinda_census_tracts.shp"), "column": "V014"}])
    reg = load_region(region)
    inputs = manifest_inputs(reg, open_sources(reg))
    census = next(i for i in inputs if i["role"] == "indicator:census_count")
    assert {Path(f).suffix for f in census["files"]} >= {".dbf", ".shx", ".prj"}
    versions = library_versions()
    key = config_key(reg, 8, inputs, versions)
    assert key == config_key(reg, 8, manifest_inputs(reg, open_sources(reg)), versions)
    with open(shp / "olinda_census_tracts.prj", "a") as f:  # an edited sidecar: the .shp is unchanged
        f.write(" ")
    assert config_key(reg, 8, manifest_inputs(reg, open_sources(reg)), versions) != key
    assert config_key(reg, 8, inputs, {**versions, "gdal": "0.0"}) != key
    assert "gdal" in versions and "pillow" in versions


def test_atomic_writes_are_as_readable_as_plain_writes(tmp_path):
    from urp_data.util.fs import atomic_write_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
