"""Online reverse geocoding (Nominatim, Photon): an opt-in alternative to the offline GeoNames addresses.

The ``address`` column is offline by default (:meth:`urp_data.sources.places.gazetteer.Gazetteer.addresses`).
``geocoder.provider: nominatim`` or ``photon`` asks a reverse geocoder instead, one request per
sample through :func:`urp_data.net.http.get` (cached, so a rebuild sends nothing; paced per host for
every worker of the build together; a body is cached only when it has the documented shape).

Request and response formats, as documented by the providers:

- Nominatim ``GET {url}/reverse?lat=&lon=&format=jsonv2&zoom=&addressdetails=1&accept-language=``
  answers one place ``{"place_id", "licence", "osm_type", "lat", "lon", "category", "type",
  "addresstype", "name", "display_name", "address": {"city", "state", "country", "country_code",
  ...}, "boundingbox"}``, or ``{"error": "Unable to geocode"}`` where OSM has nothing
  (nominatim.org/release-docs/latest/api/Reverse and .../api/Output).
- Photon ``GET {url}/reverse?lat=&lon=&lang=`` answers a GeoJSON ``FeatureCollection`` whose
  features have a ``Point`` geometry ([lon, lat]) and ``properties`` such as ``name``,
  ``district``, ``locality``, ``city``, ``county``, ``state``, ``country``, ``countrycode``,
  ``osm_key``, ``osm_value`` (github.com/komoot/photon); no feature where it finds nothing.

A sample the service cannot place (open sea, no OSM coverage) keeps its GeoNames address.

Usage policies, which the defaults follow: the public nominatim.openstreetmap.org allows at most
1 request/s from an application (all its workers together), needs a User-Agent that names the
application (``URP_USER_AGENT``), and discourages bulk jobs; the public photon.komoot.io throttles
"extensive usage". So every online geocoder waits ``min_interval_s`` (default 1 s) between
requests to its host, the public Nominatim refuses anything faster, and a build that would send
more than ``PUBLIC_MAX_REQUESTS`` requests to a public instance stops before its first request
unless ``geocoder.allow_bulk`` (or ``--allow-bulk``) says the operators agreed. Bulk jobs belong
on a self-hosted instance (``geocoder.url``). Data © OpenStreetMap contributors, ODbL 1.0.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from urp_data.errors import InputError
from urp_data.net import answers, http
from urp_data.net.budget import RequestBudget
from urp_data.net.hosts import PUBLIC_MAX_REQUESTS, PUBLIC_URLS, is_public
from urp_data.sources.base import NetworkSource

if TYPE_CHECKING:  # the gazetteer's imports (scipy, geopandas) are not needed to validate a config
    from urp_data.sources.places.gazetteer import Gazetteer

logger = logging.getLogger(__name__)

OSM_DATA_LICENCE = "Data © OpenStreetMap contributors, ODbL 1.0. https://osm.org/copyright"
ANSWER_BYTES = {"nominatim": 1200, "photon": 700}
"""Typical size of one answer (jsonv2 with address details; one Photon feature), for budgets."""
NOT_FOUND = "Unable to geocode"
"""Nominatim's ``error`` where it has no OSM object near the point: an answer, cached like one."""

_LOCAL = ("suburb", "neighbourhood", "quarter", "city_district", "borough", "district", "locality")
_PLACE = ("city", "town", "village", "municipality", "hamlet")
_ADMIN = ("state", "province", "region", "state_district", "county")


def _compose(fields: dict[str, Any], where: str, place_fallback: str | None = None) -> str | None:
    """``"Bairro Novo, Olinda, Pernambuco, Brazil"``: neighbourhood, place, admin area, country (any may be missing)."""
    def first(keys: tuple[str, ...]) -> str | None:
        return next((v for k in keys if (v := answers.text(fields.get(k), f"{where}.{k}", optional=True))), None)

    parts: list[str] = []
    for part in (first(_LOCAL), first(_PLACE) or place_fallback, first(_ADMIN), first(("country",))):
        if part and part not in parts:
            parts.append(part)
    return ", ".join(parts) or None


def nominatim_address(doc: Any) -> str | None:
    """The address of a Nominatim ``jsonv2`` reverse answer, or None where it found nothing ("Unable to
    geocode"). Every value used is checked (:mod:`urp_data.net.answers`): this runs before the answer is cached."""
    doc = answers.obj(doc, "(the answer)")
    if "error" in doc:
        if doc["error"] != NOT_FOUND:
            raise answers.BadValue(f"Nominatim error {answers.text(doc['error'], 'error')!r}")
        return None
    answers.lat_lon(doc, "place")
    address = answers.obj(doc.get("address"), "address (was addressdetails=1 sent?)")
    return _compose(address, "address", answers.text(doc.get("name"), "name", optional=True) or None)


