"""Spherical geodesy in one place: the Earth's radius, metres per degree, unit vectors, distances.

Every function takes WGS84 degrees with latitude before longitude (``lat, lon``) and returns
kilometres or degrees as its name says. Distances are great circles on a sphere of the IUGG
mean radius; metres per degree are the WGS84 ellipsoid's at the equator (longitude) and the
mean over latitude (latitude), the approximations a chip footprint or a search box needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EARTH_RADIUS_KM = 6371.0088
"""IUGG mean Earth radius, km."""
M_PER_DEG_LAT = 110_574.0
"""Metres per degree of latitude (WGS84, at the equator; within 1 % everywhere)."""
M_PER_DEG_LON_EQUATOR = 111_320.0
"""Metres per degree of longitude at the equator (WGS84); times cos(lat) elsewhere."""
KM_PER_DEG_LAT = M_PER_DEG_LAT / 1000
KM_PER_DEG_LON_EQUATOR = M_PER_DEG_LON_EQUATOR / 1000


def unit_vectors(lat: Any, lon: Any) -> np.ndarray:
    """(N, 3) points on the unit sphere for lat/lon in degrees: chord length is monotone in great-circle distance."""
    la, lo = np.radians(np.asarray(lat, np.float64)), np.radians(np.asarray(lon, np.float64))
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def chord_for_km(km: float) -> float:
    """Chord length on the unit sphere for a great-circle distance in km (half the globe at most)."""
    return float(2 * np.sin(min(km / EARTH_RADIUS_KM, np.pi) / 2))


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    """Great-circle distance in km; arguments in degrees, lat before lon."""
    la1, lo1, la2, lo2 = (np.radians(np.asarray(v, np.float64)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def bearing_deg(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    """Initial bearing from point 1 to point 2, degrees clockwise from north."""
    la1, lo1, la2, lo2 = (np.radians(np.asarray(v, np.float64)) for v in (lat1, lon1, lat2, lon2))
    y = np.sin(lo2 - lo1) * np.cos(la2)
    x = np.cos(la1) * np.sin(la2) - np.sin(la1) * np.cos(la2) * np.cos(lo2 - lo1)
    return np.degrees(np.arctan2(y, x)) % 360
