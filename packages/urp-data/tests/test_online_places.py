"""Online addresses (Nominatim, Photon) and Overpass POIs against loopback emulations, with faults.

The emulations (tests/servers.py) answer in the providers' documented formats from the Monaco OSM
extract and GeoNames. A small Monaco region (Blue Marble chips, a handful of samples) is built
against them: through 429s, 503s, HTML pages sent with status 200, truncated and trickling bodies,
an Overpass runtime-error remark and a busy Overpass slot, the build equals the clean one row for
row; a rebuild sends nothing; the per-host limit holds for two worker processes (server-side
times); a bulk job on the public Nominatim and every failure stop with one line and exit 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from servers import (
    Faulty,
    OsmSample,
    ReverseGeocoder,
    nominatim_reverse,
    overpass_interpreter,
    overpass_status,
    photon_reverse,
    serve,
)
from urp_data import cli
from urp_data.build.plan import apply_overrides
from urp_data.build.run import build_region
from urp_data.build.sources import open_sources
from urp_data.config.build import BuildConfig
from urp_data.config.regions import GeocoderConfig, load_region
from urp_data.contract import SPLITS, load_manifest
from urp_data.errors import InputError, RegionError
from urp_data.net import hosts, http
from urp_data.net.hosts import PUBLIC_MAX_REQUESTS
from urp_data.sources.places.gazetteer import Gazetteer
from urp_data.sources.places.online import OnlineGeocoder, nominatim_address, photon_address
from urp_data.sources.places.poi import OVERPASS_MAX_AREA_KM2, Overpass
from urp_data.util.fs import cache_dir

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "data"
MONACO = [7.409, 43.725, 7.439, 43.752]  # lon/lat: (left, bottom, right, top)


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Requests to anything but loopback go to a closed port: no test here can reach a public service."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture(scope="module")
def geo() -> ReverseGeocoder:
    return ReverseGeocoder(OsmSample(DATA / "osm" / "monaco.osm.pbf"))


@pytest.fixture
def api(geo, tmp_path, monkeypatch):
    """The emulations' base URL; tiny backoffs; an empty HTTP cache for this test (also for subprocesses)."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "geonames").symlink_to(cache_dir("geonames"), target_is_directory=True)  # converted once, not per test
    monkeypatch.setenv("URP_CACHE_DIR", str(root))
    monkeypatch.setattr(http, "CACHE_DIR", root / "http")
    monkeypatch.setattr(http, "BACKOFF_FACTOR", 0.01)
    monkeypatch.setattr(http, "BACKOFF_MAX_S", 0.05)
    with serve() as url:
        Faulty.routes = {"/nominatim/reverse": nominatim_reverse(geo), "/photon/reverse": photon_reverse(geo),
                         "/api/interpreter": overpass_interpreter(geo.sample), "/api/status": overpass_status}
        Faulty.slot_wait_s = 0
        yield url


def monaco(folder: Path, api: str | None, name: str = "monaco-online", provider: str = "nominatim",
           samples: int = 5, resolution: int = 9, poi: bool = True, **geocoder) -> Path:
    """A region YAML of a few Monaco cells whose addresses and POIs come from the emulations at ``api``."""
    region = {
        "name": name,
        "area": {"bbox": MONACO},
        "sampling": {"resolution": resolution, "samples": samples, "seed": 0},
        "chip": {"size_px": 32, "footprint_m": 100},
        "splits": {"group_by": "h3:8", "unseen_fraction": 0.25, "buffer_km": 0},
        "countries": "gazetteer",
        "geocoder": {"provider": provider, **({"url": f"{api}/{provider}"} if api else {}), **geocoder},
        "imagery": [{"type": "raster", "path": str(DATA / "global" / "bluemarble_2700x1350.jpg"),
                     "crs": "EPSG:4326", "bounds": [-180, -90, 180, 90]}],
        "poi": [{"type": "overpass", "bbox": MONACO, "url": f"{api}/api/interpreter", "radius_km": 0.5,
                 "min_interval_s": 0.05}] if poi else [],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(region))
    return path


def rows(build: Path) -> dict[str, list[dict]]:
    return {s: pq.read_table(build / f"{s}.parquet").to_pylist() for s in SPLITS}


def requests_to(prefix: str) -> list[float]:
    return sorted(t for t, p in Faulty.log if p.startswith(prefix))


