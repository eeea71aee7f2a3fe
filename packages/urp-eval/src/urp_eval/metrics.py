"""Accuracy and geographic-bias metrics, computed in DuckDB SQL over the Parquet files.

Inputs are two views on one DuckDB connection (see :func:`open_inputs`): ``samples``, the
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
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from urp_data.contract import SCORE_MAX, SchemaError, ScoreScale, indicator_columns, split_path
from urp_data.util.clikit import UsageError
from urp_data.util.fs import one_line

logger = logging.getLogger(__name__)


class InputError(SchemaError):
    """An input of the report is missing, malformed, or does not match the build (exit code 2)."""


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

REQUIRED_PREDICTION_COLUMNS = {"sample_id": "VARCHAR", "indicator": "VARCHAR", "prediction": "DOUBLE",
                               "score": "DOUBLE"}
REQUIRED_SAMPLE_COLUMNS = {"sample_id": "VARCHAR", "h3_cell": "VARCHAR", "lat": "DOUBLE", "lon": "DOUBLE",
                           "group": "VARCHAR", "country": "VARCHAR", "split": "VARCHAR"}


def quote(name: str) -> str:
    """A SQL identifier for a column name (indicator names come from user files)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def parquet_source(paths: Sequence[Path]) -> str:
    """SQL ``read_parquet([...])`` of these files, read literally.

    DuckDB expands ``*``, ``?`` and ``[...]`` in file names as globs, so ``preds[1].parquet``
    would read ``preds1.parquet``; each such character is escaped as a one-character class.
    """
    files = ", ".join(literal(re.sub(r"([*?\[\]])", r"[\1]", str(p))) for p in paths)
    return f"read_parquet([{files}])"


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The single value of a one-row, one-column query."""
    row = con.execute(sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"query returned no row: {sql[:80]}")
    return row[0]


def records(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Rows of a (small) query result as dicts."""
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _nan_to_null(expr: str) -> str:
    # DuckDB's corr() returns NaN on constant input; scipy returns nan with a warning. Null says "undefined".
    return f"CASE WHEN isnan({expr}) THEN NULL ELSE {expr} END"


# --------------------------------------------------------------------------- inputs


