"""The bias report as one self-contained HTML page: tables with intervals, plots as embedded PNGs.

No scripts and no external resources: the page opens offline and is safe to mail around. Every
string that comes from the data is escaped; matplotlib's math parsing is off (names are data).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
from urp_data.contract import load_manifest

from urp_eval.inputs import joined
from urp_eval.metrics import METRICS
from urp_eval.sql import literal

if TYPE_CHECKING:
    from urp_eval.config import ReportConfig



def _png(fig: Any) -> str:
    """An <img> with the figure embedded as a base64 PNG (the report must open offline)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


ROUNDING = 1e-9
"""Relative size below which a figure is float rounding, not a value: a gap between two equal group
MAEs of 6873 comes out of the arithmetic as 3.6e-12 and is printed as 0."""


class Markup(str):
    """A table cell that is HTML already (built from escaped parts)."""


def _fmt(v: Any, scale: float = 1.0) -> str:
    """A table cell; floats within ROUNDING × max(1, |scale|) of zero print as 0."""
    if isinstance(v, Markup):
        return v
    if v is None:
        return "–"
    if isinstance(v, float):
        return "0" if abs(v) < ROUNDING * max(1.0, abs(scale)) else f"{v:.4g}"
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _group_labels(cfg: ReportConfig, manifest: Any) -> dict[str, str]:
    """``PRY-86a95ec07ffffff`` -> ``PRY · Alto Paraná Department · …`` from the build's manifest.

    Only for the build's own groups (``--group-by group``); other groupings keep their keys.
    """
    if cfg.group_by != "group":
        return {}
    return manifest.group_labels


MAX_BARS = 40
MAX_POINTS = 20_000


def _group_bars(con: duckdb.DuckDBPyConnection, split: str, ind: str, labels: dict[str, str], level: float) -> str:
    """The worst groups by Spearman: Spearman and MAE bars with their intervals as error bars."""
    import matplotlib.pyplot as plt

    rows = con.execute("SELECT grp, spearman, spearman_lo, spearman_hi, mae, mae_lo, mae_hi, ranked, spearman_worse, "
                       "mae_worse FROM metrics WHERE split = ? AND indicator = ? AND grp IS NOT NULL "
                       "ORDER BY spearman NULLS FIRST, grp LIMIT ?", [split, ind, MAX_BARS]).fetchall()
    if not rows:
        return ""
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.25 * len(rows) + 1.2), sharey=True)
    names = [f"{labels[r[0]]}  ({r[0]})" if r[0] in labels else str(r[0]) for r in rows]
    for ax, col, title in ((axes[0], 1, "Spearman ρ"), (axes[1], 4, "MAE")):
        value = np.array([np.nan if r[col] is None else r[col] for r in rows])
        lo = np.array([np.nan if r[col + 1] is None else r[col + 1] for r in rows])
        hi = np.array([np.nan if r[col + 2] is None else r[col + 2] for r in rows])
        worse = [bool(r[8 if col == 1 else 9]) for r in rows]
        colors = ["tab:red" if w else "tab:blue" if r[7] else "lightgrey" for r, w in zip(rows, worse)]
        err = np.nan_to_num(np.vstack([value - lo, hi - value]))
        ax.barh(names, np.nan_to_num(value), xerr=np.maximum(err, 0), color=colors, ecolor="black", capsize=2)
        ax.set_title(f"{title} ({level:.0%} interval)")
    axes[0].invert_yaxis()
    fig.suptitle(f"{ind} on {split}: worst {len(rows)} groups by Spearman (red: significantly worse, Holm; grey: "
                 "below min group size)", y=1.0 + 0.3 / (0.25 * len(rows) + 1.2))
    return _png(fig)


def _draw_basemap(ax: Any, lon: np.ndarray, lat: np.ndarray) -> None:
    """Country outlines (the preview page's basemap) under points at lon/lat; the points set the view."""
    from matplotlib.collections import LineCollection
    from urp_data.util.basemap import country_outlines

    rings = country_outlines((float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())))
    ax.add_collection(LineCollection(rings, colors="#888", linewidths=0.8, zorder=0), autolim=False)