def cli_build(capsys, region: Path, out: Path, *flags: str) -> tuple[int, str]:
    """``urp-data build`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = cli.main(["build", "--region", str(region), "--out", str(out), *flags])
    return code, capsys.readouterr().err


def error_line(code: int, err: str) -> str:
    """The error line of a failed build, checked to be its only line on stderr and to give exit code 1."""
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("urp-data build: error: ")
    return err.strip()


@pytest.mark.parametrize("provider", ["nominatim", "photon"])
def test_a_build_through_faults_equals_the_clean_build_and_a_rebuild_sends_nothing(api, tmp_path, monkeypatch,
                                                                                     provider):
    region = monaco(tmp_path, api, provider=provider, min_interval_s=0.05)
    clean = build_region(str(region), out=tmp_path / "clean", chunk_size=2)
    sent = len(Faulty.log)
    assert len(requests_to(f"/{provider}/reverse")) == 5 and len(requests_to("/api/interpreter")) == 1

    again = build_region(str(region), out=tmp_path / "again", chunk_size=2)
    assert len(Faulty.log) == sent  # everything from the cache: no request at all
    assert rows(again) == rows(clean)

    monkeypatch.setattr(http, "CACHE_DIR", tmp_path / "cache2")
    Faulty.log = []
    Faulty.slot_wait_s = 1
    Faulty.faults = {
        # sample 1: 429 (waits its Retry-After), 503, HTML with 200, 503, truncated, then good;
        # sample 2: truncated without Content-Length, then a trickle (slow and short), then good.
        f"/{provider}/reverse": ["429:1", "503", "html200", "503", "truncated", "ok", "truncated-no-length",
                                 "trickle"],
        "/api/interpreter": ["503", "503", "503", "429:1", "remark", "html200"],  # a burst, then bad bodies
    }
    faulty = build_region(str(region), out=tmp_path / "faulty", chunk_size=2)
    assert rows(faulty) == rows(clean)
    assert not any(Faulty.faults.values())  # every fault was played
    status, query = requests_to("/api/status"), requests_to("/api/interpreter")
    assert len(status) == 1 and len(query) == 7 and query[0] - status[0] >= 0.95  # waited for the busy slot

    got = [r for split in rows(clean).values() for r in split]
    suburbs = {n["tags"]["name"] for n in OsmSample(DATA / "osm" / "monaco.osm.pbf").suburbs}
    assert got and all(r["address"].split(", ")[0] in suburbs for r in got)  # from the service, not GeoNames
    kinds = {p["kind"] for r in got for p in r["nearby_places"]}
    assert kinds - {"city"}  # Overpass POIs (restaurants, shops ...) besides the GeoNames places
    manifest = load_manifest(clean)
    roles = {i["role"]: i for i in manifest.inputs}
    assert roles["geocoder"]["path"].startswith(f"{provider} {api}/{provider}/reverse")
    assert "ODbL" in roles["geocoder"]["licence"] and "OpenStreetMap" in roles["geocoder"]["licence"]
    assert roles["poi"]["path"].startswith(f"overpass {api}/api/interpreter")


@pytest.mark.slow
def test_two_workers_use_the_one_overpass_fetch_and_geocode_each_sample_once(api, tmp_path):
    # The other worker reads the POIs the build fetched into the cache before any chunk.
    region = monaco(tmp_path, api, min_interval_s=0.05)
    two = build_region(str(region), out=tmp_path / "two", chunk_size=1, workers=2)
    assert len(requests_to("/api/interpreter")) == 1 and len(requests_to("/nominatim/reverse")) == 5
    assert rows(two) == rows(build_region(str(region), out=tmp_path / "one", chunk_size=1))


def test_two_workers_keep_the_default_one_request_per_second(api, tmp_path, capsys):
    region = monaco(tmp_path, api, samples=4, poi=False)  # min_interval_s left at its default
    assert GeocoderConfig().min_interval_s == 1.0
    code, err = cli_build(capsys, region, tmp_path / "out", "--workers", "2", "--chunk-size", "2")
    assert code == 0, err
    times = requests_to("/nominatim/reverse")
    assert len(times) == 4 and min(np.diff(times)) >= 0.95  # server-side: never two in the same second


def test_a_bulk_job_on_the_public_nominatim_is_refused_before_anything_is_sent(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(http, "USER_AGENT", "urp-data/0.1 (a study; someone@example.org)")
    region = monaco(tmp_path, None, samples=6 * PUBLIC_MAX_REQUESTS, resolution=11, poi=False)
    # (held-out cells that touch a train chip are dropped: the plan keeps well over the limit)
    err = error_line(*cli_build(capsys, region, tmp_path / "out"))
    assert "allow_bulk" in err and "self-hosted" in err and "nominatim.openstreetmap.org" in err
    assert not list((tmp_path / "out").iterdir())  # nothing written, not even a partial build


@pytest.mark.parametrize("agent", [None, "urp-data/0.1", "my-script (someone@example.org)"])
@pytest.mark.parametrize("provider", ["nominatim", "photon"])
def test_a_public_geocoder_is_refused_to_a_client_without_project_and_contact(tmp_path, capsys, monkeypatch,
                                                                             agent, provider):
    if agent is not None:
        monkeypatch.setattr(http, "USER_AGENT", agent)
    err = error_line(*cli_build(capsys, monaco(tmp_path, None, provider=provider, samples=2, poi=False),
                                tmp_path / "out"))
    assert "URP_USER_AGENT" in err and "identify itself" in err and ("policies" in err or "fair use" in err)
    assert not list((tmp_path / "out").iterdir())


def test_a_403_from_a_geocoder_stops_the_build_naming_the_policy(api, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(hosts.POLICIES, "127.0.0.1", hosts.HostPolicy("127.0.0.1", 0.0, 60.0, "the test's usage policy"))
    Faulty.faults = {"/nominatim/reverse": ["403"]}
    err = error_line(*cli_build(capsys, monaco(tmp_path, api, samples=2, min_interval_s=0.0), tmp_path / "out"))
    assert "HTTP 403" in err and "blocks us" in err and "the test's usage policy" in err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.suffix in (".parquet", ".json") and p.name != "state.json"]


def test_the_public_nominatim_refuses_more_than_one_request_per_second():
    with pytest.raises(RegionError, match="1 request/s"):
        GeocoderConfig(provider="nominatim", min_interval_s=0.5)
    GeocoderConfig(provider="nominatim", url="http://127.0.0.1:1", min_interval_s=0.0)  # a self-hosted one may


@pytest.mark.parametrize("case", ["geocoder-404", "overpass-remark", "overpass-too-large", "geocoder-html"])
def test_every_failure_is_one_line_exit_1_and_nothing_is_written(api, tmp_path, capsys, case):
    region = monaco(tmp_path, api, samples=2, min_interval_s=0.0)
    if case == "geocoder-404":
        Faulty.faults = {"/nominatim/reverse": ["404"]}
    elif case == "geocoder-html":
        Faulty.faults = {"/nominatim/reverse": ["html200"] * (1 + http.BODY_RETRIES)}
    elif case == "overpass-remark":
        Faulty.faults = {"/api/interpreter": ["remark"] * (1 + http.BODY_RETRIES)}
    else:
        spec = yaml.safe_load(region.read_text())
        spec["poi"][0]["bbox"] = [7.0, 43.5, 7.5, 44.0]  # ~2,200 km2
        region.write_text(yaml.safe_dump(spec))
    err = error_line(*cli_build(capsys, region, tmp_path / "out"))
    expected = {"geocoder-404": "answered HTTP 404", "geocoder-html": "sent text/html",
                "overpass-remark": "Overpass stopped the query", "overpass-too-large": ".osm.pbf extract"}[case]
    assert expected in err and "%5B" not in err  # an Overpass query is named by its bbox, not its encoded text
    assert not (tmp_path / "out" / "monaco-online").exists()
    cached = [p for p in (tmp_path / "cache" / "http").rglob("*") if p.is_file() and ".pace" not in p.parts]
    bodies = [p.read_bytes() for p in cached]
    assert not any(b"runtime error" in b or b"<html>" in b for b in bodies)  # no bad body kept


def test_a_point_the_service_cannot_place_keeps_its_geonames_address(api):
    gaz = Gazetteer(1000)
    g = OnlineGeocoder("nominatim", gaz, url=api + "/nominatim", min_interval_s=0.0)
    lat, lon = np.array([43.7384, -30.0]), np.array([7.4246, -30.0])  # Monaco; the middle of the Atlantic
    got = g.addresses(lat, lon, ["MCO", None])
    assert got[0].startswith("Monte-Carlo, ") and got[0].endswith(", Monaco")  # the OSM suburb first
    assert got[1] == gaz.addresses(lat[1:], lon[1:], [None])[0] and got[1]


def test_addresses_follow_the_documented_formats():
    nominatim = {"place_id": 1, "licence": "x", "lat": "-8.0", "lon": "-34.8", "name": "Bairro Novo",
                 "address": {"suburb": "Bairro Novo", "city": "Olinda", "state": "Pernambuco", "country": "Brasil",
                             "country_code": "br"}}
    assert nominatim_address(nominatim) == "Bairro Novo, Olinda, Pernambuco, Brasil"
    assert nominatim_address({"error": "Unable to geocode"}) is None
    photon = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point",
              "coordinates": [-34.8, -8.0]}, "properties": {"osm_key": "place", "osm_value": "town", "name": "Olinda",
                                                             "state": "Pernambuco", "country": "Brazil"}}]}
    assert photon_address(photon) == "Olinda, Pernambuco, Brazil"
    assert photon_address({"type": "FeatureCollection", "features": []}) is None


def test_request_budgets_come_from_geometry_alone(api, tmp_path):
    lat, lon = np.linspace(43.73, 43.75, 7), np.full(7, 7.42)
    g = OnlineGeocoder("photon", Gazetteer(1000), url=api + "/photon", min_interval_s=0.5)
    (b,) = g.request_budget(lat, lon, 1000.0, 448)
    assert (b.source, b.host, b.requests, b.min_interval_s) == ("geocoder photon", api.split("//")[1], 7, 0.5)
    assert b.bytes > 0
    src = open_sources(load_region(monaco(tmp_path, api)))  # what a dry run opens: it must send nothing
    (geocoder,), (poi,) = src.geocoder.request_budget(lat, lon), src.pois[0].request_budget(lat, lon)
    assert geocoder.requests == 7 and geocoder.min_interval_s == 1.0 and poi.requests == 2
    small, big = Overpass(MONACO, api + "/api/interpreter"), Overpass([7.3, 43.6, 7.5, 43.8], api + "/api/interpreter")
    (s,), (l,) = small.request_budget(lat, lon), big.request_budget(lat, lon)
    assert s.requests == l.requests == 2 and l.bytes > s.bytes > 0
    assert not Faulty.log  # nothing was sent


def test_dry_run_prints_each_network_source_and_sends_nothing(api, tmp_path, capsys):
    region, out = monaco(tmp_path, api, samples=5), tmp_path / "out"
    capsys.readouterr()
    assert cli.main(["build", "--region", str(region), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    host = api.split("//")[1]
    samples = int(printed[0].split()[0])
    geocoder = next(line for line in printed if line.strip().startswith("geocoder nominatim"))
    assert geocoder.split()[2:4] == [host, str(samples)]  # one reverse request per planned sample
    assert any(line.strip().startswith("poi overpass") for line in printed)
    assert printed[-1].startswith(f"at least {samples} s (the politeness limit of {host}")  # 1 s apart
    assert not Faulty.log and not out.exists()


def test_overpass_refuses_a_large_bbox_and_names_the_fix():
    with pytest.raises(InputError, match="osm_pbf") as err:
        Overpass([0.0, 40.0, 1.0, 41.0])
    assert f"{OVERPASS_MAX_AREA_KM2:.0f} km2" in str(err.value)


def test_allow_bulk_lifts_the_refusal_which_only_public_instances_have(tmp_path):
    gaz = Gazetteer(1000)
    with pytest.raises(InputError, match="allow_bulk"):
        OnlineGeocoder("photon", gaz).refuse_bulk(PUBLIC_MAX_REQUESTS + 1)
    OnlineGeocoder("nominatim", gaz).refuse_bulk(PUBLIC_MAX_REQUESTS)
    OnlineGeocoder("nominatim", gaz, allow_bulk=True).refuse_bulk(10**6)
    OnlineGeocoder("nominatim", gaz, url="http://127.0.0.1:1").refuse_bulk(10**6)  # self-hosted: no policy of ours
    region = load_region(monaco(tmp_path, None))
    assert not region.geocoder.allow_bulk
    assert apply_overrides(region, BuildConfig(region="x", allow_bulk=True)).geocoder.allow_bulk  # --allow-bulk


def test_the_documented_nominatim_answer_is_read_unchanged(api):
    # Nominatim's own jsonv2 example (docs/api/Reverse.md, see data/recorded/README.md), served as recorded
    body = (Path(__file__).parent / "data" / "recorded" / "nominatim_reverse_jsonv2.json").read_bytes()
    Faulty.routes["/nominatim/reverse"] = lambda query: (body, "application/json; charset=utf-8")
    geocoder = OnlineGeocoder("nominatim", Gazetteer(1000), url=f"{api}/nominatim", min_interval_s=0.0)
    assert geocoder.address(-34.44076, -58.70521) == "El Triángulo, Buenos Aires, Argentina"
    [(_, sent)] = Faulty.log
    assert "format=jsonv2" in sent and "addressdetails=1" in sent


RECORDED = Path(__file__).parent / "data" / "recorded"


def test_the_documented_photon_answer_is_read_unchanged(api):
    # Photon's own example response (docs/api-v1.md, see data/recorded/README.md), served as documented: it
    # leaves out the "type": "FeatureCollection" the server writes, which is therefore not required
    body = (RECORDED / "photon_api_example.json").read_bytes()
    Faulty.routes["/photon/reverse"] = lambda query: (body, "application/json;charset=utf-8")
    geocoder = OnlineGeocoder("photon", Gazetteer(1000), url=f"{api}/photon", min_interval_s=0.0)
    assert geocoder.address(52.5170365, 13.3888599) == "Berlin, Germany"  # its first feature: a place, its state
    [(_, sent)] = Faulty.log
    assert sent.startswith("/photon/reverse?") and "lat=52.517037" in sent and "lon=13.388860" in sent
    with pytest.raises(ValueError, match="FeatureCollection"):  # a type, when given, must still be that one
        photon_address({**yaml.safe_load(body), "type": "Feature"})


def _overpass_status(free: int, slots_in_s: list[int], running: int) -> str:
    """``/api/status`` as Overpass API's public_status.cc writes it (vendored in data/recorded/): each line
    below is one of its output statements, checked against the file, for a client with ``free`` slots,
    slots freed in ``slots_in_s`` seconds and ``running`` queries of its own."""
    source = (RECORDED / "overpass_public_status.cc").read_text()
    for statement in ('out<<"Connected as: "<<client_token<<\'\\n\';', 'out<<"Current time: "<<to_date(now)<<\'\\n\';',
                      'out<<"Announced endpoint: "<<(server_name == "/api/" ? "none" : server_name)<<\'\\n\';',
                      'out<<"Rate limit: "<<status.rate_limit<<\'\\n\';', '<<" slots available now.\\n";',
                      'out<<"Slot available after: "<<to_date(*it)<<", in "<<*it - now<<" seconds.\\n";',
                      'out<<"Currently running queries (pid, space limit, time limit, start time):\\n";',
                      "out<<it->pid<<'\\t'<<it->max_space<<'\\t'<<it->max_time<<'\\t'<<to_date(it->start_time)<<'\\n';"):
        assert statement in source, statement
    now = 1_700_000_000

    def date(t: int) -> str:
        return f"{np.datetime64(t, 's')}Z"

    lines = ["Connected as: 3232235777", f"Current time: {date(now)}", "Announced endpoint: none",
             f"Rate limit: {free + len(slots_in_s) + running}"]
    lines += [f"{free} slots available now."] if free else []
    lines += [f"Slot available after: {date(now + s)}, in {s} seconds." for s in slots_in_s]
    lines += ["Currently running queries (pid, space limit, time limit, start time):"]
    lines += [f"{4711 + i}\t536870912\t180\t{date(now - 30)}" for i in range(running)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("free", "slots_in_s", "running", "wait_s"),
                         [(2, [], 0, 0.0), (1, [], 1, 0.0), (0, [41, 12], 0, 12.0), (0, [7], 1, 7.0), (0, [-3], 1, 0.0)])
def test_overpass_status_texts_as_its_source_writes_them_are_read_unchanged(api, free, slots_in_s, running, wait_s):
    text = _overpass_status(free, slots_in_s, running)
    Faulty.routes["/api/status"] = lambda query: (text.encode(), "text/plain; charset=utf-8")  # its Content-Type
    assert Overpass(MONACO, api + "/api/interpreter", min_interval_s=0.0)._slot_wait_s() == wait_s
    assert [p for _, p in Faulty.log] == ["/api/status"]