def connect(memory_limit: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for one report: bounded memory (larger work spills to disk), no progress bar."""
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {literal(memory_limit)}")
    con.execute("SET enable_progress_bar = false")  # stderr is for the CLI's one-line errors
    return con


def group_expression(group_by: str) -> str:
    """SQL for the group of a sample: a column (``group``, ``country``) or ``h3:R``, the H3 parent at R.

    The H3 parent is computed with bit operations on the 64-bit index (resolution in bits
    52–55, then one 3-bit digit per resolution; digits finer than R are set to 7), so the
    report needs no DuckDB extension.
    """
    if group_by == "group":
        return quote("group")
    if group_by == "country":
        return "coalesce(country, 'unknown')"
    if group_by.startswith("h3:"):
        try:
            res = int(group_by[3:])
        except ValueError:
            res = -1
        if not 0 <= res <= 15:
            raise InputError(f"--group-by {group_by!r}: the H3 resolution must be an integer 0-15, e.g. h3:5")
        keep = ~(0xF << 52) & 0xFFFF_FFFF_FFFF_FFFF
        bits = (res << 52) | ((1 << (3 * (15 - res))) - 1)
        return (f"lower(printf('%x', (('0x' || h3_cell)::UBIGINT & {keep}::UBIGINT) "
                f"| {bits}::UBIGINT))")
    raise InputError(f"--group-by {group_by!r}: choose group, country or h3:R (an H3 resolution)")


def _check_columns(con: duckdb.DuckDBPyConnection, view: str, required: dict[str, str], what: str) -> None:
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    for col, typ in required.items():
        if col not in types:
            raise InputError(f"{what} has no column {col!r}; is it the right file?")
        if typ == "DOUBLE" and types[col] not in ("DOUBLE", "FLOAT"):
            raise InputError(f"{what}: column {col!r} is {types[col]}, expected a float")
        if typ == "VARCHAR" and types[col] != "VARCHAR":
            raise InputError(f"{what}: column {col!r} is {types[col]}, expected a string")


def _schema_of(path: Path) -> pa.Schema:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable Parquet file ({one_line(exc)})") from exc


def open_inputs(con: duckdb.DuckDBPyConnection, build_dir: Path, splits: Sequence[str],
                predictions: Path, group_by: str) -> list[str]:
    """Create the views ``samples`` (with a ``grp`` column) and ``preds``; return the indicators to report.

    Raises :class:`InputError` for a missing or malformed file, a split with no rows,
    predictions of an indicator the build lacks, duplicate predictions, or predictions that
    match no sample of the selected splits.
    """
    paths = [split_path(build_dir, s) for s in splits]
    for p in [*paths, predictions]:
        if not p.is_file():
            raise InputError(f"{p} not found")
    build_indicators: list[str] | None = None
    for p in paths:
        cols = indicator_columns(_schema_of(p))
        if build_indicators is not None and cols != build_indicators:
            raise InputError(f"{p} has indicators {cols}, other splits {build_indicators}; rebuild the region")
        build_indicators = cols
    _schema_of(predictions)
    con.execute(f"CREATE OR REPLACE VIEW raw_samples AS SELECT * FROM {parquet_source(paths)}")
    _check_columns(con, "raw_samples", REQUIRED_SAMPLE_COLUMNS, f"{paths[0]}")
    for p, s in zip(paths, splits):
        if scalar(con, f"SELECT count(*) FROM {parquet_source([p])}") == 0:
            raise InputError(f"split {s!r} has no rows ({p}); choose another --split")
    grp = group_expression(group_by)
    if group_by.startswith("h3:"):
        res = int(group_by[3:])
        finest = scalar(con, "SELECT min((('0x' || h3_cell)::UBIGINT >> 52) & 15) FROM raw_samples")
        if res > finest:
            raise UsageError(f"--group-by {group_by}: cells are at resolution {finest}; choose h3:R with R <= {finest}")
    ind_cols = ", ".join(quote(i) for i in build_indicators or [])
    con.execute(f"CREATE OR REPLACE VIEW samples AS SELECT sample_id, split, {grp} AS grp, h3_cell, lat, lon"
                f"{', ' if ind_cols else ''}{ind_cols} FROM raw_samples")
    con.execute(f"CREATE OR REPLACE VIEW preds AS SELECT * FROM {parquet_source([predictions])}")
    _check_columns(con, "preds", REQUIRED_PREDICTION_COLUMNS, str(predictions))

    pred_indicators = [r[0] for r in con.execute("SELECT DISTINCT indicator FROM preds ORDER BY 1").fetchall()]
    if not pred_indicators:
        raise InputError(f"{predictions} holds no predictions")
    unknown = sorted(set(pred_indicators) - set(build_indicators or []))
    if unknown:
        raise InputError(f"{predictions} predicts {', '.join(unknown)}, which the build {build_dir} lacks "
                         f"(it has {', '.join(build_indicators or []) or 'no indicators'})")
    dup = _duplicate_prediction(con)
    if dup:
        raise InputError(f"{predictions} holds several predictions for sample {dup[0]!r}, indicator {dup[1]!r}; "
                         "write one row per (sample_id, indicator)")
    # Only the check above reads rows in file order; every later query orders what it returns.
    con.execute("SET preserve_insertion_order = false")
    matched = scalar(con, "SELECT count(*) FROM (SELECT sample_id FROM preds SEMI JOIN samples USING (sample_id)"
                          " LIMIT 1)")
    if not matched:
        raise InputError(f"no prediction in {predictions} matches a sample of {', '.join(splits)} in {build_dir}; "
                         "were they made on another build or split?")
    return [i for i in build_indicators or [] if i in pred_indicators]


def build_indicator_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Indicator columns of the ``samples`` view (what :func:`open_inputs` kept of the build)."""
    base = {"sample_id", "split", "grp", "h3_cell", "lat", "lon"}
    return [r[0] for r in con.execute("DESCRIBE samples").fetchall() if r[0] not in base]


def _duplicate_prediction(con: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
    """A (sample_id, indicator) pair with several predictions, or None.

    `urp-eval predict` writes files sorted by (indicator, sample_id): one streaming pass then
    finds duplicates as equal neighbours and proves the order. Other files fall back to a
    hash aggregate, exact but several times slower on tens of millions of rows.
    """
    unsorted, dup = con.execute("""
        SELECT count(*) FILTER (WHERE (pi, ps) > (indicator, sample_id)),
               min((sample_id, indicator)) FILTER (WHERE (pi, ps) = (indicator, sample_id))
        FROM (SELECT sample_id, indicator, lag(sample_id) OVER () AS ps, lag(indicator) OVER () AS pi FROM preds)
        WHERE pi IS NOT NULL""").fetchone() or (0, None)
    if not unsorted:
        return None if dup is None else (dup[0], dup[1])
    row = con.execute("SELECT sample_id, indicator FROM preds GROUP BY ALL HAVING count(*) > 1 LIMIT 1").fetchone()
    return None if row is None else (row[0], row[1])


def joined(indicator: str, anchor: str | None = None) -> str:
    """SQL rows (split, grp, sample_id, h3_cell, lat, lon, truth, pred, score[, anchor]) of evaluated samples.

    NaN or infinite values count as missing, like nulls: a truth makes the sample not
    evaluated, a prediction or score makes it unanswered. So does a score outside the
    0.0–SCORE_MAX scale (a file from another writer, e.g. a model answering 1e300): it would
    otherwise dominate every mean, as ``parse_answer`` already rules for our own predictions. ``anchor`` adds the true value of
    another indicator (null when missing), for the bias score.
    """
    col = "s." + quote(indicator)
    extra = f", {_finite('s.' + quote(anchor))} AS anchor" if anchor else ""
    in_scale = f"p.score BETWEEN 0 AND {SCORE_MAX}"  # false for NaN and infinities too
    return (f"SELECT s.split, s.grp, s.sample_id, s.h3_cell, s.lat, s.lon, {col} AS truth, "
            f"CASE WHEN isfinite(p.prediction) AND (p.score IS NULL OR {in_scale}) THEN p.prediction END AS pred, "
            f"CASE WHEN {in_scale} THEN p.score END AS score{extra} FROM samples s JOIN "
            f"(SELECT sample_id, prediction, score FROM preds WHERE indicator = {literal(indicator)}) p "
            f"USING (sample_id) WHERE isfinite({col})")


def _finite(expr: str) -> str:
    # The contract writes nulls, but a NaN from another writer must not poison sums and sorts.
    return f"CASE WHEN isfinite({expr}) THEN {expr} END"


def samples_with_truth(con: duckdb.DuckDBPyConnection, indicators: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per split and indicator: samples with a (finite) true value, predicted or not."""
    counts = ", ".join(f"count(*) FILTER (WHERE isfinite({quote(i)}))" for i in indicators)
    return {split: dict(zip(indicators, rest)) for split, *rest in
            con.execute(f"SELECT split, {counts} FROM samples GROUP BY split").fetchall()}


# --------------------------------------------------------------------------- per-group metrics


def _ranks(col: str, table: str, partition: str = "split, grp") -> str:
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


def group_metrics(con: duckdb.DuckDBPyConnection, indicators: Sequence[str], min_group_size: int,
                  anchor: str | Mapping[str, str | None]) -> None:
    """Fill the tables ``metrics`` and ``bias_scores``, one indicator at a time (bounded memory).

    ``metrics``: one row per split × indicator × group, plus the whole split (``grp`` NULL):
    n, n_answered, the :data:`METRICS` and ``ranked`` (n >= ``min_group_size``; always true
    for the whole split). Spearman's ranks are taken over answered pairs within the group,
    or within the whole split for the split's row.

    ``bias_scores``: the Manvi et al. (2024) bias score per split × indicator, on the model's
    0–9.9 scores: ρ_Spearman(score, true ``anchor``) × mean absolute deviation of the scores ×
    answer rate. ρ and the deviation use evaluated samples with a score and a true anchor
    value. Positive: the model rates places higher where the anchor (e.g. population) is higher.
    ``anchor`` is one indicator for all, or one per indicator (None: no anchor, no bias score).
    """
    con.execute("DROP TABLE IF EXISTS metrics")
    con.execute("CREATE OR REPLACE TABLE bias_parts (split VARCHAR, indicator VARCHAR, rho DOUBLE, mad DOUBLE)")
    con.execute("CREATE OR REPLACE TEMP TABLE anchors (indicator VARCHAR, anchor VARCHAR)")
    # Integer ids for (split, group): every sort, hash and join below keys on them instead of
    # strings, about 3x faster at 10M samples; names come back in the small result tables.
    con.execute("""CREATE OR REPLACE TEMP TABLE part_ids AS
                   SELECT split, grp, dense_rank() OVER (ORDER BY split)::INTEGER AS sid,
                          row_number() OVER (ORDER BY split, grp)::INTEGER AS gid
                   FROM (SELECT DISTINCT split, grp FROM samples)""")
    split_names = "(SELECT DISTINCT split AS name, sid FROM part_ids) sn"
    for i, ind in enumerate(indicators):
        anc = anchor.get(ind) if isinstance(anchor, Mapping) else anchor
        con.execute("INSERT INTO anchors VALUES (?, ?)", [ind, anc])
        con.execute(f"CREATE OR REPLACE TEMP TABLE j AS SELECT p.sid AS split, p.gid AS grp, truth, pred, score, "
                    f"{'anchor' if anc else 'NULL::DOUBLE AS anchor'} FROM ({joined(ind, anchor=anc)}) x "
                    f"JOIN part_ids p ON p.split = x.split AND p.grp IS NOT DISTINCT FROM x.grp")
        grouped = "GROUPING(grp) = 1"
        con.execute(f"""
        {'INSERT INTO metrics' if i else 'CREATE TABLE metrics AS'}
        WITH a AS (SELECT split, grp, truth, pred FROM j WHERE pred IS NOT NULL),
        {_ranks('pred', 'a')}, {_ranks('truth', 'a')},
        r AS (
          SELECT j.split, j.grp, j.truth, j.pred, p.rg AS rgp, p.ro AS rop, t.rg AS rgt, t.ro AS rot FROM j
          LEFT JOIN pred_r p ON p.split = j.split AND p.grp = j.grp AND p.pred = j.pred
          LEFT JOIN truth_r t ON j.pred IS NOT NULL AND t.split = j.split AND t.grp = j.grp AND t.truth = j.truth
        ),
        g AS (
          SELECT split, grp, {grouped} AS whole, count(*) AS n, count(pred) AS n_answered,
                 corr(pred, truth) AS pearson,
                 CASE WHEN {grouped} THEN corr(rop, rot) ELSE corr(rgp, rgt) END AS spearman,
                 sum((pred - truth) ^ 2) AS sse,
                 var_pop(truth) FILTER (WHERE pred IS NOT NULL) * count(pred) AS sst,
                 sqrt(avg((pred - truth) ^ 2)) AS rmse, avg(abs(pred - truth)) AS mae,
                 avg(pred - truth) AS mean_error
          FROM r GROUP BY GROUPING SETS ((split, grp), (split))
        )
        SELECT sn.name AS split, {literal(ind)} AS indicator, CASE WHEN whole THEN NULL ELSE n.grp END AS grp, g.n,
               n_answered, n_answered / g.n AS answer_rate, {_nan_to_null('pearson')} AS pearson,
               {_nan_to_null('spearman')} AS spearman,
               CASE WHEN sst > 0 THEN 1 - sse / sst END AS r2, rmse, mae, mean_error,
               whole OR g.n >= {int(min_group_size)} AS ranked
        FROM g JOIN {split_names} ON sn.sid = g.split LEFT JOIN part_ids n ON n.gid = g.grp""")
        con.execute(f"""
        INSERT INTO bias_parts
        WITH b AS (SELECT split, score, anchor FROM j WHERE score IS NOT NULL AND anchor IS NOT NULL),
        {_ranks('score', 'b', 'split')}, {_ranks('anchor', 'b', 'split')},
        m AS (SELECT split, sum(c * score) / sum(c) AS mean FROM score_d GROUP BY split),
        mad AS (SELECT split, sum(c * abs(score - mean)) / sum(c) AS mad FROM score_d JOIN m USING (split)
                GROUP BY split),
        rho AS (SELECT split, corr(s.ro, a.ro) AS rho FROM b JOIN score_r s USING (split, score)
                JOIN anchor_r a USING (split, anchor) GROUP BY split)
        SELECT sn.name, {literal(ind)}, {_nan_to_null('rho')}, mad FROM rho JOIN mad USING (split)
        JOIN {split_names} ON sn.sid = rho.split""")
    con.execute("DROP TABLE IF EXISTS j")
    con.execute("DROP TABLE IF EXISTS part_ids")
    con.execute("""
        CREATE OR REPLACE TABLE bias_scores AS
        SELECT m.split, m.indicator, a.anchor, b.rho, b.mad, m.answer_rate,
               b.rho * b.mad * m.answer_rate AS bias_score
        FROM metrics m LEFT JOIN bias_parts b USING (split, indicator) LEFT JOIN anchors a USING (indicator)
        WHERE m.grp IS NULL""")


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


# --------------------------------------------------------------------------- bias anchors

SOCIO_ECONOMIC: tuple[str, ...] = ("gdp_per_capita", "gdp", "poverty", "income", "house_price", "night_light")
"""Preferred anchors of the bias score, in order: socio-economic indicators (night light as a proxy)."""


def varying_indicators(con: duckdb.DuckDBPyConnection, indicators: Sequence[str]) -> list[str]:
    """Indicators whose true values vary across the reported samples (a constant anchor has no ρ)."""
    if not indicators:
        return []
    counts = con.execute("SELECT " + ", ".join(f"count(DISTINCT {_finite(quote(i))})" for i in indicators)
                         + " FROM samples").fetchone() or ()
    return [i for i, c in zip(indicators, counts, strict=True) if c > 1]


def default_anchor(indicator: str, candidates: Sequence[str]) -> str | None:
    """The bias-score anchor for ``indicator``: never itself; a socio-economic indicator when one
    is among ``candidates`` (in :data:`SOCIO_ECONOMIC` order), else the first other candidate.

    Anchoring on the predicted indicator itself measures accuracy, not bias: a perfect model
    would score as maximally "biased".
    """
    others = [c for c in candidates if c != indicator]
    preferred = [c for c in SOCIO_ECONOMIC if c in others]
    return next(iter(preferred or others), None)


# --------------------------------------------------------------------------- the 0.0-9.9 score scale


def score_metrics(con: duckdb.DuckDBPyConnection, indicators: Sequence[str],
                  scales: Mapping[str, ScoreScale | None]) -> list[dict[str, Any]]:
    """Accuracy on the 0.0–9.9 score scale, per split × indicator (whole splits, answered pairs).

    The prediction is the ``score`` column (the model's own 0.0–9.9 answer); the truth is the
    true value mapped with the manifest's train-fitted scale (:meth:`ScoreScale.to_score`:
    linear between the unique quantiles, tied quantiles at their mean score), computed here in
    SQL with an ASOF join on the scale's breakpoints. Same definitions as :data:`METRICS`.
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
        {_ranks('pred', 't', 'split')}, {_ranks('truth', 't', 'split')},
        g AS (SELECT t.split, count(*) AS n_answered, corr(t.pred, t.truth) AS pearson, corr(p.ro, q.ro) AS spearman,
                     sum((t.pred - t.truth) ^ 2) AS sse, var_pop(t.truth) * count(*) AS sst,
                     sqrt(avg((t.pred - t.truth) ^ 2)) AS rmse, avg(abs(t.pred - t.truth)) AS mae,
                     avg(t.pred - t.truth) AS mean_error
              FROM t JOIN pred_r p USING (split, pred) JOIN truth_r q USING (split, truth) GROUP BY t.split)
        SELECT split, {literal(ind)} AS indicator, n_answered, {_nan_to_null('pearson')} AS pearson,
               {_nan_to_null('spearman')} AS spearman, CASE WHEN sst > 0 THEN 1 - sse / sst END AS r2,
               rmse, mae, mean_error
        FROM g ORDER BY split""")
        con.unregister("seg")
    return out


# --------------------------------------------------------------------------- spatial autocorrelation


NEIGHBOUR_CHUNK = 200_000
"""Cells per batch of Python ``h3.grid_ring`` calls: the only work outside DuckDB, bounded by this."""


def _neighbour_pairs(con: duckdb.DuckDBPyConnection) -> None:
    """Table ``nb(i, j)``: every cell of ``residuals`` and each of its H3 ring-1 neighbours (UBIGINT ids).

    Neighbours are computed in chunks of :data:`NEIGHBOUR_CHUNK` cells and inserted into
    DuckDB, so Python holds one chunk at a time; pairs whose neighbour is absent are dropped
    later by the joins (DuckDB spills to disk beyond ``memory_limit``).
    """
    import h3
    import h3.api.basic_int as h3i

    con.execute("CREATE OR REPLACE TEMP TABLE cells AS SELECT cell, row_number() OVER (ORDER BY cell) AS rid "
                "FROM (SELECT DISTINCT cell FROM residuals)")
    con.execute("CREATE OR REPLACE TEMP TABLE nb (i UBIGINT, j UBIGINT)")
    n = scalar(con, "SELECT count(*) FROM cells")
    for start in range(0, n, NEIGHBOUR_CHUNK):
        cells = con.execute("SELECT cell FROM cells WHERE rid > ? AND rid <= ?",
                            [start, start + NEIGHBOUR_CHUNK]).fetchnumpy()["cell"]
        try:
            rings = [h3i.grid_ring(c, 1) for c in cells.tolist()]
        except h3.H3BaseException as exc:
            raise InputError(f"an h3_cell of the build is not a valid H3 cell ({type(exc).__name__}); rebuild "
                             "the region") from exc
        counts = np.fromiter(map(len, rings), np.int64, len(rings))
        chunk = pa.table({"i": np.repeat(np.asarray(cells, np.uint64), counts),
                          "j": np.fromiter(itertools.chain.from_iterable(rings), np.uint64, int(counts.sum()))})
        con.register("nb_chunk", chunk)
        con.execute("INSERT INTO nb SELECT i, j FROM nb_chunk")
        con.unregister("nb_chunk")
    con.execute("DROP TABLE cells")


def morans_i(con: duckdb.DuckDBPyConnection, indicators: Sequence[str], permutations: int, seed: int,
             permutation_cells: int = 100_000) -> list[dict]:
    """Global Moran's I of residuals (prediction − truth) per split × indicator, as esda computes it.

    Units are H3 cells (the residual of a cell is the mean over its answered samples); weights
    are ring-1 neighbours present in the same split and indicator, row-standardised (a cell
    with no neighbour, an island, keeps a zero row, as in libpysal). I, its expectation
    −1/(n−1) and esda's normal approximation under randomisation (``z_rand``, two-sided
    ``p_rand``, from S0, S1, S2 and the kurtosis) come from two SQL passes over the neighbour
    pairs for all indicators at once, so memory stays within DuckDB's limit at any size. The
    pseudo p-value ``p_sim`` is esda's folded permutation test, (#{I_perm at least as
    extreme} + 1) / (permutations + 1), with the permutations drawn from
    ``numpy.random.RandomState(seed)`` — the same draws as esda after ``np.random.seed(seed)``;
    it is computed for up to ``permutation_cells`` cells (above, it is null: each permutation
    is a pass over every neighbour pair, and ``p_rand`` is then an accurate stand-in).
    """
    con.execute("CREATE OR REPLACE TEMP TABLE residuals (split VARCHAR, indicator VARCHAR, cell UBIGINT, "
                "z DOUBLE, idx BIGINT)")
    for ind in indicators:
        try:
            con.execute(f"""
                INSERT INTO residuals
                SELECT split, {literal(ind)}, ('0x' || h3_cell)::UBIGINT, r - avg(r) OVER (PARTITION BY split),
                       row_number() OVER (PARTITION BY split ORDER BY h3_cell) - 1
                FROM (SELECT split, h3_cell, avg(pred - truth) AS r FROM ({joined(ind)})
                      WHERE pred IS NOT NULL GROUP BY ALL)""")
        except duckdb.ConversionException as exc:
            raise InputError(f"an h3_cell of the build is not a hexadecimal H3 index ({one_line(exc)}); rebuild "
                             "the region") from exc
    _neighbour_pairs(con)
    k = range(len(indicators))
    # One row per (split, cell), one residual column per indicator (null: not answered there).
    con.execute("CREATE OR REPLACE TEMP TABLE rw AS SELECT split, cell, " + ", ".join(
        f"first(z) FILTER (WHERE indicator = {literal(ind)}) AS z{i}" for i, ind in enumerate(indicators))
        + " FROM residuals GROUP BY split, cell")
    # Pass 1: per cell and indicator, d = neighbours present, zsum = their residuals (w_ij = 1/d_i).
    con.execute("CREATE OR REPLACE TEMP TABLE deg AS SELECT a.split, a.cell, " + ", ".join(
        f"count(b.z{i}) FILTER (WHERE a.z{i} IS NOT NULL)::DOUBLE AS d{i}, "
        f"any_value(a.z{i}) * sum(b.z{i}) FILTER (WHERE a.z{i} IS NOT NULL) AS zz{i}" for i in k)
        + " FROM rw a JOIN nb ON a.cell = nb.i JOIN rw b ON b.split = a.split AND b.cell = nb.j GROUP BY ALL")
    # Pass 2: S1 = 1/2 sum_ij (w_ij + w_ji)^2 and the column sums of W for S2.
    pairs = ", ".join(
        f"sum((1 / da.d{i} + 1 / db.d{i}) ^ 2) FILTER (WHERE da.d{i} > 0 AND db.d{i} > 0) AS s1_{i}, "
        f"sum(1 / db.d{i}) FILTER (WHERE da.d{i} > 0 AND db.d{i} > 0) AS col{i}" for i in k)
    per_split = ", ".join(f"0.5 * sum(s1_{i}), sum((1 + col{i}) ^ 2)" for i in k)
    sums = {r[0]: r[1:] for r in con.execute(
        f"SELECT split, {per_split} FROM (SELECT da.split, da.cell, {pairs} FROM deg da JOIN nb ON da.cell = nb.i "
        f"JOIN deg db ON db.split = da.split AND db.cell = nb.j GROUP BY ALL) GROUP BY split").fetchall()}
    linked = {r[0]: r[1:] for r in con.execute("SELECT split, " + ", ".join(
        f"count(*) FILTER (WHERE d{i} > 0), sum(zz{i} / d{i}) FILTER (WHERE d{i} > 0)" for i in k)
        + " FROM deg GROUP BY split").fetchall()}
    moments = {r[0]: r[1:] for r in con.execute("SELECT split, " + ", ".join(
        f"count(z{i}), sum(z{i} ^ 2), sum(z{i} ^ 4)" for i in k) + " FROM rw GROUP BY split").fetchall()}
    out = []
    for split, ind in con.execute("SELECT split, indicator FROM metrics WHERE grp IS NULL ORDER BY 1, 2").fetchall():
        i = indicators.index(ind)
        n, m2, m4 = moments.get(split, (0, None, None) * len(indicators))[3 * i:3 * i + 3]
        s0, num = linked.get(split, (0, None) * len(indicators))[2 * i:2 * i + 2]
        s1, s2 = sums.get(split, (None, None) * len(indicators))[2 * i:2 * i + 2]
        row = {"split": split, "indicator": ind, "n_cells": int(n or 0), "n_linked": int(s0 or 0), "I": None,
               "expected_I": None, "z_rand": None, "p_rand": None, "p_sim": None, "permutations": permutations,
               "seed": seed}
        if n >= 3 and s0 and m2:
            row.update(_moran_moments(n, s0, s1, s2, num, m2, m4))
            if 0 < permutations and n <= permutation_cells:
                row["p_sim"] = _p_sim(con, split, ind, row["I"], n / s0 / m2, permutations, seed)
        out.append(row)
    for table in ("rw", "deg", "nb", "residuals"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return out


def _moran_moments(n: int, s0: float, s1: float, s2: float, num: float, m2: float, m4: float) -> dict[str, Any]:
    """I, E[I] and esda's randomisation z and two-sided p from the sums (m2 = Σz², m4 = Σz⁴)."""
    i = n / s0 * num / m2
    ei = -1.0 / (n - 1)
    k = (m4 / n) / (m2 / n) ** 2
    s02 = s0 * s0
    a = n * ((n * n - 3 * n + 3) * s1 - n * s2 + 3 * s02)
    b = k * ((n * n - n) * s1 - 2 * n * s2 + 6 * s02)
    var = (a - b) / ((n - 1) * (n - 2) * (n - 3) * s02) - ei * ei if n > 3 else math.nan
    z = (i - ei) / math.sqrt(var) if var > 0 else None  # undefined for n <= 3 or a degenerate variance
    return {"I": i, "expected_I": ei, "z_rand": z, "p_rand": math.erfc(abs(z) / math.sqrt(2)) if z is not None
            else None}


