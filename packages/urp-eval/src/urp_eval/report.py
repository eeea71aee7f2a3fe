"""The geographic-bias report: ``summary.json``, ``groups.parquet`` and a self-contained ``report.html``.

:func:`bias_report` runs the metric stage (:func:`urp_eval.compute.compute`: DuckDB SQL, then
intervals and tests on the small per-group tables), checks the thresholds and writes the three
outputs as one set. Neither this module nor those it imports load torch: a report runs on any
machine.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from urp_data.contract import MANIFEST_NAME, split_path
from urp_data.util.fs import default_mode, remove_tree, replace_dir
from urp_data.util.versions import file_sha256, package_versions

from urp_eval.compute import compute
from urp_eval.config import ReportConfig
from urp_eval.html import render_html
from urp_eval.inputs import ReportInputError, connect
from urp_eval.sql import literal
from urp_eval.writer import read_settings

logger = logging.getLogger(__name__)

SUMMARY_NAME, GROUPS_NAME, HTML_NAME = "summary.json", "groups.parquet", "report.html"
OUTPUT_NAMES = (SUMMARY_NAME, GROUPS_NAME, HTML_NAME)


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
        raise ReportInputError(f"--out {path} is the file-system root; name a folder for the report")
    if out.exists() and (not out.is_dir() or {p.name for p in out.iterdir()} - set(OUTPUT_NAMES)):
        raise ReportInputError(f"--out {path} exists and holds other files than a report; choose a new or empty folder")
    return out


def bias_report(cfg: ReportConfig) -> Report:
    """Compute the report of ``cfg`` and write its three outputs to ``cfg.out`` as one set.

    They are written to a temporary folder beside ``cfg.out`` that replaces it in one rename:
    a failure leaves the previous report whole, never a new summary beside an old page.
    """
    out = _output_folder(cfg.out)
    con = connect(cfg.memory_limit)
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
        methods = literal(json.dumps(summary["intervals"]))
        con.execute(f"COPY (SELECT split, indicator, grp AS \"group\", * EXCLUDE (split, indicator, grp) FROM "
                    f"metrics WHERE grp IS NOT NULL ORDER BY ALL) TO {literal(str(tmp / GROUPS_NAME))} "
                    f"(FORMAT parquet, KV_METADATA {{'urp.intervals': {methods}}})")
        (tmp / HTML_NAME).write_text(page)
        replace_dir(out.parent, tmp, out)
    finally:
        remove_tree(out.parent, tmp)
    return Report(Path(cfg.out), summary, [_breach_message(c) for c in checks if not c["passed"]])

