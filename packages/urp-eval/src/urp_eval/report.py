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
import math
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from urp_data.contract import MANIFEST_NAME, resolve_splits, split_path
from urp_data.util.fs import default_mode, remove_tree, replace_dir
from urp_data.util.versions import file_sha256, package_versions

from urp_eval.compute import compute
from urp_eval.html import render_html
from urp_eval.inputs import ReportInputError, connect, group_expression
from urp_eval.metrics import METRICS
from urp_eval.sql import literal
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
                                "reported with their intervals but not ranked, tested or named the worst"})
    fail_under: list[str] = field(default_factory=list, metadata={"help": "METRIC=VALUE: exit 1 when the "
                                  "metric of any split and indicator is below VALUE or undefined"})
    max_gap: list[str] = field(default_factory=list, metadata={"help": "METRIC=VALUE: exit 1 when the "
                               "best - worst group gap of any split and indicator exceeds VALUE or is undefined"})
    anchor: str | None = field(default=None, metadata={"help": "indicator whose true values anchor the Manvi "
                               "et al. bias score of every indicator (default, per indicator: another indicator "
                               "that varies, socio-economic first; never the predicted one)"})
    permutations: int = field(default=999, metadata={"help": "permutations of the Moran's I test and of the test "
                              "of each group against the rest (0: no Moran test; Wald tests of groups)"})
    permutation_cells: int = field(default=100_000, metadata={"help": "run the Moran's I permutations only up to "
                                   "this many cells (each costs a pass over all neighbour pairs); above it the "
                                   "normal approximation p_rand stands in"})
    group_test_samples: int = field(default=10_000, metadata={"help": "test whether each group is worse than the "
                                    "rest by permutations only up to this many evaluated samples per split x "
                                    "indicator (each permutation costs a pass over them); above it a Wald test on "
                                    "the intervals' standard errors stands in. Raise it to opt in to permutation "
                                    "tests of larger splits (ours)"})
    seed: int = field(default=0, metadata={"help": "seed of the Moran's I and group-test permutations, the group bootstrap "
                      "and the plot samples"})
    level: float = field(default=0.95, metadata={"help": "confidence level of every interval; groups are "
                         "significantly worse at alpha = 1 - level after Holm's correction"})
    bootstrap: int = field(default=1000, metadata={"help": "replicates of the bootstrap that resamples groups as "
                           "units (across-group figures, seen - unseen drop, bias score; ours)"})
    memory_limit: str = field(default="1GB", metadata={"help": "DuckDB memory limit; larger inputs spill "
                              "to disk (10M samples x 5 indicators run in ~1.2 GB of RSS)"})

    def __post_init__(self) -> None:
        self.splits = resolve_splits(self.split)
        higher = [m.name for m in METRICS.values() if m.direction == "higher"]
        self.under = _parse_thresholds(self.fail_under, "--fail-under", higher)
        self.gaps = _parse_thresholds(self.max_gap, "--max-gap", list(METRICS))
        if self.min_group_size < 1:
            raise ValueError(f"min_group_size={self.min_group_size}: must be at least 1")
        if not 0 < self.level < 1:
            raise ValueError(f"level={self.level}: must be between 0 and 1, e.g. 0.95")
        if self.bootstrap < 100:
            raise ValueError(f"bootstrap={self.bootstrap}: use at least 100 replicates for a percentile interval")
        if self.permutations < 0:
            raise ValueError(f"permutations={self.permutations}: must be 0 (no test) or more")
        if self.group_test_samples < 0:
            raise ValueError(f"group_test_samples={self.group_test_samples}: must be 0 (Wald tests only) or more")
        group_expression(self.group_by)


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

