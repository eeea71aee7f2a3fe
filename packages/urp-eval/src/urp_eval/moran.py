"""Global Moran's I of residuals over H3 ring-1 neighbours, as esda computes it, in DuckDB."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from urp_data.util.fs import one_line

from urp_eval.inputs import ReportInputError, joined
from urp_eval.sql import literal, scalar

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
            raise ReportInputError(f"an h3_cell of the build is not a valid H3 cell ({type(exc).__name__}); rebuild "
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
    _residuals(con, indicators)
    _neighbour_pairs(con)
    sums, linked, moments = _weight_sums(con, indicators)
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


def _residuals(con: duckdb.DuckDBPyConnection, indicators: Sequence[str]) -> None:
    """Table ``residuals``: per split, indicator and H3 cell, the centred mean residual and the cell's index."""
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
            raise ReportInputError(f"an h3_cell of the build is not a hexadecimal H3 index ({one_line(exc)}); rebuild "
                             "the region") from exc


def _weight_sums(con: duckdb.DuckDBPyConnection, indicators: Sequence[str]) -> tuple[dict, dict, dict]:
    """Per split, for each indicator in order: (S1, S2), (S0, Σ_i z_i Σ_j w_ij z_j) and (n, Σz², Σz⁴).

    Two SQL passes over the neighbour pairs (table ``nb``) for all indicators at once.
    """
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
    return sums, linked, moments


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

