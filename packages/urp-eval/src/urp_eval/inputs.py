"""The report's inputs as DuckDB views: the split files of a build (``samples``) and a predictions file (``preds``).

Every check of a malformed or mismatched input lives here, so the metric modules can assume
clean views: one row per (sample_id, indicator), columns of the contract's types, predictions
that match the build.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
from urp_data.contract import SCORE_MAX, SchemaError, indicator_columns, split_path
from urp_data.util.clikit import UsageError
from urp_data.util.fs import one_line

from urp_eval.sql import finite, literal, parquet_source, quote, scalar

logger = logging.getLogger(__name__)


class ReportInputError(SchemaError):
    """An input of the report is missing, malformed, or does not match the build (exit code 2)."""



REQUIRED_PREDICTION_COLUMNS = {"sample_id": "VARCHAR", "indicator": "VARCHAR", "prediction": "DOUBLE",
                               "score": "DOUBLE"}
REQUIRED_SAMPLE_COLUMNS = {"sample_id": "VARCHAR", "h3_cell": "VARCHAR", "lat": "DOUBLE", "lon": "DOUBLE",
                           "group": "VARCHAR", "country": "VARCHAR", "split": "VARCHAR"}


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
            raise ReportInputError(f"--group-by {group_by!r}: the H3 resolution must be an integer 0-15, e.g. h3:5")
        keep = ~(0xF << 52) & 0xFFFF_FFFF_FFFF_FFFF
        bits = (res << 52) | ((1 << (3 * (15 - res))) - 1)
        return (f"lower(printf('%x', (('0x' || h3_cell)::UBIGINT & {keep}::UBIGINT) "
                f"| {bits}::UBIGINT))")
    raise ReportInputError(f"--group-by {group_by!r}: choose group, country or h3:R (an H3 resolution)")


def _check_columns(con: duckdb.DuckDBPyConnection, view: str, required: dict[str, str], what: str) -> None:
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    for col, typ in required.items():
        if col not in types:
            raise ReportInputError(f"{what} has no column {col!r}; is it the right file?")
        if typ == "DOUBLE" and types[col] not in ("DOUBLE", "FLOAT"):
            raise ReportInputError(f"{what}: column {col!r} is {types[col]}, expected a float")
        if typ == "VARCHAR" and types[col] != "VARCHAR":
            raise ReportInputError(f"{what}: column {col!r} is {types[col]}, expected a string")


def _schema_of(path: Path) -> pa.Schema:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReportInputError(f"{path} is not a readable Parquet file ({one_line(exc)})") from exc


def open_inputs(con: duckdb.DuckDBPyConnection, build_dir: Path, splits: Sequence[str],
                predictions: Path, group_by: str) -> list[str]:
    """Create the views ``samples`` (with a ``grp`` column) and ``preds``; return the indicators to report.

    Raises :class:`ReportInputError` for a missing or malformed file, a split with no rows,
    predictions of an indicator the build lacks, duplicate predictions, or predictions that
    match no sample of the selected splits.
    """
    paths = [split_path(build_dir, s) for s in splits]
    for p in [*paths, predictions]:
        if not p.is_file():
            raise ReportInputError(f"{p} not found")
    build_indicators: list[str] | None = None
    for p in paths:
        cols = indicator_columns(_schema_of(p))
        if build_indicators is not None and cols != build_indicators:
            raise ReportInputError(f"{p} has indicators {cols}, other splits {build_indicators}; rebuild the region")
        build_indicators = cols
    _schema_of(predictions)
    con.execute(f"CREATE OR REPLACE VIEW raw_samples AS SELECT * FROM {parquet_source(paths)}")
    _check_columns(con, "raw_samples", REQUIRED_SAMPLE_COLUMNS, f"{paths[0]}")
    for p, s in zip(paths, splits):
        if scalar(con, f"SELECT count(*) FROM {parquet_source([p])}") == 0:
            raise ReportInputError(f"split {s!r} has no rows ({p}); choose another --split")
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
        raise ReportInputError(f"{predictions} holds no predictions")
    unknown = sorted(set(pred_indicators) - set(build_indicators or []))
    if unknown:
        raise ReportInputError(f"{predictions} predicts {', '.join(unknown)}, which the build {build_dir} lacks "
                         f"(it has {', '.join(build_indicators or []) or 'no indicators'})")
    dup = _duplicate_prediction(con)
    if dup:
        raise ReportInputError(f"{predictions} holds several predictions for sample {dup[0]!r}, indicator {dup[1]!r}; "
                         "write one row per (sample_id, indicator)")
    # Only the check above reads rows in file order; every later query orders what it returns.
    con.execute("SET preserve_insertion_order = false")
    matched = scalar(con, "SELECT count(*) FROM (SELECT sample_id FROM preds SEMI JOIN samples USING (sample_id)"
                          " LIMIT 1)")
    if not matched:
        raise ReportInputError(f"no prediction in {predictions} matches a sample of {', '.join(splits)} in {build_dir}; "
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
    extra = f", {finite('s.' + quote(anchor))} AS anchor" if anchor else ""
    in_scale = f"p.score BETWEEN 0 AND {SCORE_MAX}"  # false for NaN and infinities too
    return (f"SELECT s.split, s.grp, s.sample_id, s.h3_cell, s.lat, s.lon, {col} AS truth, "
            f"CASE WHEN isfinite(p.prediction) AND (p.score IS NULL OR {in_scale}) THEN p.prediction END AS pred, "
            f"CASE WHEN {in_scale} THEN p.score END AS score{extra} FROM samples s JOIN "
            f"(SELECT sample_id, prediction, score FROM preds WHERE indicator = {literal(indicator)}) p "
            f"USING (sample_id) WHERE isfinite({col})")



def samples_with_truth(con: duckdb.DuckDBPyConnection, indicators: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per split and indicator: samples with a (finite) true value, predicted or not."""
    counts = ", ".join(f"count(*) FILTER (WHERE isfinite({quote(i)}))" for i in indicators)
    return {split: dict(zip(indicators, rest)) for split, *rest in
            con.execute(f"SELECT split, {counts} FROM samples GROUP BY split").fetchall()}


