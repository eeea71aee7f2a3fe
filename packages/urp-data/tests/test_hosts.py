"""Per-host policy (urp_data.net.hosts) against the loopback fault server: a floor under the
configured pace, a 429 without Retry-After backing off for the host's window, every wait inside
the request's deadline, refused hosts, downloads-only hosts, and what --dry-run says."""

from __future__ import annotations

import itertools
import time

import pytest
from servers import Faulty, indicator_raster
from urp_data.cli import main
from urp_data.errors import InputError
from urp_data.net import downloads, hosts, http
from urp_data.sources.imagery.xyz import XYZImagery


def _loopback(monkeypatch, **kw):
    """Give 127.0.0.1 a policy, as if it were one of the public hosts."""
    policy = hosts.HostPolicy("127.0.0.1", **{"min_interval_s": 0.0, "window_s": 60.0, "source": "test policy", **kw})
    monkeypatch.setitem(hosts.POLICIES, "127.0.0.1", policy)


def _times(path: str) -> list[float]:
    return [t for t, p in Faulty.log if p.split("?")[0] == path]


def test_the_hosts_pace_is_a_floor_under_the_configured_one(server, monkeypatch):
    _loopback(monkeypatch, min_interval_s=0.4)
    for name in ("a", "b", "c"):
        http.get(f"{server}/{name}.json", min_interval_s=0.0)
    times = sorted(t for t, _ in Faulty.log)
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.35


def test_a_429_without_retry_after_waits_for_the_hosts_window(server, monkeypatch):
    Faulty.faults = {"/a.json": ["429-bare"]}
    http.get(server + "/a.json", min_interval_s=0.0)
    first = _times("/a.json")
    assert first[1] - first[0] < 0.5  # no policy: urllib3's backoff, which starts at 0
    _loopback(monkeypatch, window_s=1.5)
    Faulty.faults = {"/b.json": ["429-bare"]}
    http.get(server + "/b.json", min_interval_s=0.0)
    second = _times("/b.json")
    assert second[1] - second[0] >= 1.4  # the host's documented window


@pytest.mark.parametrize(("reset_s", "window_s", "low", "high"),
                         [(2, 30.0, 0.9, 2.5), (-5, 30.0, 0.0, 0.5), (30, 1.5, 1.4, 2.5)])
def test_a_429s_x_ratelimit_reset_is_waited_for_within_the_hosts_window(server, monkeypatch, reset_s, window_s, low,
                                                                          high):
    # a 429 without Retry-After but with X-RateLimit-Reset (epoch seconds): until the reset, never past the window
    _loopback(monkeypatch, window_s=window_s)
    Faulty.faults = {"/a.json": [f"429-reset:{reset_s}"]}
    http.get(server + "/a.json", min_interval_s=0.0)
    first, second = _times("/a.json")
    assert low <= second - first < high


def test_a_wait_past_the_deadline_fails_at_once_in_one_line(server, monkeypatch):
    _loopback(monkeypatch, window_s=30.0)
    Faulty.faults = {"/a.json": ["429-bare"]}
    start = time.monotonic()
    with pytest.raises(InputError, match="past the request's deadline") as err:
        http.get(server + "/a.json", min_interval_s=0.0, deadline_s=2.0)
    assert time.monotonic() - start < 2.0 and "\n" not in str(err.value)
    Faulty.faults = {"/b.json": ["429:20"]}  # a Retry-After the deadline cannot hold either
    with pytest.raises(InputError, match="asks us to wait 20 s"):
        http.get(server + "/b.json", min_interval_s=0.0, deadline_s=2.0)


@pytest.mark.parametrize("url", ["https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                                 "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png"])
def test_the_osm_tile_servers_are_refused_naming_the_policy(url):
    with pytest.raises(InputError, match="tile usage policy.*forbids bulk downloading"):
        XYZImagery(url)


def test_a_downloads_only_host_is_sent_no_range(server, monkeypatch, tmp_path):
    cog = indicator_raster(tmp_path / "www" / "nir.tif", block_px=64)
    _loopback(monkeypatch, ranges=False)
    body, size = downloads.get_range(server + "/nir.tif", 100, 50, min_interval_s=0.0)
    assert body == cog.read_bytes()[100:150] and size == cog.stat().st_size
    assert Faulty.range_encodings == []  # the whole file was asked for, not a range
    assert downloads.whole_file(server + "/nir.tif") is not None


def test_dry_run_says_the_pace_per_host_and_where_it_comes_from(server, monkeypatch, write_region, tmp_path, capsys):
    indicator_raster(tmp_path / "www" / "nir.tif", block_px=64)
    _loopback(monkeypatch, min_interval_s=0.7)
    region = write_region(indicators=[{"name": "nir", "type": "raster", "url": server + "/nir.tif",
                                       "min_interval_s": 0.1}])
    assert main(["build", "--region", str(region), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    host = server.split("//")[1]
    [line] = [x for x in out.splitlines()[out.splitlines().index("pace per host, and where it comes from:"):]
              if x.strip().startswith(host)]
    assert "0.70s" in line and "test policy" in line
