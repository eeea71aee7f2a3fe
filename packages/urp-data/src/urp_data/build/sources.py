"""A region's sources, opened: what a build reads imagery, places, POIs and indicators from."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from urp_data.config.regions import RegionConfig
from urp_data.contract import check_indicator_names
from urp_data.errors import InputError, RegionError
from urp_data.net import hosts, http
from urp_data.sources.base import ImagerySource, IndicatorSource, NetworkSource
from urp_data.sources.imagery import imagery_from_config
from urp_data.sources.indicators import indicator_from_config
from urp_data.sources.places.gazetteer import CountryLookup, Gazetteer
from urp_data.sources.places.online import OnlineGeocoder
from urp_data.sources.places.poi import OsmPOIs, poi_from_config
from urp_data.util.basemap import DEFAULT_COUNTRIES, repo_path

logger = logging.getLogger(__name__)


@dataclass
class Sources:
    """Every opened source of a region; opening them validates the inputs before any work."""

    imagery: list[ImagerySource]
    gazetteer: Gazetteer
    countries: CountryLookup
    pois: list[OsmPOIs]
    indicators: list[IndicatorSource]
    geocoder: Gazetteer | OnlineGeocoder  # writes the address column: the gazetteer, or a Nominatim/Photon service


def open_sources(region: RegionConfig, gazetteer: Gazetteer | None = None) -> Sources:
    """The region's sources, opened in this process; ``gazetteer`` when this process has loaded it already."""
    if not region.imagery:
        raise RegionError(f"region {region.name} names no imagery source; add one under imagery:")
    gaz = gazetteer or Gazetteer(region.geocoder.min_population)
    if region.countries == "gazetteer":
        countries_path = None
    else:
        countries_path = region.resolve(region.countries) if region.countries else repo_path(DEFAULT_COUNTRIES)
    if countries_path is not None and not Path(countries_path).is_file():
        raise InputError(f"country polygons {countries_path} not found; set countries: in the region config")
    imagery = [imagery_from_config(s, region.resolve) for s in region.imagery]
    pois = [poi_from_config(s, region.resolve) for s in region.poi]
    inds = [indicator_from_config(s, region.resolve, gaz) for s in region.indicators]
    check_indicator_names([i.name for i in inds])
    return Sources(imagery, gaz, CountryLookup(countries_path, gaz), pois, inds, _geocoder(region, gaz))


def _geocoder(region: RegionConfig, gaz: Gazetteer) -> Gazetteer | OnlineGeocoder:
    g = region.geocoder
    if g.provider == "geonames":
        return gaz
    return OnlineGeocoder(g.provider, gaz, g.url, g.zoom, g.language, g.min_interval_s, g.allow_bulk)


def before_network(src: Sources, samples: int) -> None:
    """Refuse an anonymous client or a bulk job on a public service, open STAC APIs, then fetch network
    POIs once, before any chunk.

    Both happen in the build's own process: the refusal before anything is fetched or written,
    and the POI download before workers start, so that they read it from the cache rather than
    each asking the server.
    """
    if isinstance(src.geocoder, OnlineGeocoder):
        hosts.refuse_anonymous(src.geocoder.endpoint, f"geocoder {src.geocoder.provider}", http.USER_AGENT)
        src.geocoder.refuse_bulk(samples)
    for p in src.pois:
        if p.overpass is not None:
            hosts.refuse_anonymous(p.overpass.url, "poi overpass", http.USER_AGENT)
    for s in src.imagery:
        if isinstance(s, NetworkSource):  # a STAC API checks its landing page and licence here
            s.connect()
    for p in src.pois:
        p.load()