def photon_address(doc: Any) -> str | None:
    """The address of a Photon reverse answer (its first feature), or None where it found nothing; checked
    by value as :func:`nominatim_address` is."""
    doc = answers.obj(doc, "(the answer)")
    features = doc.get("features")
    # the server writes "type": "FeatureCollection" (its GeoJsonFormatter); its documented example leaves it out
    if doc.get("type", "FeatureCollection") != "FeatureCollection" or not isinstance(features, list):
        raise answers.BadValue("not a GeoJSON FeatureCollection with a features list")
    if not features:
        return None
    feature = answers.obj(features[0], "features[0]")
    coords = answers.obj(feature.get("geometry"), "features[0].geometry").get("coordinates")
    if not isinstance(coords, list) or len(coords) != 2:
        raise answers.BadValue("field features[0].geometry.coordinates is not [lon, lat]")
    answers.lat_lon({"lon": coords[0], "lat": coords[1]}, "features[0].geometry.coordinates")
    props = answers.obj(feature.get("properties"), "features[0].properties")
    name = props.get("name") if props.get("osm_key") == "place" else None
    return _compose(props, "features[0].properties",
                    answers.text(name, "features[0].properties.name", optional=True))


def check_nominatim(body: bytes) -> None:
    """Raise unless ``body`` is a Nominatim reverse answer whose values we can use."""
    nominatim_address(answers.load_json(body))


def check_photon(body: bytes) -> None:
    """Raise unless ``body`` is a Photon reverse answer whose values we can use."""
    photon_address(answers.load_json(body))


_PROVIDERS = {"nominatim": (nominatim_address, check_nominatim), "photon": (photon_address, check_photon)}


class OnlineGeocoder(NetworkSource):
    """Addresses from a Nominatim or Photon ``/reverse`` endpoint, GeoNames where it finds nothing.

    Has the gazetteer's ``addresses(lat, lon, iso3)``, so the pipeline uses either alike.
    """

    def __init__(self, provider: str, gazetteer: Gazetteer, url: str | None = None, zoom: int = 14,
                 language: str = "en", min_interval_s: float = 1.0, allow_bulk: bool = False) -> None:
        if provider not in _PROVIDERS:
            raise InputError(f"unknown geocoder provider {provider!r}; use geonames, nominatim or photon")
        self.provider, self.gazetteer = provider, gazetteer
        self.base = (url or PUBLIC_URLS[provider]).rstrip("/")
        self.endpoint = self.base + "/reverse"
        http.canonical_url(self.endpoint)  # a bad scheme or host fails here, before the build starts
        self.zoom, self.language = zoom, language
        self.min_interval_s, self.allow_bulk = min_interval_s, allow_bulk
        self.public = is_public(provider, url)
        self.licence = OSM_DATA_LICENCE
        self._parse, self._check = _PROVIDERS[provider]

    @property
    def path(self) -> str:
        """What the manifest records as this input: the endpoint and the settings that shape the answers."""
        extra = f"zoom {self.zoom}, " if self.provider == "nominatim" else ""
        return f"{self.provider} {http.redact(self.endpoint)} ({extra}language {self.language})"

    def params(self, lat: float, lon: float) -> dict[str, Any]:
        """The documented query of one point (degrees, rounded to 1e-6 ° ≈ 0.1 m so cache keys are stable)."""
        point = {"lat": f"{lat:.6f}", "lon": f"{lon:.6f}"}
        if self.provider == "nominatim":
            return {**point, "format": "jsonv2", "zoom": self.zoom, "addressdetails": 1,
                    "accept-language": self.language}
        return {**point, "lang": self.language}

    def address(self, lat: float, lon: float) -> str | None:
        """The service's address of one point (lat/lon degrees), or None where it found nothing."""
        body = http.get(self.endpoint, min_interval_s=self.min_interval_s, params=self.params(lat, lon),
                        content_types=("application/json", "application/geo+json"), check=self._check)
        return self._parse(answers.load_json(body))

    def addresses(self, lat: np.ndarray, lon: np.ndarray, iso3: list[str | None]) -> list[str]:
        """One address per point; the GeoNames address where the service has none."""
        out: list[str | None] = [self.address(float(la), float(lo)) for la, lo in zip(lat, lon, strict=True)]
        missing = [i for i, a in enumerate(out) if a is None]
        if missing:
            logger.info("%s has no address for %d of %d points; they keep their GeoNames address",
                        self.provider, len(missing), len(out))
            ix = np.asarray(missing)
            for i, a in zip(missing, self.gazetteer.addresses(np.asarray(lat)[ix], np.asarray(lon)[ix],
                                                               [iso3[i] for i in missing]), strict=True):
                out[i] = a
        return [a or "" for a in out]

    def request_budget(self, lat: np.ndarray, lon: np.ndarray, footprint_m: float = 0.0,
                       size_px: int = 0) -> list[RequestBudget]:
        """One request per sample centre (cache ignored); footprint and size do not matter here."""
        n = len(lat)
        return [RequestBudget(source=f"geocoder {self.provider}", host=urlsplit(self.endpoint).netloc,
                              requests=n, bytes=n * ANSWER_BYTES[self.provider], min_interval_s=self.min_interval_s)]

    def refuse_bulk(self, samples: int) -> None:
        """Raise before the first request when ``samples`` requests would be a bulk job on a public instance."""
        if self.public and samples > PUBLIC_MAX_REQUESTS and not self.allow_bulk:
            raise InputError(
                f"{samples} samples would send {samples} requests to the public {self.provider} "
                f"({self.base}), whose usage policy discourages bulk jobs (more than {PUBLIC_MAX_REQUESTS}); "
                f"point geocoder.url at a self-hosted instance, or set geocoder.allow_bulk: true (--allow-bulk) "
                "if its operators agreed")
