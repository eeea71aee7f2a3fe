"""Accuracy and geographic-bias metrics, computed in DuckDB SQL over the Parquet files.

Inputs are two views on one DuckDB connection (see :func:`urp_eval.inputs.open_inputs`): ``samples``, the
selected split files of a build (one row per sample, one float64 column per indicator), and
``preds``, a predictions file (one row per (sample_id, indicator), see
:data:`urp_eval.predict.PREDICTION_SCHEMA`). Nothing is loaded into Python rows: each metric
is one SQL query whose result is a small table (one row per split × indicator × group).

Conventions (checked against scipy, scikit-learn and esda in the tests):

* A sample is *evaluated* for an indicator when its true value is not null and the
  predictions hold a row for it; it is *answered* when that row's prediction is not null.
  ``answer_rate`` = answered / evaluated; every other accuracy metric uses answered pairs.
* Spearman's ρ is Pearson's r of average ranks (ties share the mean of their ranks), the
  ranks taken within the same partition as the correlation (the group, or the whole split).
* R² is 1 − SSE/SST (scikit-learn's ``r2_score``), not the squared correlation; it is null
  when the true values are constant. Correlations are null when either side is constant.
* ``mean_error`` is the mean signed error, prediction − truth (positive: over-estimates).

Besides the figures, each partition's row carries what its interval needs (standard deviations
of the per-sample terms, :mod:`urp_eval.intervals`), and each group's sums go to ``group_sums``
and ``bias_group_sums`` so that split-level figures can be recomputed with groups resampled as
units (:mod:`urp_eval.resample`) without another pass over the samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from urp_eval.inputs import joined
from urp_eval.sql import literal, nan_to_null, quote, records


@dataclass(frozen=True)
class Metric:
    """A per-group metric and which direction is good; ``mean_error`` is best at zero."""

    name: str
    direction: str  # "higher", "lower" or "zero"
    help: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("answer_rate", "higher", "share of evaluated samples with a parsable answer"),
        Metric("pearson", "higher", "Pearson correlation of prediction and truth"),
        Metric("spearman", "higher", "Spearman rank correlation (average ranks for ties)"),
        Metric("r2", "higher", "coefficient of determination, 1 - SSE/SST"),
        Metric("rmse", "lower", "root mean squared error, in the indicator's unit"),
        Metric("mae", "lower", "mean absolute error, in the indicator's unit"),
        Metric("mean_error", "zero", "mean signed error prediction - truth, in the indicator's unit"),
    )
}

# --------------------------------------------------------------------------- per-group metrics


def ranks_sql(col: str, table: str, partition: str = "split, grp") -> str:
    """CTEs ``{col}_d`` (distinct values of ``col`` per partition of ``table`` with counts) and
    ``{col}_r`` (their average rank within the partition, ``rg``, and within the split, ``ro``).

    Aggregating to distinct values first keeps the sorts as small as the number of distinct
    values (indicators and rounded answers tie a lot). A value seen c times after k smaller
    ones has the average rank k + (c + 1) / 2; the split-level table is built from the
    partition-level one, so a join back to the rows gives both ranks at once.
    """
    return f"""
    {col}_d AS (SELECT {partition}, {col}, count(*) AS c FROM {table} GROUP BY ALL),
    {col}_o AS (SELECT split, {col}, sum(sum(c)) OVER (PARTITION BY split ORDER BY {col} ROWS UNBOUNDED PRECEDING)
                       - (sum(c) - 1) / 2.0 AS ro
                FROM {col}_d GROUP BY split, {col}),
    {col}_r AS (SELECT {partition}, {col}, ro, sum(c) OVER (PARTITION BY {partition} ORDER BY {col} ROWS UNBOUNDED
                       PRECEDING) - (c - 1) / 2.0 AS rg
                FROM {col}_d JOIN {col}_o USING (split, {col}))"""


SUM_COLUMNS = ("s_y", "s_p", "s_yy", "s_pp", "s_yp", "sse", "s_ae", "s_rp", "s_rt", "s_rpp", "s_rtt", "s_rpt")
"""Per-group sums over answered pairs (y truth, p prediction, r split-level ranks, ae absolute error)."""

BIAS_SUM_COLUMNS = ("c", "s_s", "s_a", "s_ss", "s_aa", "s_sa", "s_dev")
"""Per-group sums of the bias score's terms (s, a: split-level ranks of score and anchor; dev = |score - mean|)."""


