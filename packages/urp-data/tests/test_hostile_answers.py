"""Answers of the right shape and the wrong values (issue 22): refused in one line naming the host and
the field, never cached, and a rerun after the host recovers succeeds. Servers on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from servers import Faulty
from urp_data.errors import InputError
from urp_data.net import answers, http
from urp_data.sources.imagery.stac_catalog import _search_page
from urp_data.sources.places.online import OnlineGeocoder
from urp_data.sources.places.poi import Overpass

GOOD_NOMINATIM = {"lat": "43.73", "lon": "7.42", "name": "Monaco", "address": {"city": "Monaco", "country": "Monaco"}}
GOOD_PHOTON = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
    "type": "Point", "coordinates": [7.42, 43.73]}, "properties": {"osm_key": "place", "name": "Monaco",
                                                                   "country": "Monaco"}}]}
GOOD_OVERPASS = {"elements": [{"type": "node", "lat": 43.73, "lon": 7.42, "tags": {"name": "Café", "amenity": "cafe"}}]}


class Flaky:
    """A route that answers ``bad`` until ``healed`` is set, then ``good``."""

    def __init__(self, bad: bytes, good: dict) -> None:
        self.bad, self.good, self.healed = bad, good, False

    def __call__(self, query):
        return (json.dumps(self.good).encode() if self.healed else self.bad), "application/json"


def _bad(doc: dict) -> bytes:
    return json.dumps(doc).encode()


NOMINATIM_CASES = {
    "name is a list": (_bad({**GOOD_NOMINATIM, "name": ["x"]}), "field name is list"),
    "lone surrogate": (b'{"lat": "43.73", "lon": "7.42", "address": {"city": "Olinda\\ud800"}}',
                       "field address.city is not valid Unicode"),
    "latitude out of range": (_bad({**GOOD_NOMINATIM, "lat": "123"}), "field place.lat is '123'"),
    "nested a thousand deep": (b'{"lat": "1", "lon": "1", "address": ' + b"[" * 1000 + b"]" * 1000 + b"}",
                               "nested deeper than 32"),
}


@pytest.mark.parametrize("case", sorted(NOMINATIM_CASES))
def test_a_bad_nominatim_value_is_refused_uncached_and_a_rerun_succeeds(case, server):
    body, field = NOMINATIM_CASES[case]
    route = Faulty.routes["/reverse"] = Flaky(body, GOOD_NOMINATIM)
    geocoder = OnlineGeocoder("nominatim", gazetteer=None, url=server, min_interval_s=0)  # type: ignore[arg-type]
    with pytest.raises(InputError) as exc:
        geocoder.address(43.73, 7.42)
    assert "127.0.0.1" in str(exc.value) and field in str(exc.value) and "\n" not in str(exc.value)
    assert not http.cache_path(geocoder.endpoint, geocoder.params(43.73, 7.42)).exists()
    route.healed = True
    assert geocoder.address(43.73, 7.42) == "Monaco"


def test_a_photon_name_that_is_an_object_is_refused_then_recovered(server):
    bad = json.loads(json.dumps(GOOD_PHOTON))
    bad["features"][0]["properties"]["name"] = {"en": "Monaco"}
    route = Faulty.routes["/reverse"] = Flaky(_bad(bad), GOOD_PHOTON)
    geocoder = OnlineGeocoder("photon", gazetteer=None, url=server, min_interval_s=0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"127\.0\.0\.1.*field features\[0\]\.properties\.name is dict"):
        geocoder.address(43.73, 7.42)
    route.healed = True
    assert geocoder.address(43.73, 7.42) == "Monaco"


def test_an_overpass_latitude_that_says_north_is_refused_then_recovered(server):
    bad = {"elements": [{"type": "node", "lat": "north", "lon": 7.42, "tags": {"name": "Café", "amenity": "cafe"}}]}
    route = Faulty.routes["/api/interpreter"] = Flaky(_bad(bad), GOOD_OVERPASS)
    overpass = Overpass([7.41, 43.72, 7.44, 43.75], f"{server}/api/interpreter", 0.0)
    with pytest.raises(InputError, match=r"127\.0\.0\.1.*field elements\[0\]\.lat is 'north'"):
        overpass.fetch()
    route.healed = True
    assert overpass.fetch().name.tolist() == ["Café"]


def test_a_stac_item_with_unreadable_values_fails_the_page_check():
    page = {"type": "FeatureCollection", "features": [{"id": "a", "bbox": [0, 0, 1, 1], "properties": {
        "eo:cloud_cover": 5, "datetime": "2024-01-01T00:00:00Z"}, "assets": {"visual": {"href": "https://x/a.tif"}}}]}
    _search_page(json.dumps(page).encode())
    page["features"][0]["properties"]["eo:cloud_cover"] = "cloudy"
    with pytest.raises(answers.BadValue, match=r"features\[0\]\.properties\.eo:cloud_cover"):
        _search_page(json.dumps(page).encode())
    page["features"][0]["properties"]["eo:cloud_cover"] = 5
    page["features"][0]["assets"]["visual"]["href"] = ["https://x/a.tif"]
    with pytest.raises(answers.BadValue, match=r"assets\.visual\.href is list"):
        _search_page(json.dumps(page).encode())
