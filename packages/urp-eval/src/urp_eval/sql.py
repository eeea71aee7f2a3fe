"""SQL text helpers shared by the report's DuckDB queries: identifiers, literals, file sources, NaN handling."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb


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


def nan_to_null(expr: str) -> str:
    # DuckDB's corr() returns NaN on constant input; scipy returns nan with a warning. Null says "undefined".
    return f"CASE WHEN isnan({expr}) THEN NULL ELSE {expr} END"


def finite(expr: str) -> str:
    # The contract writes nulls, but a NaN from another writer must not poison sums and sorts.
    return f"CASE WHEN isfinite({expr}) THEN {expr} END"

