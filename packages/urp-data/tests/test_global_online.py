"""The shipped ``global-online`` recipe end to end, its hosts replaced by loopback ones through its URL settings.

The region file is the recipe's own, with each URL pointed at a loopback host, and made small (the
Olinda scene's bbox, 6 samples, 16 px chips, no unseen countries; local paths made absolute). Its hosts
misbehave as the real ones do (issue 20): the WorldPop host answers 200 with the whole file to a range
request, the Zenodo host a 429 without ``Retry-After``, the STAC API lists an item whose ``visual`` asset
is missing (404), and the Nominatim host answers with its documented jsonv2 example (data/recorded/).
A geocoder that answers 403 stops the build in one line. The loopback host has a Zenodo-like policy
(:mod:`urp_data.net.hosts`) with a 1 s window, so the 429's wait is seen without waiting a minute.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from servers import Faulty, indicator_raster, serve
from stac_servers import Host, olinda_cogs, olinda_items, running
from urp_data.cli import main
from urp_data.config.regions import list_regions
from urp_data.contract import SPLITS, load_manifest
from urp_data.net import hosts, http

RECIPE = list_regions()["global-online"]
RECORDED = Path(__file__).parent / "data" / "recorded"
GDP_2022 = 33_000.0  # band 33 (2022) of the emulated Kummu et al. file holds 1000 x its band number
WINDOW_S = 1.0


@pytest.fixture
def loopback(tmp_path, data_dir, monkeypatch):
    """(the STAC API, the asset and Zenodo host, the WorldPop and Nominatim server's URL): all on loopback."""
    root = tmp_path / "cache"
    monkeypatch.setenv("URP_CACHE_DIR", str(root))
    monkeypatch.setattr(http, "CACHE_DIR", root / "http")
    monkeypatch.setattr(http, "BACKOFF_FACTOR", 0.01)
    monkeypatch.setattr(http, "BACKOFF_MAX_S", 0.05)
    monkeypatch.setitem(hosts.POLICIES, "127.0.0.1", hosts.HostPolicy(
        "127.0.0.1", 0.0, WINDOW_S, "test policy: Zenodo's, with a 1 s window"))
    (tmp_path / "cogs").mkdir()
    files = olinda_cogs(tmp_path / "cogs", data_dir / "demo" / "olinda_l7_etm.tif")
    with rasterio.open(files / "rast_adm2_gdp_perCapita_1990_2022.tif", "w", driver="GTiff", width=20, height=20,
                       count=33, dtype="float32", crs="EPSG:4326", transform=from_origin(-34.95, -7.9, 0.01, 0.01),
                       tiled=True, blockxsize=16, blockysize=16) as gdp:
        for band in range(1, 34):
            gdp.write(np.full((20, 20), 1000.0 * band, np.float32), band)
    worldpop = indicator_raster(tmp_path / "www" / "ppp_2020_1km_Aggregated.tif", block_px=128)
    Faulty.files = worldpop.parent
    nominatim = (RECORDED / "nominatim_reverse_jsonv2.json").read_bytes()
    with running(Host(files=files)) as cog, running(Host(items=[])) as api, serve() as www:
        items = olinda_items(files, cog.url, href_a=cog.url + "/gone.tif", collection="sentinel-2-c1-l2a")
        backup = json.loads(json.dumps(items[0]))  # the next-best item holding the east: a's asset, 15 % cloud
        backup["id"], backup["properties"]["eo:cloud_cover"] = "backup", 15.0
        backup["assets"]["visual"]["href"] = cog.url + "/a.tif"
        api.items = [*items, backup]
        Faulty.ignore_range = True  # as data.worldpop.org does
        Faulty.routes = {"/nominatim/reverse": lambda query: (nominatim, "application/json; charset=utf-8")}
        yield api, cog, www


def _region(folder: Path, api: str, files: str, www: str) -> Path:
    doc = yaml.safe_load(RECIPE.read_text())
    doc.update(area={"bbox": [-34.89, -8.02, -34.85, -7.98]}, sampling={"resolution": 8, "seed": 0, "samples": 6},
               splits={"buffer_km": 0, "unseen_fraction": 0.0},
               countries=str((RECIPE.parent / doc["countries"]).resolve()))
    doc["chip"].update(size_px=16, footprint_m=300)
    doc["geocoder"].update(url=www + "/nominatim", min_interval_s=0.0)
    [s2] = doc["imagery"]
    s2.update(api=api, min_interval_s=0.0)
    for spec in doc["indicators"]:
        if "url" in spec:
            name = urlsplit(spec["url"]).path.rsplit("/", 1)[1]
            spec.update(url=f"{www if 'worldpop' in spec['url'] else files}/{name}", min_interval_s=0.0)
        else:
            spec["path"] = str((RECIPE.parent / spec["path"]).resolve())
    path = folder / "global-online-loopback.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _rows(out: Path) -> list[dict]:
    return [r for s in SPLITS for r in pq.read_table(out / f"{s}.parquet").to_pylist()]


@pytest.mark.slow
def test_global_online_dry_runs_and_builds_through_the_real_hosts_faults(loopback, tmp_path, capsys, monkeypatch):
    api, cog, www = loopback
    region = _region(tmp_path, api.url, cog.url, www)
    out = tmp_path / "out"
    # Zenodo's 429 without Retry-After meets the dry run, which opens the COG (its first chunk: here, all of it)
    cog.faults = {"/rast_adm2_gdp_perCapita_1990_2022.tif": ["429-bare"]}
    assert main(["build", "--region", str(region), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert not out.exists() and not api.log  # the STAC API is opened by a build, not by a dry run
    population = next(line for line in printed.splitlines() if "indicator population" in line)
    size_kb = (Faulty.files / "ppp_2020_1km_Aggregated.tif").stat().st_size / 1000
    assert www.split("//")[1] in population and population.split()[3:5] == ["1", f"{size_kb:.1f}"]  # the whole file

    assert main(["build", "--region", str(region), "--out", str(out)]) == 0
    built = out / "global-online"
    rows = _rows(built)
    assert len(rows) == 6
    # the missing asset of the least-cloudy item holding the east: the next-best item's instead
    assert {r["scene_id"] for r in rows if r["lon"] > -34.87} == {"backup"}
    assert {r["scene_id"] for r in rows if r["lon"] < -34.87} <= {"b"} and any(p == "/gone.tif" for *_, p, _ in cog.log)
    # WorldPop's 200 to a range request: the file downloaded whole, once, and read locally
    worldpop = [p for _, p in Faulty.log if p.endswith("ppp_2020_1km_Aggregated.tif")]
    assert len(worldpop) == 2  # the dry run's request (its answer's size counted, its body left) and the build's
    assert all(np.isfinite(r["population"]) and r["population"] > 0 for r in rows)
    m = load_manifest(built)
    [pop] = [i for i in m.inputs if i["role"] == "indicator:population"]
    served = (Faulty.files / "ppp_2020_1km_Aggregated.tif").read_bytes()
    assert pop["sha256"] == hashlib.sha256(served).hexdigest() and pop["sha256_note"].startswith("first seen")
    # Zenodo's 429: retried after the host's window, not urllib3's backoff; the build read the cached chunk
    gdp = [t for t, _, p, _ in cog.log if p.endswith("perCapita_1990_2022.tif")]
    assert not any(cog.faults.values()) and gdp[1] - gdp[0] >= WINDOW_S * 0.9
    np.testing.assert_allclose([r["gdp_per_capita"] for r in rows], GDP_2022, rtol=1e-12)  # band 33, not 32
    assert {r["address"] for r in rows} == {"El Triángulo, Buenos Aires, Argentina"}  # the recorded answer

    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache403" / "http")  # nothing cached: the geocoder is asked
    Faulty.faults = {"/nominatim/reverse": ["403"] * 5}
    blocked = tmp_path / "blocked"
    assert main(["build", "--region", str(region), "--out", str(blocked)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "answered HTTP 403" in err[-1] and "blocks us" in err[-1] and "Traceback" not in "\n".join(err)
    assert sum("error:" in line for line in err) == 1
    assert not (blocked / "global-online").exists()