def _group_map(con: duckdb.DuckDBPyConnection, split: str, ind: str, seed: int) -> str:
    import matplotlib.pyplot as plt

    pts = con.execute(f"""
        SELECT j.lon, j.lat, coalesce(m.mae, 'NaN'::DOUBLE) AS mae FROM ({joined(ind)}) j
        JOIN metrics m ON m.split = j.split AND m.grp = j.grp AND m.indicator = {literal(ind)}
        WHERE j.split = {literal(split)} USING SAMPLE reservoir({MAX_POINTS} ROWS) REPEATABLE ({int(seed)})
    """).fetchnumpy()
    if not len(pts["lon"]):
        return ""
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(pts["lon"], pts["lat"], c=pts["mae"], s=max(4.0, 2000 / len(pts["lon"])), cmap="magma_r")
    _draw_basemap(ax, pts["lon"], pts["lat"])
    fig.colorbar(sc, ax=ax, label="group MAE")
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{ind} on {split}: samples coloured by their group's MAE")
    return _png(fig)


def _scatter(con: duckdb.DuckDBPyConnection, split: str, ind: str, seed: int) -> str:
    import matplotlib.pyplot as plt

    pts = con.execute(f"SELECT truth, pred FROM ({joined(ind)}) WHERE split = {literal(split)} AND pred IS NOT "
                      f"NULL USING SAMPLE reservoir({MAX_POINTS} ROWS) REPEATABLE ({int(seed)})").fetchnumpy()
    if not len(pts["truth"]):
        return "<p>No answered predictions.</p>"
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(pts["truth"], pts["pred"], s=5, alpha=0.5)
    lo = float(min(pts["truth"].min(), pts["pred"].min()))
    hi = float(max(pts["truth"].max(), pts["pred"].max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    both = np.concatenate([pts["truth"], pts["pred"]])
    positive = both[both > 0]
    if lo >= 0 and len(positive) and hi > 1000 * float(np.median(positive)):  # skewed counts: log-like axes
        linthresh = float(np.percentile(positive, 10))
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_yscale("symlog", linthresh=linthresh)
    else:
        ax.locator_params(axis="x", nbins=5)
    ax.set_xlabel(f"true {ind}")
    ax.set_ylabel(f"predicted {ind}")
    ax.set_title(f"{ind} on {split}")
    return _png(fig)


CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}.fail{color:#b00}
.pass{color:#070}img{max-width:100%}"""


def render_html(con: duckdb.DuckDBPyConnection, summary: dict[str, Any], cfg: ReportConfig) -> str:
    """The report as one HTML file: tables and plots (base64 PNGs), no scripts, no external resources."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):  # names are data: "$x$" is not math
        return _render_html(con, summary, cfg)


def _with_interval(row: dict[str, Any], name: str, scale: float = 1.0) -> Any:
    """A cell ``value [lo, hi]`` (the interval in brackets; the value alone where it has none)."""
    value, lo, hi = row.get(name), row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if value is None or lo is None or hi is None:
        return value
    return Markup(f"{_fmt(value, scale)} <small>[{_fmt(lo, scale)}, {_fmt(hi, scale)}]</small>")


def _intro(summary: dict[str, Any], cfg: ReportConfig) -> list[str]:
    ivl = summary["intervals"]
    parts = [(f"<h1>Geographic bias report</h1><p>Predictions {html.escape(cfg.predictions)} on "
              f"{html.escape(cfg.data)}, splits {html.escape(', '.join(summary['splits']))}, groups by "
              f"{html.escape(cfg.group_by)} (ranked when n ≥ {cfg.min_group_size}); models: "
              f"{html.escape(', '.join(m['model'] for m in summary['models']))}.</p>"),
             (f"<p>Brackets: {ivl['level']:.0%} intervals. Per metric: " + html.escape("; ".join(
                 f"{m}: {how}" for m, how in ivl["per_metric"].items())) + ". Across groups: "
              + html.escape(ivl["across_groups"]) + ". Seen − unseen drop and bias score: "
              + html.escape(ivl["drop_and_bias_score"]) + ". Significantly worse groups: "
              + html.escape("; ".join(f"{k}: {v}" for k, v in ivl["group_test"].items()))
              + f", corrected by {html.escape(ivl['correction'])}, at α = {ivl['alpha']:g}.</p>")]
    settings = summary.get("predict_settings")
    if settings:
        parts.append("<p>Prediction settings: " + html.escape(", ".join(
            f"{k}={v}" for k, v in settings.items() if k != "build")) + ".</p>")
    for ind, warning in summary.get("label_warnings", {}).items():
        parts.append(f'<p class="fail">Label warning ({html.escape(ind)}): {html.escape(warning)}</p>')
    verdict = "pass" if summary["passed"] else "fail"
    parts.append(f'<p class="{verdict}">Thresholds: {verdict.upper()}</p>')
    if summary["thresholds"]:
        parts.append(_table(["check", "metric", "split", "indicator", "limit", "actual", "passed"],
                            [[c["kind"], c["metric"], c["split"], c["indicator"], c["limit"], c["actual"],
                              c["passed"]] for c in summary["thresholds"]]))
    return parts


def _headlines(summary: dict[str, Any]) -> list[str]:
    names = list(METRICS)
    rows = []
    for split, per in summary["metrics"].items():
        for ind, m in per.items():
            mo = summary["moran"].get(split, {}).get(ind, {})
            bs = summary["bias_score"].get(split, {}).get(ind, {})
            rows.append([split, ind, m["n"], *[_with_interval(m, n) for n in names], mo.get("I"), mo.get("p_sim"),
                         mo.get("p_rand"), _with_interval(bs, "bias_score"), summary["bias_anchor"].get(ind)])
    parts = ["<h2>Headline (raw units)</h2>" + _table(["split", "indicator", "n", *names, "Moran's I",
                                                        "p (permutations)", "p (normal)", "bias score",
                                                        "bias anchor"], rows)]
    score_names = [n for n in names if n != "answer_rate"]
    parts.append(f"<h2>On the 0.0–9.9 score scale</h2><p>{html.escape(summary['headline_scale'])}.</p>" + _table(
        ["split", "indicator", "n answered", *score_names],
        [[split, ind, m["n_answered"], *[_with_interval(m, n) for n in score_names]]
         for split, per in summary["metrics_score_scale"].items() for ind, m in per.items()]))
    parts.append("<h2>Labels</h2>" + _table(
        ["indicator", "source", "resolution", "resolution km", "pooling radius km", "derived from prompt"],
        [[i, v["source"], v["resolution"], v["resolution_km"], v["radius_km"], v["derived_from_prompt"]]
         for i, v in summary["labels"].items()]))
    return parts


def _across_groups(summary: dict[str, Any], labels: dict[str, str]) -> list[str]:
    def group_cell(g: str | None) -> Any:
        if g is None or g not in labels:
            return g
        return Markup(f"{html.escape(g)}<br><small>{html.escape(labels[g])}</small>")

    brows = [[s, i, m, b["n_groups"], group_cell(b["worst_group"]), _with_interval(b, "worst"),
              group_cell(b["best_group"]), _with_interval(b, "best"),
              _with_interval(b, "gap", max(abs(b["worst"] or 0.0), abs(b["best"] or 0.0))),
              _with_interval(b, "worst_decile"), ", ".join(b.get("significantly_worse", [])) or "none",
              b.get("group_test")]
             for s, per in summary["bias"].items() for i, pm in per.items() for m, b in pm.items()]
    parts = ["<h2>Across groups</h2>" + _table(["split", "indicator", "metric", "ranked groups", "worst group",
                                               "worst", "best group", "best", "gap", "worst decile",
                                               "significantly worse (Holm)", "group test"], brows)]
    if summary["drop"]:
        names = list(METRICS)
        parts.append("<h2>Seen − unseen drop (positive: worse on unseen)</h2>" + _table(
            ["indicator", *names], [[i, *[_with_interval(d, n) for n in names]] for i, d in summary["drop"].items()]))
    return parts


def _render_html(con: duckdb.DuckDBPyConnection, summary: dict[str, Any], cfg: ReportConfig) -> str:
    labels = _group_labels(cfg, load_manifest(cfg.data))
    parts = [*_intro(summary, cfg), *_headlines(summary), *_across_groups(summary, labels)]
    for split, per in summary["metrics"].items():
        for ind in per:
            parts.append(f"<h2>{html.escape(ind)} on {html.escape(split)}</h2>")
            parts.append(_scatter(con, split, ind, cfg.seed) + _group_map(con, split, ind, cfg.seed))
            parts.append(_group_bars(con, split, ind, labels, cfg.level))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>urp bias report</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
