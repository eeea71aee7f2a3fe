"""``urp-data preview``: one offline HTML page to look at a build before training on it.

The page shows a zoomable map of the samples coloured by split over country outlines, with the
unseen groups outlined and the dropped buffer cells shaded; per-split counts and indicator
histograms; and a gallery of a few chips per split with their address, nearby places, rendered
prompt and indicator values. Plots are plotly figures with plotly.js inlined and chips are
embedded JPEGs, so the file opens from disk with no network request.
"""

from __future__ import annotations

import base64
import html
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from urp_data.contract import SPLITS, Manifest, load_manifest, render_prompt, split_path
from urp_data.errors import OutputError
from urp_data.util.fs import atomic_write_text

logger = logging.getLogger(__name__)

PREVIEW_NAME = "preview.html"
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#2ca02c", "test_seen": "#ff7f0e", "test_unseen": "#d62728"}
MAX_MAP_POINTS = 20_000
"""Larger builds show an evenly spaced subset on the map (the page stays a few MB)."""
AREA_RESOLUTION = 3
MAX_PANELS = 3
"""Builds made of up to this many separate areas get one map panel each; more get one overview."""

CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}h1{margin-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.gallery{display:flex;flex-wrap:wrap;gap:12px}
.chip{width:300px;border:1px solid #ddd;border-radius:6px;padding:8px;font-size:12px;background:#fafafa}
.chip img{width:300px;height:300px;display:block;object-fit:cover}.chip pre{white-space:pre-wrap;max-height:12em;
overflow:auto;background:#fff;border:1px solid #eee;padding:4px;font-size:11px}.muted{color:#777}
.chip ul{margin:.2em 0;padding-left:1.2em}"""


def write_preview(build_dir: str | Path, out: str | Path | None = None, per_split: int = 4) -> Path:
    """Write the preview page of the build in ``build_dir`` to ``out`` (default ``<build_dir>/preview.html``).

    ``per_split`` chips of each split, evenly spaced through its file, go into the gallery.
    """
    build_dir = Path(build_dir)
    manifest = load_manifest(build_dir)
    default = build_dir / PREVIEW_NAME
    out = Path(out) if out else default
    target, base = out.resolve(), build_dir.resolve()
    if (target == base or base in target.parents) and target != default.resolve():
        raise OutputError(f"--out {out} is inside the build {build_dir}, where it could replace the build's own "
                          f"files; write the preview to {default} (the default) or outside the build")
    page = render_preview(build_dir, manifest, per_split)
    try:
        atomic_write_text(out, page)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from exc
    return out


def _read_samples(build_dir: Path, indicators: list[str]) -> Any:
    """Every sample's map and histogram columns (no images), as one pandas frame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = ["sample_id", "h3_cell", "lat", "lon", "group", "country", "split", "address", *indicators]
    return pa.concat_tables([pq.read_table(split_path(build_dir, s), columns=cols) for s in SPLITS]).to_pandas()


def render_preview(build_dir: Path, manifest: Manifest, per_split: int = 4) -> str:
    """The preview page as one HTML string."""
    from plotly.offline import get_plotlyjs

    indicators = list(manifest.indicators)
    df = _read_samples(build_dir, indicators)
    labels = manifest.group_labels
    region = manifest.config.get("region", {})
    parts = [f"<h1>urp build <code>{html.escape(manifest.region)}</code></h1>",
             (f"<p class=muted>{html.escape(region.get('description', ''))} · built {html.escape(manifest.build_time)}"
             f" · H3 resolution {manifest.resolution} · groups by "
             f"<code>{html.escape(str(region.get('splits', {}).get('group_by', '?')))}</code> · "
             f"{html.escape(str(build_dir))}</p>"),
             _counts_table(df, manifest),
             ("<h2>Map</h2><p class=muted>Drag to zoom, double-click to reset, click a legend entry to hide it. "
             "One panel per separate area of the build. Red outlines: unseen groups (whole groups held out as "
             "<code>test_unseen</code>); grey cells: "
             "cells dropped so that no held-out chip shares ground with a train chip or lies within the buffer "
             "around them (<code>manifest.json</code> → <code>config.splits</code> says the rule). "
             "Country outlines: Natural Earth 1:110m (coarse).</p>"),
             _figure_html(_map_figure(df, manifest), "map", height=620)]
    if indicators:
        parts += [("<h2>Indicators per split</h2><p class=muted>Share of each split's samples per value bin "
                  "(raw units; nulls left out).</p>"),
                  _figure_html(_histograms(df, manifest), "histograms", height=280 * math.ceil(len(indicators) / 2))]
    parts.append('<h2>Gallery</h2><div id="gallery">')
    for s in SPLITS:
        parts.append(f"<h3>{s}</h3>" + _gallery(build_dir, s, manifest, labels, per_split))
    parts.append("</div>")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>urp preview: "
            f"{html.escape(manifest.region)}</title><style>{CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>{''.join(parts)}</body></html>")


def _counts_table(df: Any, manifest: Manifest) -> str:
    rows = []
    for s in SPLITS:
        part = df[df["split"] == s]
        rows.append(f"<tr><td class=l>{s}</td><td>{len(part)}</td><td>{part['group'].nunique()}</td>"
                    f"<td class=l>{html.escape(', '.join(sorted(part['country'].dropna().unique())))}</td></tr>")
    counts = manifest.counts
    return ("<table><tr><th class=l>split</th><th>samples</th><th>groups</th><th class=l>countries</th></tr>"
            + "".join(rows) + f"</table><p class=muted>Dropped: {counts.get('buffer_dropped', 0)} buffer cells, "
            f"{counts.get('skipped_no_imagery', 0)} cells without imagery.</p>")


def _figure_html(fig: Any, div_id: str, height: int) -> str:
    fig.update_layout(height=height, margin={"l": 50, "r": 20, "t": 60, "b": 40}, template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"scrollZoom": True, "displaylogo": False, "responsive": True})


Outline = tuple[list[float | None], list[float | None]]
"""Lon and lat lists of rings, None between rings (plotly's gaps between lines)."""


def _cells_outline(cells: list[str]) -> Outline:
    """Outer rings of the union of H3 cells as (lon, lat) lists with None between rings."""
    import h3

    xs: list[float | None] = []
    ys: list[float | None] = []
    if not cells:
        return xs, ys
    shape = h3.cells_to_h3shape(cells).__geo_interface__
    polys = shape["coordinates"] if shape["type"] == "MultiPolygon" else [shape["coordinates"]]
    for poly in polys:
        for ring in poly:
            xs += [p[0] for p in ring] + [None]  # GeoJSON order: lon, lat
            ys += [p[1] for p in ring] + [None]
    return xs, ys


def _areas(cells: Any) -> list[np.ndarray]:
    """Row indices of the separate areas of a build, largest first.

    Cells whose resolution-3 H3 parents (~12,000 km²) touch belong to one area, so a build of
    two cities 2,000 km apart gives two areas, each drawn in its own zoomable panel.
    """
    import h3

    parents = [h3.cell_to_parent(c, min(AREA_RESOLUTION, h3.get_resolution(c))) for c in cells]
    root = {p: p for p in set(parents)}

    def find(p: str) -> str:
        while root[p] != p:
            root[p] = root[root[p]]
            p = root[p]
        return p

    for p in list(root):
        for q in h3.grid_disk(p, 1):
            if q in root:
                root[find(q)] = find(p)
    labels = np.array([find(p) for p in parents], dtype=object)
    groups = [np.flatnonzero(labels == r) for r in sorted(set(labels.tolist()))]
    return sorted(groups, key=len, reverse=True)


def _panels(df: Any, manifest: Manifest) -> tuple[list[np.ndarray], list[str]]:
    """Row indices and title of each map panel: one per separate area, or all in one past MAX_PANELS."""
    areas = _areas(df["h3_cell"])
    titles = []
    for ix in areas:
        top = df["group"].iloc[ix].value_counts().index[0]
        titles.append(f"{len(ix)} samples around {manifest.group_labels.get(top, top)}")
    if len(areas) > MAX_PANELS:
        titles = [f"{len(df)} samples in {len(areas)} separate areas"]
        areas = [np.arange(len(df))]
    return areas, titles


def _outline_traces(bbox: tuple[float, float, float, float], buffer: Outline, unseen: list[tuple[str, Outline]],
                    manifest: Manifest, first: bool) -> list[Any]:
    """Country outlines in ``bbox`` (left, bottom, right, top; degrees), the dropped buffer cells and the
    unseen groups' outlines; only the first panel's traces are in the legend."""
    import plotly.graph_objects as go

    from urp_data.util.basemap import country_outlines

    rings = [np.vstack([r, [[np.nan, np.nan]]]) for r in country_outlines(bbox)]  # NaN: a gap between lines
    lonlat = np.concatenate(rings) if rings else np.empty((0, 2))
    traces = [go.Scatter(x=lonlat[:, 0], y=lonlat[:, 1], mode="lines", line={"color": "#888", "width": 1},
                         name="country outlines", legendgroup="countries", showlegend=first, hoverinfo="skip")]
    if buffer[0]:
        traces.append(go.Scatter(x=buffer[0], y=buffer[1], mode="lines", fill="toself",
                                 fillcolor="rgba(120,120,120,0.35)", line={"color": "#666", "width": 1},
                                 name="buffer cells (dropped)", legendgroup="buffer", showlegend=first,
                                 hoverinfo="skip"))
    for k, (group, (gx, gy)) in enumerate(unseen):
        name = f"{group} ({manifest.group_labels[group]})" if group in manifest.group_labels else group
        traces.append(go.Scatter(x=gx, y=gy, mode="lines", line={"color": "#a00", "width": 2},
                                 name="unseen groups", legendgroup="unseen", showlegend=first and k == 0,
                                 text=[html.escape(name)] * len(gx), hovertemplate="%{text}<extra></extra>"))
    return traces


def _sample_traces(part: Any, df: Any, manifest: Manifest, first: bool) -> list[Any]:
    """The panel's samples (``part``), one trace per split; the legend counts the whole map (``df``)."""
    import plotly.graph_objects as go

    traces = []
    for s in SPLITS:
        pts = part[part["split"] == s]
        text = [f"{html.escape(sid)}<br>{html.escape(manifest.group_labels.get(g, g))}<br>{html.escape(str(a))}"
                for sid, g, a in zip(pts["sample_id"], pts["group"], pts["address"], strict=True)]
        traces.append(go.Scatter(x=pts["lon"], y=pts["lat"], mode="markers", name=f"{s} ({(df['split'] == s).sum()})",
                                 legendgroup=s, showlegend=first,
                                 marker={"color": SPLIT_COLOURS[s], "size": 6, "line": {"width": 0}},
                                 text=text, hovertemplate="%{text}<extra></extra>"))
    return traces


def _fit_axes(fig: Any, col: int, part: Any, bbox: tuple[float, float, float, float]) -> None:
    """Panel ``col``'s axes over ``bbox`` (left, bottom, right, top; degrees), at the panel's true aspect."""
    mid = math.radians(float(part["lat"].mean()))
    fig.update_xaxes(title="longitude (°)", range=[bbox[0], bbox[2]], showgrid=False, zeroline=False,
                     row=1, col=col)
    # One degree of latitude is 1/cos(lat) degrees of longitude on the ground: keep shapes true.
    fig.update_yaxes(title="latitude (°)" if col == 1 else None, range=[bbox[1], bbox[3]],
                     scaleanchor=f"x{col if col > 1 else ''}", scaleratio=1 / max(math.cos(mid), 0.05),
                     showgrid=False, zeroline=False, row=1, col=col)


def _map_figure(df: Any, manifest: Manifest) -> Any:
    from plotly.subplots import make_subplots

    if len(df) > MAX_MAP_POINTS:
        df = df.iloc[np.linspace(0, len(df) - 1, MAX_MAP_POINTS).astype(int)]
    df = df.reset_index(drop=True)
    areas, titles = _panels(df, manifest)
    fig = make_subplots(rows=1, cols=len(areas), subplot_titles=[html.escape(t) for t in titles],
                        horizontal_spacing=0.06)
    buffer = _cells_outline(manifest.config.get("buffer_cells", []))
    unseen = [(g, _cells_outline(part["h3_cell"].tolist()))
              for g, part in df[df["split"] == "test_unseen"].groupby("group")]
    for col, ix in enumerate(areas, start=1):
        part = df.iloc[ix]
        pad = max(0.05, 0.1 * max(np.ptp(part["lon"]), np.ptp(part["lat"])))
        bbox = (part["lon"].min() - pad, part["lat"].min() - pad, part["lon"].max() + pad, part["lat"].max() + pad)
        for trace in [*_outline_traces(bbox, buffer, unseen, manifest, col == 1),
                      *_sample_traces(part, df, manifest, col == 1)]:
            fig.add_trace(trace, row=1, col=col)
        _fit_axes(fig, col, part, bbox)
    fig.update_annotations(font_size=13)  # the panel titles
    fig.update_layout(legend={"orientation": "h", "y": -0.12, "yanchor": "top"}, dragmode="zoom")
    return fig


def _histograms(df: Any, manifest: Manifest) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(manifest.indicators)
    cols = min(2, len(names))
    rows = math.ceil(len(names) / cols)
    titles = [f"{n} ({manifest.indicators[n].unit})" if manifest.indicators[n].unit else n for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.5 / rows)
    for k, name in enumerate(names):
        for s in SPLITS:
            vals = df.loc[df["split"] == s, name].dropna()
            fig.add_trace(go.Histogram(x=vals, name=s, legendgroup=s, showlegend=k == 0, histnorm="percent",
                                       marker={"color": SPLIT_COLOURS[s]}, opacity=0.6, nbinsx=30),
                          row=k // cols + 1, col=k % cols + 1)
    fig.update_layout(barmode="overlay")
    fig.update_yaxes(title="% of split")
    return fig


def _take_rows(path: Path, n: int) -> list[dict[str, Any]]:
    """``n`` rows evenly spaced through a split file, reading only the row groups that hold them."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total = pf.metadata.num_rows
    if total == 0 or n <= 0:
        return []
    wanted = sorted(set(np.linspace(0, total - 1, min(n, total)).astype(int).tolist()))
    rows, start = [], 0
    for g in range(pf.num_row_groups):
        size = pf.metadata.row_group(g).num_rows
        local = [i - start for i in wanted if start <= i < start + size]
        if local:
            rows += pf.read_row_group(g).take(local).to_pylist()
        start += size
    return rows


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "null"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _gallery(build_dir: Path, split: str, manifest: Manifest, labels: dict[str, str], per_split: int) -> str:
    rows = _take_rows(split_path(build_dir, split), per_split)
    if not rows:
        return "<p class=muted>no samples</p>"
    first = next(iter(manifest.indicators), None)
    cards = []
    for row in rows:
        img = row.get("image") or {}
        src = (f"data:image/{'png' if str(img.get('path', '')).endswith('.png') else 'jpeg'};base64,"
               f"{base64.b64encode(img['bytes']).decode()}") if img.get("bytes") else ""
        places = "".join(f"<li>{p['distance_km']:.1f} km {html.escape(p['direction'])}: {html.escape(p['name'])}</li>"
                         for p in (row.get("nearby_places") or [])[:5])
        values = []
        for name, info in manifest.indicators.items():
            scale = info.score_scale()
            v = row.get(name)
            score = f"{scale.to_score(v):.1f}" if scale is not None and v is not None else "–"
            values.append(f"<tr><td class=l>{html.escape(name)}</td><td>{_fmt(v)}</td><td>{score}</td></tr>")
        prompt = render_prompt(row, first, spec=manifest.indicators[first].spec()) if first else ""
        group = html.escape(row["group"]) + (f" · {html.escape(labels[row['group']])}" if row["group"] in labels
                                             else "")
        cards.append(
            f'<div class="chip"><img alt="{html.escape(row["sample_id"])}" src="{src}">'
            f"<b>{html.escape(row['sample_id'])}</b><br><span class=muted>{group}</span>"
            f"<p>{html.escape(row.get('address') or 'unknown address')}</p>"
            f"<div>Nearby places:<ul>{places or '<li>none known</li>'}</ul></div>"
            f"<table><tr><th class=l>indicator</th><th>value</th><th>score</th></tr>{''.join(values)}</table>"
            f"<div>Prompt ({html.escape(first or '')}):<pre>{html.escape(prompt)}</pre></div></div>")
    return f'<div class="gallery">{"".join(cards)}</div>'