def group_metrics(con: duckdb.DuckDBPyConnection, indicators: Sequence[str], min_group_size: int,
                  anchor: str | Mapping[str, str | None]) -> None:
    """Fill the tables ``metrics``, ``group_sums``, ``bias_scores`` and ``bias_group_sums``, one indicator at a time.

    ``metrics``: one row per split × indicator × group, plus the whole split (``grp`` NULL):
    n, n_answered, the :data:`METRICS`, ``ranked`` (n >= ``min_group_size``; always true
    for the whole split) and the standard deviations ``sd_*`` its intervals need. Spearman's
    ranks are taken over answered pairs within the group, or within the whole split for the
    split's row.

    ``bias_scores``: the Manvi et al. (2024) bias score per split × indicator, on the model's
    0–9.9 scores: ρ_Spearman(score, true ``anchor``) × mean absolute deviation of the scores ×
    answer rate. ρ and the deviation use evaluated samples with a score and a true anchor
    value. Positive: the model rates places higher where the anchor (e.g. population) is higher.
    ``anchor`` is one indicator for all, or one per indicator (None: no anchor, no bias score).
    Memory stays bounded: one indicator's joined rows at a time, everything else is per group.
    """
    for table in ("metrics", "group_sums", "bias_parts"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute("CREATE OR REPLACE TEMP TABLE anchors (indicator VARCHAR, anchor VARCHAR)")
    # Integer ids for (split, group): every sort, hash and join below keys on them instead of
    # strings, about 3x faster at 10M samples; names come back in the small result tables.
    con.execute("""CREATE OR REPLACE TEMP TABLE part_ids AS
                   SELECT split, grp, dense_rank() OVER (ORDER BY split)::INTEGER AS sid,
                          row_number() OVER (ORDER BY split, grp)::INTEGER AS gid
                   FROM (SELECT DISTINCT split, grp FROM samples)""")
    for i, ind in enumerate(indicators):
        anc = anchor.get(ind) if isinstance(anchor, Mapping) else anchor
        con.execute("INSERT INTO anchors VALUES (?, ?)", [ind, anc])
        con.execute(f"CREATE OR REPLACE TEMP TABLE j AS SELECT p.sid AS split, p.gid AS grp, truth, pred, score, "
                    f"{'anchor' if anc else 'NULL::DOUBLE AS anchor'} FROM ({joined(ind, anchor=anc)}) x "
                    f"JOIN part_ids p ON p.split = x.split AND p.grp IS NOT DISTINCT FROM x.grp")
        _accuracy(con, ind, min_group_size, create=i == 0)
        _bias_parts(con, ind, create=i == 0)
    for table in ("j", "g", "part_ids"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute("""
        CREATE OR REPLACE TABLE bias_scores AS
        SELECT m.split, m.indicator, a.anchor, b.rho, b.mad, m.answer_rate,
               b.rho * b.mad * m.answer_rate AS bias_score
        FROM metrics m LEFT JOIN (SELECT * FROM bias_parts WHERE grp IS NULL) b USING (split, indicator)
        LEFT JOIN anchors a USING (indicator)
        WHERE m.grp IS NULL""")
    con.execute("CREATE OR REPLACE TABLE bias_group_sums AS SELECT split, indicator, grp, "
                f"{', '.join(BIAS_SUM_COLUMNS)} FROM bias_parts WHERE grp IS NOT NULL")
    con.execute("DROP TABLE bias_parts")


_NAMES = """JOIN (SELECT DISTINCT split AS name, sid FROM part_ids) sn ON sn.sid = {t}.split
            LEFT JOIN part_ids pn ON pn.gid = {t}.grp"""


def _accuracy(con: duckdb.DuckDBPyConnection, ind: str, min_group_size: int, create: bool) -> None:
    """One indicator's rows of ``metrics`` and ``group_sums`` from table ``j``."""
    grouped = "GROUPING(grp) = 1"
    ans = "FILTER (WHERE pred IS NOT NULL)"
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE g AS
    WITH a AS (SELECT split, grp, truth, pred FROM j WHERE pred IS NOT NULL),
    {ranks_sql('pred', 'a')}, {ranks_sql('truth', 'a')},
    r AS (
      SELECT j.split, j.grp, j.truth, j.pred, p.rg AS rgp, p.ro AS rop, t.rg AS rgt, t.ro AS rot FROM j
      LEFT JOIN pred_r p ON p.split = j.split AND p.grp = j.grp AND p.pred = j.pred
      LEFT JOIN truth_r t ON j.pred IS NOT NULL AND t.split = j.split AND t.grp = j.grp AND t.truth = j.truth
    )
    SELECT split, grp, {grouped} AS whole, count(*) AS n, count(pred) AS n_answered,
           corr(pred, truth) AS pearson, CASE WHEN {grouped} THEN corr(rop, rot) ELSE corr(rgp, rgt) END AS spearman,
           sum((pred - truth) ^ 2) AS sse, var_pop(truth) {ans} * count(pred) AS sst, avg(truth) {ans} AS ybar,
           sqrt(avg((pred - truth) ^ 2)) AS rmse, avg(abs(pred - truth)) AS mae, avg(pred - truth) AS mean_error,
           sum(truth) {ans} AS s_y, sum(pred) AS s_p, sum(truth ^ 2) {ans} AS s_yy, sum(pred ^ 2) AS s_pp,
           sum(pred * truth) AS s_yp, sum(abs(pred - truth)) AS s_ae, sum(rop) AS s_rp, sum(rot) AS s_rt,
           sum(rop ^ 2) AS s_rpp, sum(rot ^ 2) AS s_rtt, sum(rop * rot) AS s_rpt
    FROM r GROUP BY GROUPING SETS ((split, grp), (split))""")
    con.execute(f"""
    {'CREATE TABLE metrics AS' if create else 'INSERT INTO metrics'}
    SELECT sn.name AS split, {literal(ind)} AS indicator, CASE WHEN g.whole THEN NULL ELSE pn.grp END AS grp, g.n,
           n_answered, n_answered / g.n AS answer_rate, {nan_to_null('pearson')} AS pearson,
           {nan_to_null('spearman')} AS spearman, CASE WHEN sst > 0 THEN 1 - sse / sst END AS r2, rmse, mae,
           mean_error, g.whole OR g.n >= {int(min_group_size)} AS ranked, sd_e, sd_ae, sd_ee, sd_r2
    FROM g LEFT JOIN ({_spread_sql()}) s ON s.split = g.split AND s.grp IS NOT DISTINCT FROM g.grp
    {_NAMES.format(t='g')}""")
    con.execute(f"""
    {'CREATE TABLE group_sums AS' if create else 'INSERT INTO group_sums'}
    SELECT sn.name AS split, {literal(ind)} AS indicator, pn.grp, n, n_answered, {', '.join(SUM_COLUMNS)}
    FROM g {_NAMES.format(t='g')} WHERE NOT g.whole""")


def r2_influence_sql(t: str, e: str = "e", truth: str = "j.truth") -> str:
    """SQL for the influence of one answered pair on log(1 − R²) = log(MSE/V) (delta method) in partition ``t``.

    ``t`` names a row with ``sse``, ``sst``, ``n_answered`` and ``ybar`` (mean truth) of the partition.
    With e = pred − truth, MSE = SSE/n and V the population variance of the truth,
    IF = (e² − MSE)/MSE − ((truth − ȳ)² − V)/V, and Var(log(1 − R²)) ≈ Var(IF)/n. The log scale
    keeps the interval's coverage near its level at 50 pairs, where R² itself is skewed.
    """
    mse, v = f"nullif({t}.sse / {t}.n_answered, 0)", f"nullif({t}.sst / {t}.n_answered, 0)"
    return f"(({e}) ^ 2 - {mse}) / {mse} - (({truth} - {t}.ybar) ^ 2 - {v}) / {v}"


def _spread_sql() -> str:
    """Per partition of ``g``: standard deviations of the per-pair terms behind mean error, MAE, MSE and R²."""
    return f"""
    SELECT split, grp, stddev_samp(e) AS sd_e, stddev_samp(abs(e)) AS sd_ae, stddev_samp(e * e) AS sd_ee,
           CASE WHEN GROUPING(grp) = 1 THEN stddev_samp(if_o) ELSE stddev_samp(if_g) END AS sd_r2
    FROM (SELECT j.split, j.grp, e, {r2_influence_sql('gg')} AS if_g, {r2_influence_sql('go')} AS if_o
          FROM (SELECT split, grp, truth, pred - truth AS e FROM j WHERE pred IS NOT NULL) j
          JOIN g gg ON gg.split = j.split AND gg.grp = j.grp
          JOIN g go ON go.split = j.split AND go.whole)
    GROUP BY GROUPING SETS ((split, grp), (split))"""


def _bias_parts(con: duckdb.DuckDBPyConnection, ind: str, create: bool) -> None:
    """One indicator's rows of ``bias_parts``: ρ and MAD per split (grp NULL) and their sums per group."""
    con.execute(f"""
    {'CREATE TABLE bias_parts AS' if create else 'INSERT INTO bias_parts'}
    WITH b AS (SELECT split, grp, score, anchor FROM j WHERE score IS NOT NULL AND anchor IS NOT NULL),
    {ranks_sql('score', 'b', 'split')}, {ranks_sql('anchor', 'b', 'split')},
    m AS (SELECT split, sum(c * score) / sum(c) AS mean FROM score_d GROUP BY split),
    x AS (SELECT b.split, b.grp, s.ro AS rs, a.ro AS ra, abs(b.score - m.mean) AS dev FROM b
          JOIN score_r s USING (split, score) JOIN anchor_r a USING (split, anchor) JOIN m USING (split)),
    p AS (SELECT split, grp, GROUPING(grp) = 1 AS whole, corr(rs, ra) AS rho, avg(dev) AS mad, count(*) AS c,
                 sum(rs) AS s_s, sum(ra) AS s_a, sum(rs ^ 2) AS s_ss, sum(ra ^ 2) AS s_aa, sum(rs * ra) AS s_sa,
                 sum(dev) AS s_dev
          FROM x GROUP BY GROUPING SETS ((split, grp), (split)))
    SELECT sn.name AS split, {literal(ind)} AS indicator, CASE WHEN p.whole THEN NULL ELSE pn.grp END AS grp,
           {nan_to_null('rho')} AS rho, mad, {', '.join(BIAS_SUM_COLUMNS)}
    FROM p {_NAMES.format(t='p')}""")


def bias_summary(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Across ranked groups, per split × indicator × metric: worst and best group, gap, worst decile.

    fairlearn's semantics: ``gap`` = max − min over groups (its ``difference``), ``worst`` its
    ``group_min`` for higher-is-better metrics (``group_max`` for lower-is-better; the largest
    absolute value for ``mean_error``). ``worst_decile`` is the 10th percentile across groups
    for higher-is-better metrics, the 90th for lower-is-better ones (of |value| for
    ``mean_error``). No ratios: several metrics can be negative. Groups whose metric is null
    (e.g. a constant truth) are left out of that metric's ranking.
    """
    badness = " UNION ALL ".join(
        f"SELECT split, indicator, grp, {literal(m.name)} AS metric, {quote(m.name)} AS value, "
        + {"higher": f"-{quote(m.name)}", "lower": quote(m.name), "zero": f"abs({quote(m.name)})"}[m.direction]
        + " AS bad FROM metrics WHERE grp IS NOT NULL AND ranked"
        for m in METRICS.values()
    )
    return records(con, f"""
        WITH b AS ({badness}), v AS (SELECT * FROM b WHERE value IS NOT NULL)
        SELECT split, indicator, metric, count(*) AS n_groups,
               first(grp ORDER BY bad DESC, grp) AS worst_group, first(value ORDER BY bad DESC, grp) AS worst,
               first(grp ORDER BY bad, grp) AS best_group, first(value ORDER BY bad, grp) AS best,
               max(value) - min(value) AS gap,
               CASE WHEN metric IN ({', '.join(literal(m.name) for m in METRICS.values() if m.direction == 'higher')})
                    THEN -quantile_cont(bad, 0.9) ELSE quantile_cont(bad, 0.9) END AS worst_decile
        FROM v GROUP BY split, indicator, metric ORDER BY split, indicator, metric
    """)