def _p_sim(con: duckdb.DuckDBPyConnection, split: str, ind: str, observed: float, factor: float,
           permutations: int, seed: int) -> float:
    """esda's folded permutation p-value for one split and indicator (tables ``residuals`` and ``nb``)."""
    params = [split, ind]
    z = np.asarray(con.execute("SELECT z FROM residuals WHERE split = ? AND indicator = ? ORDER BY idx",
                               params).fetchnumpy()["z"])
    w = con.execute("""
        WITH r AS (SELECT cell, idx FROM residuals WHERE split = ? AND indicator = ?),
        p AS (SELECT a.idx AS i, b.idx AS j FROM r a JOIN nb ON a.cell = nb.i JOIN r b ON b.cell = nb.j)
        SELECT i, j, 1.0 / count(*) OVER (PARTITION BY i) AS w FROM p""", params).fetchnumpy()
    sims = _permuted_i(z, np.asarray(w["i"]), np.asarray(w["j"]), np.asarray(w["w"]), factor, permutations, seed)
    larger = int((sims >= observed).sum())
    larger = min(larger, permutations - larger)
    return (larger + 1.0) / (permutations + 1.0)


def _permuted_i(z: np.ndarray, i: np.ndarray, j: np.ndarray, w: np.ndarray, factor: float,
                permutations: int, seed: int) -> np.ndarray:
    """Moran's I of ``permutations`` random permutations of ``z`` (vectorised in blocks of bounded size)."""
    rng = np.random.RandomState(seed)
    sims = np.empty(permutations)
    block = max(1, min(permutations, 5_000_000 // max(len(i), 1)))
    for start in range(0, permutations, block):
        zp = np.stack([rng.permutation(z) for _ in range(min(block, permutations - start))])
        sims[start:start + len(zp)] = factor * ((zp[:, i] * zp[:, j]) @ w)
    return sims
