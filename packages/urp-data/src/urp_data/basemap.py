"""Country outlines to draw under maps of samples (the preview page and the bias report).

The outlines come from the shipped Natural Earth 1:110m countries (``data/global``), so maps
need no tile server and open offline. They are coarse: a border that follows a river can be
kilometres off (samples are assigned to countries by the gazetteer, not by these lines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urp_data.schema import Manifest

DEFAULT_COUNTRIES = "data/global/naturalearth_lowres.shp"


def repo_path(rel: str) -> Path:
    """A path inside the repository (for defaults such as the shipped country polygons)."""
    for parent in [Path.cwd(), *Path(__file__).resolve().parents]:
        if (parent / rel).exists():
            return parent / rel
    return Path(rel)


def country_outlines(bbox: tuple[float, float, float, float],
                     manifest: Manifest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Country borders and coasts inside ``bbox`` = (left, bottom, right, top) in lon/lat degrees.

    From the build's own country polygons when its manifest names a file, else the shipped ones.
    Returned as ``(lon, lat)`` arrays in which NaN separates the lines, the form both plotly and
    matplotlib draw as separate lines in one call. Empty arrays when no file is found.
    """
    import shapely

    from urp_data.vectors import read_vector

    inputs = manifest.inputs if manifest is not None else []
    path = next((i["path"] for i in inputs if i.get("role") == "countries" and i.get("sha256")), None)
    p = Path(path) if path else repo_path(DEFAULT_COUNTRIES)
    if not p.is_file():
        return np.array([]), np.array([])
    lines = shapely.clip_by_rect(read_vector(p, "country polygons").geometry.boundary.values, *bbox)
    parts = shapely.get_parts(lines[~shapely.is_empty(lines)])
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for part in parts:
        xy = shapely.get_coordinates(part)
        xs += [xy[:, 0], np.array([np.nan])]
        ys += [xy[:, 1], np.array([np.nan])]
    if not xs:
        return np.array([]), np.array([])
    return np.concatenate(xs), np.concatenate(ys)
