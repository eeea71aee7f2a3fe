"""Accuracy on the 0.0-9.9 score scale, the scale the paper's models answer on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa
from urp_data.contract import ScoreScale

from urp_eval.inputs import joined
from urp_eval.metrics import r2_influence_sql, ranks_sql
from urp_eval.sql import literal, nan_to_null, records


def score_metrics(con: duckdb.DuckDBPyConnection, indicators: Sequence[str],
                  scales: Mapping[str, ScoreScale | None]) -> list[dict[str, Any]]:
    """Accuracy on the 0.0–9.9 score scale, per split × indicator (whole splits, answered pairs).

    The prediction is the ``score`` column (the model's own 0.0–9.9 answer); the truth is the
    true value mapped with the manifest's train-fitted scale (:meth:`ScoreScale.to_score`:
    linear between the unique quantiles, tied quantiles at their mean score), computed here in
    SQL with an ASOF join on the scale's breakpoints. Same definitions as :data:`METRICS`; the
    ``sd_*`` columns are the spreads :mod:`urp_eval.intervals` needs.
    """
    out: list[dict[str, Any]] = []
    for ind in indicators:
        scale = scales.get(ind)
        if scale is None:
            continue
        uq, grid = scale.breakpoints()
        con.register("seg", pa.table({"x0": uq, "x1": pa.array(list(uq[1:]) + [None], pa.float64()),
                                      "y0": grid, "y1": pa.array(list(grid[1:]) + [None], pa.float64())}))
        out += records(con, f"""
        WITH j AS (SELECT split, score AS pred, truth FROM ({joined(ind)}) WHERE score IS NOT NULL),
        t AS (SELECT j.split, j.pred, CASE WHEN seg.x0 IS NULL THEN {float(grid[0])!r}
                                           WHEN seg.x1 IS NULL THEN seg.y0
                                           ELSE seg.y0 + (j.truth - seg.x0) * (seg.y1 - seg.y0) / (seg.x1 - seg.x0)
                                      END AS truth
              FROM j ASOF LEFT JOIN seg ON j.truth >= seg.x0),
        {ranks_sql('pred', 't', 'split')}, {ranks_sql('truth', 't', 'split')},
        g AS (SELECT t.split, count(*) AS n_answered, corr(t.pred, t.truth) AS pearson, corr(p.ro, q.ro) AS spearman,
                     sum((t.pred - t.truth) ^ 2) AS sse, var_pop(t.truth) * count(*) AS sst,
                     sqrt(avg((t.pred - t.truth) ^ 2)) AS rmse, avg(abs(t.pred - t.truth)) AS mae,
                     avg(t.pred - t.truth) AS mean_error, avg(t.truth) AS ybar
              FROM t JOIN pred_r p USING (split, pred) JOIN truth_r q USING (split, truth) GROUP BY t.split),
        s AS (SELECT t.split, stddev_samp(t.pred - t.truth) AS sd_e, stddev_samp(abs(t.pred - t.truth)) AS sd_ae,
                     stddev_samp((t.pred - t.truth) ^ 2) AS sd_ee,
                     stddev_samp({r2_influence_sql('g', 't.pred - t.truth', 't.truth')}) AS sd_r2
              FROM t JOIN g USING (split) GROUP BY t.split)
        SELECT split, {literal(ind)} AS indicator, n_answered, {nan_to_null('pearson')} AS pearson,
               {nan_to_null('spearman')} AS spearman, CASE WHEN sst > 0 THEN 1 - sse / sst END AS r2,
               rmse, mae, mean_error, sd_e, sd_ae, sd_ee, sd_r2
        FROM g JOIN s USING (split) ORDER BY split""")
        con.unregister("seg")
    return out


