"""The geographic-bias report: ``summary.json``, ``groups.parquet`` and a self-contained ``report.html``.

:func:`bias_report` wires :mod:`urp_eval.metrics` (every figure comes from DuckDB SQL) to the
outputs and the threshold checks; :func:`compare` puts two summaries side by side. This
module imports neither torch nor transformers: a report runs on any machine.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import math
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
from urp_data.contract import MANIFEST_NAME, load_manifest, resolve_splits, split_path
from urp_data.util.clikit import UsageError
from urp_data.util.fs import default_mode, remove_tree, replace_dir
from urp_data.util.versions import file_sha256, package_versions

from urp_eval import metrics as M
from urp_eval.metrics import METRICS, InputError
from urp_eval.writer import read_settings

logger = logging.getLogger(__name__)

SUMMARY_NAME, GROUPS_NAME, HTML_NAME = "summary.json", "groups.parquet", "report.html"
OUTPUT_NAMES = (SUMMARY_NAME, GROUPS_NAME, HTML_NAME)


def _parse_thresholds(specs: Sequence[str], flag: str, allowed: Sequence[str]) -> list[tuple[str, float]]:
    out = []
    for spec in specs:
        metric, sep, value = spec.partition("=")
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not sep or metric not in allowed or math.isnan(limit):
            raise ValueError(f"{flag} {spec!r}: expected METRIC=VALUE with METRIC one of {', '.join(allowed)} "
                             "and VALUE a number, e.g. spearman=0.3")
        out.append((metric, limit))
    return out


@dataclass
class ReportConfig:
    """``urp-eval bias-report``: accuracy and geographic bias of predictions on a build."""

    data: str = field(metadata={"help": "build folder written by `urp-data build` (<out>/<region>)"})
    predictions: str = field(metadata={"help": "predictions Parquet written by `urp-eval predict`"})
    split: str = field(default="unseen", metadata={"help": "split or alias: unseen, seen, test_unseen, "
                       "test_seen, test (both: adds the seen - unseen drop), all"})
    group_by: str = field(default="group", metadata={"help": "groups to compare: group (the build's "
                          "geographic group), country, or h3:R (H3 parent cell at resolution R)"})
    out: str = field(default="bias-report", metadata={"help": "output folder"})
    min_group_size: int = field(default=30, metadata={"help": "groups with fewer evaluated samples are "
                                "reported but not ranked"})
    fail_under: list[str] = field(default_factory=list, metadata={"help": "METRIC=VALUE: exit 1 when the "
                                  "metric of any split and indicator is below VALUE or undefined"})
    max_gap: list[str] = field(default_factory=list, metadata={"help": "METRIC=VALUE: exit 1 when the "
                               "best - worst group gap of any split and indicator exceeds VALUE or is undefined"})
    anchor: str | None = field(default=None, metadata={"help": "indicator whose true values anchor the Manvi "
                               "et al. bias score of every indicator (default, per indicator: another indicator "
                               "that varies, socio-economic first; never the predicted one)"})
    permutations: int = field(default=999, metadata={"help": "permutations of the Moran's I test"})
    permutation_cells: int = field(default=100_000, metadata={"help": "run the Moran's I permutations only up to "
                                   "this many cells (each costs a pass over all neighbour pairs); above it the "
                                   "normal approximation p_rand stands in"})
    seed: int = field(default=0, metadata={"help": "seed of the Moran's I permutations and plot samples"})
    memory_limit: str = field(default="1GB", metadata={"help": "DuckDB memory limit; larger inputs spill "
                              "to disk (10M samples x 5 indicators run in ~1.2 GB of RSS)"})

    def __post_init__(self) -> None:
        self.splits = resolve_splits(self.split)
        higher = [m.name for m in METRICS.values() if m.direction == "higher"]
        self.under = _parse_thresholds(self.fail_under, "--fail-under", higher)
        self.gaps = _parse_thresholds(self.max_gap, "--max-gap", list(METRICS))
        if self.min_group_size < 1:
            raise ValueError(f"min_group_size={self.min_group_size}: must be at least 1")
        if self.permutations < 0:
            raise ValueError(f"permutations={self.permutations}: must be 0 (no test) or more")
        M.group_expression(self.group_by)


@dataclass
class Report:
    """What :func:`bias_report` wrote and which thresholds broke."""

    out: Path
    summary: dict[str, Any]
    breaches: list[str]


# --------------------------------------------------------------------------- helpers


def _file_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path), "sha256": file_sha256(path)}
    if path.suffix == ".parquet":
        info["rows"] = pq.read_metadata(path).num_rows
    return info


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(),
            **package_versions(("urp-eval", "urp-data", "duckdb", "pyarrow", "numpy", "h3", "matplotlib"), "unknown")}


def _clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _nest(rows: list[dict[str, Any]], *keys: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        d = out
        for k in keys[:-1]:
            d = d.setdefault(row[k], {})
        d[row[keys[-1]]] = {k: _clean(v) for k, v in row.items() if k not in keys}
    return out


# --------------------------------------------------------------------------- the report


def compute(con: duckdb.DuckDBPyConnection, cfg: ReportConfig) -> dict[str, Any]:
    """Every figure of the summary except inputs and thresholds (the metric stage of the report)."""
    build = Path(cfg.data)
    manifest = load_manifest(build)
    indicators = M.open_inputs(con, build, cfg.splits, Path(cfg.predictions), cfg.group_by)
    if cfg.anchor is not None and cfg.anchor not in manifest.indicators:
        raise UsageError(f"--anchor {cfg.anchor!r} is not an indicator of {build} "
                         f"(choose one of {', '.join(manifest.indicators)})")
    varying = M.varying_indicators(con, [i for i in manifest.indicators if i in M.build_indicator_names(con)])
    anchors = {i: cfg.anchor or M.default_anchor(i, varying) for i in indicators}
    M.group_metrics(con, indicators, cfg.min_group_size, anchors)
    overall = M.records(con, """
        SELECT o.* EXCLUDE (grp, ranked), g.groups, g.ranked_groups FROM metrics o
        JOIN (SELECT split, indicator, count(*) AS groups, count(*) FILTER (WHERE ranked) AS ranked_groups
              FROM metrics WHERE grp IS NOT NULL GROUP BY ALL) g USING (split, indicator)
        WHERE o.grp IS NULL ORDER BY split, indicator""")
    with_truth = M.samples_with_truth(con, indicators)
    for row in overall:
        row["n_with_truth"] = with_truth[row["split"]][row["indicator"]]  # n: those with a prediction row
    summary: dict[str, Any] = {
        "splits": list(cfg.splits), "indicators": indicators, "group_by": cfg.group_by,
        "min_group_size": cfg.min_group_size,
        "metrics": _nest(overall, "split", "indicator"),
        "bias": _nest(M.bias_summary(con), "split", "indicator", "metric"),
        "moran": _nest(M.morans_i(con, indicators, cfg.permutations, cfg.seed, cfg.permutation_cells),
                       "split", "indicator"),
        "bias_score": _nest(M.records(con, "SELECT * FROM bias_scores ORDER BY split, indicator"),
                            "split", "indicator"),
        "bias_anchor": anchors,
        "metrics_score_scale": _nest(M.score_metrics(con, indicators, {i: manifest.indicators[i].score_scale()
                                                                       for i in indicators}), "split", "indicator"),
        "headline_scale": HEADLINE_SCALE,
        "labels": {i: _label_info(manifest.indicators[i]) for i in indicators},
        "label_warnings": {i: w for i in indicators if (w := manifest.indicators[i].warning())},
        "drop": None,
    }
    ms = summary["metrics"]
    if "test_seen" in ms and "test_unseen" in ms:
        summary["drop"] = {
            ind: {m.name: _drop(m.direction, ms["test_seen"][ind].get(m.name), ms["test_unseen"][ind].get(m.name))
                  for m in METRICS.values()}
            for ind in indicators if ind in ms["test_seen"] and ind in ms["test_unseen"]
        }
    return summary


HEADLINE_SCALE = ("score: the paper's models answer on the 0.0-9.9 scale and are compared with the truth on that "
                  "scale (metrics_score_scale); metrics are also given in raw units (metrics)")


def _label_info(info: Any) -> dict[str, Any]:
    """What a report repeats about a label: its real resolution and whether the prompt shows its inputs."""
    return {"source": info.source, "resolution": info.resolution, "resolution_km": info.resolution_km,
            "radius_km": info.radius_km, "derived_from_prompt": info.derived_from_prompt}


def _drop(direction: str, seen: float | None, unseen: float | None) -> float | None:
    """How much worse a metric is on unseen than on seen groups (positive: worse on unseen)."""
    if seen is None or unseen is None:
        return None
    return {"higher": seen - unseen, "lower": unseen - seen, "zero": abs(unseen) - abs(seen)}[direction]


def check_thresholds(summary: dict[str, Any], cfg: ReportConfig) -> list[dict[str, Any]]:
    """One entry per threshold × split × indicator; an undefined value breaches (fails closed)."""
    checks = []
    for split, per_ind in summary["metrics"].items():
        for ind, row in per_ind.items():
            for metric, limit in cfg.under:
                actual = row.get(metric)
                checks.append({"kind": "fail_under", "metric": metric, "limit": limit, "split": split,
                               "indicator": ind, "actual": actual, "passed": actual is not None and actual >= limit})
            for metric, limit in cfg.gaps:
                actual = summary["bias"].get(split, {}).get(ind, {}).get(metric, {}).get("gap")
                checks.append({"kind": "max_gap", "metric": metric, "limit": limit, "split": split,
                               "indicator": ind, "actual": actual, "passed": actual is not None and actual <= limit})
    return checks


def _breach_message(c: dict[str, Any]) -> str:
    what = f"{c['metric']} of {c['indicator']} on {c['split']}"
    if c["kind"] == "max_gap":
        what = f"best - worst group gap of {what}"
    actual = "undefined" if c["actual"] is None else f"{c['actual']:.4g}"
    rel = "below" if c["kind"] == "fail_under" else "above"
    return f"threshold breached: {what} is {actual}, {rel} the limit {c['limit']:g}"


def _output_folder(path: str) -> Path:
    """The report folder, resolved; refused when it exists and holds anything but a previous report.

    The folder is replaced as a whole, so ``--out ~`` must not be taken for a report folder.
    """
    out = Path(path).resolve()
    if out == out.parent:
        raise InputError(f"--out {path} is the file-system root; name a folder for the report")
    if out.exists() and (not out.is_dir() or {p.name for p in out.iterdir()} - set(OUTPUT_NAMES)):
        raise InputError(f"--out {path} exists and holds other files than a report; choose a new or empty folder")
    return out


def bias_report(cfg: ReportConfig) -> Report:
    """Compute the report of ``cfg`` and write its three outputs to ``cfg.out`` as one set.

    They are written to a temporary folder beside ``cfg.out`` that replaces it in one rename:
    a failure leaves the previous report whole, never a new summary beside an old page.
    """
    out = _output_folder(cfg.out)
    con = M.connect(cfg.memory_limit)
    summary = compute(con, cfg)
    build = Path(cfg.data)
    summary = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "inputs": {
            "build": str(build),
            "manifest": _file_info(build / MANIFEST_NAME),
            "splits": {s: _file_info(split_path(build, s)) for s in cfg.splits},
            "predictions": _file_info(Path(cfg.predictions)),
        },
        "models": [{"model": m, "backend": b} for m, b in con.execute(
            "SELECT DISTINCT model, backend FROM preds ORDER BY ALL").fetchall()]
        if "model" in {r[0] for r in con.execute("DESCRIBE preds").fetchall()} else [],
        "predict_settings": read_settings(Path(cfg.predictions)),
        "config": asdict(cfg),
        **summary,
    }
    checks = check_thresholds(summary, cfg)
    summary["thresholds"] = checks
    summary["passed"] = all(c["passed"] for c in checks)
    summary["versions"] = _versions()

    page = render_html(con, summary, cfg)  # before any write: a failure here leaves no trace
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(default_mode(directory=True))
    try:
        (tmp / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
        con.execute(f"COPY (SELECT split, indicator, grp AS \"group\", * EXCLUDE (split, indicator, grp) FROM "
                    f"metrics WHERE grp IS NOT NULL ORDER BY ALL) TO {M.literal(str(tmp / GROUPS_NAME))} "
                    "(FORMAT parquet)")
        (tmp / HTML_NAME).write_text(page)
        replace_dir(out.parent, tmp, out)
    finally:
        remove_tree(out.parent, tmp)
    return Report(Path(cfg.out), summary, [_breach_message(c) for c in checks if not c["passed"]])


# --------------------------------------------------------------------------- HTML and plots


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


def _group_bars(con: duckdb.DuckDBPyConnection, split: str, ind: str, labels: dict[str, str]) -> str:
    import matplotlib.pyplot as plt

    rows = con.execute("SELECT grp, spearman, mae, ranked FROM metrics WHERE split = ? AND indicator = ? "
                       "AND grp IS NOT NULL ORDER BY spearman NULLS FIRST, grp LIMIT ?",
                       [split, ind, MAX_BARS]).fetchall()
    if not rows:
        return ""
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.25 * len(rows) + 1.2), sharey=True)
    names = [f"{labels[r[0]]}  ({r[0]})" if r[0] in labels else str(r[0]) for r in rows]
    colors = ["tab:blue" if r[3] else "lightgrey" for r in rows]
    for ax, col, title in ((axes[0], 1, "Spearman ρ"), (axes[1], 2, "MAE")):
        ax.barh(names, [r[col] if r[col] is not None else 0.0 for r in rows], color=colors)
        ax.set_title(title)
    axes[0].invert_yaxis()
    fig.suptitle(f"{ind} on {split}: worst {len(rows)} groups by Spearman (grey: below min group size)",
                 y=1.0 + 0.3 / (0.25 * len(rows) + 1.2))
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
        SELECT j.lon, j.lat, coalesce(m.mae, 'NaN'::DOUBLE) AS mae FROM ({M.joined(ind)}) j
        JOIN metrics m ON m.split = j.split AND m.grp = j.grp AND m.indicator = {M.literal(ind)}
        WHERE j.split = {M.literal(split)} USING SAMPLE reservoir({MAX_POINTS} ROWS) REPEATABLE ({int(seed)})
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

    pts = con.execute(f"SELECT truth, pred FROM ({M.joined(ind)}) WHERE split = {M.literal(split)} AND pred IS NOT "
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


def _render_html(con: duckdb.DuckDBPyConnection, summary: dict[str, Any], cfg: ReportConfig) -> str:
    names = list(METRICS)
    parts = [(f"<h1>Geographic bias report</h1><p>Predictions {html.escape(cfg.predictions)} on "
              f"{html.escape(cfg.data)}, splits {html.escape(', '.join(summary['splits']))}, groups by "
              f"{html.escape(cfg.group_by)} (ranked when n ≥ {cfg.min_group_size}); models: "
              f"{html.escape(', '.join(m['model'] for m in summary['models']))}.</p>")]
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
    rows = []
    for split, per in summary["metrics"].items():
        for ind, m in per.items():
            mo = summary["moran"].get(split, {}).get(ind, {})
            bs = summary["bias_score"].get(split, {}).get(ind, {})
            rows.append([split, ind, m["n"], *[m[n] for n in names], mo.get("I"), mo.get("p_sim"),
                         mo.get("p_rand"), bs.get("bias_score"), summary["bias_anchor"].get(ind)])
    parts.append("<h2>Headline (raw units)</h2>" + _table(["split", "indicator", "n", *names, "Moran's I",
                                                           "p (permutations)", "p (normal)", "bias score",
                                                           "bias anchor"], rows))
    score_names = ["pearson", "spearman", "r2", "rmse", "mae", "mean_error"]
    parts.append(f"<h2>On the 0.0–9.9 score scale</h2><p>{html.escape(summary['headline_scale'])}.</p>" + _table(
        ["split", "indicator", "n answered", *score_names],
        [[split, ind, m["n_answered"], *[m[n] for n in score_names]]
         for split, per in summary["metrics_score_scale"].items() for ind, m in per.items()]))
    parts.append("<h2>Labels</h2>" + _table(
        ["indicator", "source", "resolution", "resolution km", "pooling radius km", "derived from prompt"],
        [[i, v["source"], v["resolution"], v["resolution_km"], v["radius_km"], v["derived_from_prompt"]]
         for i, v in summary["labels"].items()]))
    manifest = load_manifest(cfg.data)
    labels = _group_labels(cfg, manifest)

    def group_cell(g: str | None) -> Any:
        if g is None or g not in labels:
            return g
        return Markup(f"{html.escape(g)}<br><small>{html.escape(labels[g])}</small>")

    brows = [[s, i, m, b["n_groups"], group_cell(b["worst_group"]), b["worst"], group_cell(b["best_group"]),
              b["best"], _fmt(b["gap"], max(abs(b["worst"] or 0.0), abs(b["best"] or 0.0))), b["worst_decile"]]
             for s, per in summary["bias"].items() for i, pm in per.items() for m, b in pm.items()]
    parts.append("<h2>Across groups</h2>" + _table(["split", "indicator", "metric", "ranked groups", "worst group",
                                                    "worst", "best group", "best", "gap", "worst decile"], brows))
    if summary["drop"]:
        parts.append("<h2>Seen − unseen drop (positive: worse on unseen)</h2>" + _table(
            ["indicator", *names], [[i, *[d[n] for n in names]] for i, d in summary["drop"].items()]))
    for split, per in summary["metrics"].items():
        for ind in per:
            parts.append(f"<h2>{html.escape(ind)} on {html.escape(split)}</h2>")
            parts.append(_scatter(con, split, ind, cfg.seed) + _group_map(con, split, ind, cfg.seed))
            parts.append(_group_bars(con, split, ind, labels))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>urp bias report</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


# --------------------------------------------------------------------------- compare


def load_summary(path: str | Path) -> dict[str, Any]:
    """A ``summary.json`` (or the report folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_NAME
    if not p.is_file():
        raise InputError(f"{p} not found; pass a report folder or its summary.json")
    try:
        summary = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{p} is not JSON ({exc})") from exc
    if not isinstance(summary, dict) or "metrics" not in summary:
        raise InputError(f"{p} is not a summary.json written by `urp-eval bias-report`")
    return summary


def _flat(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for split, per in summary["metrics"].items():
        for ind, m in per.items():
            row = {n: m.get(n) for n in ["n", *METRICS]}
            row["moran_I"] = summary.get("moran", {}).get(split, {}).get(ind, {}).get("I")
            row["bias_score"] = summary.get("bias_score", {}).get(split, {}).get(ind, {}).get("bias_score")
            out[(split, ind)] = row
    return out


def compare(a: str | Path, b: str | Path) -> str:
    """A side-by-side text table of two summaries (e.g. GRPO vs SFT, or seen vs unseen).

    Rows pair on (split, indicator); when each report covers one split and they differ
    (a seen and an unseen report), they pair on the indicator alone.
    """
    fa, fb = _flat(load_summary(a)), _flat(load_summary(b))
    sa, sb = {k[0] for k in fa}, {k[0] for k in fb}
    if len(sa) == 1 and len(sb) == 1 and sa != sb:
        label = f"{sa.pop()} / {sb.pop()}"
        fa = {(label, i): v for (_, i), v in fa.items()}
        fb = {(label, i): v for (_, i), v in fb.items()}
    keys = [k for k in fa if k in fb]
    if not keys:
        raise InputError(f"{a} and {b} share no split and indicator to compare")
    header = ["split", "indicator", "metric", "A", "B", "B - A"]
    rows = []
    for split, ind in keys:
        for metric in fa[(split, ind)]:
            va, vb = fa[(split, ind)][metric], fb[(split, ind)][metric]
            diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
            rows.append([split, ind, metric, va, vb, diff])
    cells = [header] + [[_text(v) for v in r] for r in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(header))]
    lines = ["  ".join(v.ljust(w) if c < 3 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"A: {a}\nB: {b}\n" + "\n".join(lines)


def _text(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)

