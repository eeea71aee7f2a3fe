"""The metric stage of the bias report: every figure of ``summary.json`` but its inputs and thresholds.

Wires the DuckDB stages (:mod:`urp_eval.inputs`, :mod:`urp_eval.metrics`, :mod:`urp_eval.scores`,
:mod:`urp_eval.moran`) to the uncertainty stage (:mod:`urp_eval.uncertainty`), which works on
their small per-group tables only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from urp_data.contract import load_manifest
from urp_data.util.clikit import UsageError

from urp_eval import uncertainty as U
from urp_eval.anchors import default_anchor, varying_indicators
from urp_eval.inputs import build_indicator_names, open_inputs, samples_with_truth
from urp_eval.metrics import METRICS, bias_summary, group_metrics
from urp_eval.moran import morans_i
from urp_eval.resample import drop_value
from urp_eval.scores import score_metrics
from urp_eval.sql import records

if TYPE_CHECKING:
    from urp_eval.config import ReportConfig

HEADLINE_SCALE = ("score: the paper's models answer on the 0.0-9.9 scale and are compared with the truth on that "
                  "scale (metrics_score_scale); metrics are also given in raw units (metrics)")


def compute(con: duckdb.DuckDBPyConnection, cfg: ReportConfig) -> dict[str, Any]:
    """Every figure of the summary except inputs and thresholds, each with its interval."""
    build = Path(cfg.data)
    manifest = load_manifest(build)
    indicators = open_inputs(con, build, cfg.splits, Path(cfg.predictions), cfg.group_by)
    if cfg.anchor is not None and cfg.anchor not in manifest.indicators:
        raise UsageError(f"--anchor {cfg.anchor!r} is not an indicator of {build} "
                         f"(choose one of {', '.join(manifest.indicators)})")
    varying = varying_indicators(con, [i for i in manifest.indicators if i in build_indicator_names(con)])
    anchors = {i: cfg.anchor or default_anchor(i, varying) for i in indicators}
    group_metrics(con, indicators, cfg.min_group_size, anchors)
    level, seed, reps = cfg.level, cfg.seed, cfg.bootstrap
    test = U.GroupTest(cfg.permutations, cfg.group_test_samples, seed)
    scales = U.annotate_groups(con, level, test)
    tests = ", ".join(f"{m}_p_worse, {m}_worse" for m in METRICS) + ", group_test"
    overall = records(con, f"""
        SELECT o.* EXCLUDE (grp, ranked, {tests}), g.groups, g.ranked_groups
        FROM metrics o
        JOIN (SELECT split, indicator, count(*) AS groups, count(*) FILTER (WHERE ranked) AS ranked_groups
              FROM metrics WHERE grp IS NOT NULL GROUP BY ALL) g USING (split, indicator)
        WHERE o.grp IS NULL ORDER BY split, indicator""")
    with_truth = samples_with_truth(con, indicators)
    for row in overall:
        row["n_with_truth"] = with_truth[row["split"]][row["indicator"]]  # n: those with a prediction row
    bias = U.across_group_intervals(con, bias_summary(con), scales, level, seed, reps)
    scores = score_metrics(con, indicators, {i: manifest.indicators[i].score_scale() for i in indicators})
    metrics = _nest(overall, "split", "indicator")
    summary: dict[str, Any] = {
        "splits": list(cfg.splits), "indicators": indicators, "group_by": cfg.group_by,
        "min_group_size": cfg.min_group_size,
        "intervals": U.methods(level, seed, reps, test),
        "metrics": metrics,
        "bias": _nest(bias, "split", "indicator", "metric"),
        "moran": _nest(morans_i(con, indicators, cfg.permutations, cfg.seed, cfg.permutation_cells),
                       "split", "indicator"),
        "bias_score": _nest(U.bias_score_intervals(con, records(
            con, "SELECT * FROM bias_scores ORDER BY split, indicator"), level, seed, reps), "split", "indicator"),
        "bias_anchor": anchors,
        "metrics_score_scale": _nest(U.score_intervals(scores, level), "split", "indicator"),
        "headline_scale": HEADLINE_SCALE,
        "labels": {i: _label_info(manifest.indicators[i]) for i in indicators},
        "label_warnings": {i: w for i in indicators if (w := manifest.indicators[i].warning())},
        "drop": _drops(metrics, indicators),
    }
    if summary["drop"]:
        U.drop_intervals(con, summary["drop"], level, seed, reps)
    return summary


def _drops(ms: dict[str, Any], indicators: list[str]) -> dict[str, dict[str, Any]] | None:
    """Per indicator and metric, the seen − unseen drop (positive: worse on unseen), when both splits are reported."""
    if "test_seen" not in ms or "test_unseen" not in ms:
        return None
    return {ind: {m.name: _drop(m.direction, ms["test_seen"][ind].get(m.name), ms["test_unseen"][ind].get(m.name))
                  for m in METRICS.values()}
            for ind in indicators if ind in ms["test_seen"] and ind in ms["test_unseen"]}


def _drop(direction: str, seen: float | None, unseen: float | None) -> float | None:
    return None if seen is None or unseen is None else drop_value(direction, seen, unseen)


def _label_info(info: Any) -> dict[str, Any]:
    """What a report repeats about a label: its real resolution and whether the prompt shows its inputs."""
    return {"source": info.source, "resolution": info.resolution, "resolution_km": info.resolution_km,
            "radius_km": info.radius_km, "derived_from_prompt": info.derived_from_prompt}


def clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _nest(rows: list[dict[str, Any]], *keys: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        d = out
        for k in keys[:-1]:
            d = d.setdefault(row[k], {})
        d[row[keys[-1]]] = {k: clean(v) for k, v in row.items() if k not in keys}
    return out
