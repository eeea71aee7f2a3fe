"""Country outlines to draw under maps of samples (the preview page and the bias report).

The outlines are the shipped Natural Earth 1:110m countries (``data/global``), so maps need
no tile server and open offline. They are coarse: a border that follows a river can be
kilometres off (samples are assigned to countries by the gazetteer, not by these lines).
Read with pyshp (pure Python), so the bias report draws them without the build stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_COUNTRIES = "data/global/naturalearth_lowres.shp"


def repo_path(rel: str) -> Path:
    """A path inside the repository (for defaults such as the shipped country polygons)."""
    for parent in [Path.cwd(), *Path(__file__).resolve().parents]:
        if (parent / rel).exists():
            return parent / rel
    return Path(rel)


def country_outlines(bbox: tuple[float, float, float, float], path: str | Path | None = None) -> list[np.ndarray]:
    """The rings of the country polygons in ``path`` (default: the shipped ones) that reach into ``bbox``.

    ``bbox`` is (left, bottom, right, top) in lon/lat degrees. Each ring is an (N, 2) array of
    lon, lat; rings are whole, not clipped (the caller's axes clip them). Empty when the file
    is missing.
    """
    import shapefile  # pyshp

    p = Path(path) if path else repo_path(DEFAULT_COUNTRIES)
    if not p.is_file():
        return []
    left, bottom, right, top = bbox
    rings = []
    with shapefile.Reader(str(p)) as reader:
        for shape in reader.iterShapes():
            points = np.asarray(shape.points, np.float64)
            for start, end in zip(shape.parts, [*shape.parts[1:], len(points)], strict=True):
                ring = points[start:end]
                if (ring[:, 0].max() >= left and ring[:, 0].min() <= right and ring[:, 1].max() >= bottom
                        and ring[:, 1].min() <= top):
                    rings.append(ring)
    return rings
