"""Intervals, tests and corrected flags attached to the report's tables and summary rows.

Reads the small tables :func:`urp_eval.metrics.group_metrics` leaves (one row per split ×
indicator × group) into numpy, so every step here is independent of the number of samples:
analytic intervals (:mod:`urp_eval.intervals`), group tests (:mod:`urp_eval.significance`) and
the group bootstrap of the across-group figures (:mod:`urp_eval.resample`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from urp_eval import resample
from urp_eval.intervals import METHODS, Arrays, interval, theta_direction, theta_se
from urp_eval.metrics import BIAS_SUM_COLUMNS, METRICS, SUM_COLUMNS
from urp_eval.significance import CORRECTION, holm, worse_than_rest

SPREADS = ("sd_e", "sd_ae", "sd_ee", "sd_r2")


def floats(table: pa.Table, names: Sequence[str]) -> Arrays:
    """Columns of ``table`` as float arrays, null as NaN."""
    return {n: np.asarray(table[n].to_numpy(zero_copy_only=False), dtype=float) for n in names}


def _families(table: pa.Table) -> dict[tuple[str, str], np.ndarray]:
    """Row indices of the groups (not the split rows) of each split × indicator."""
    keys = list(zip(table["split"].to_pylist(), table["indicator"].to_pylist(), table["grp"].to_pylist()))
    out: dict[tuple[str, str], list[int]] = {}
    for i, (s, ind, g) in enumerate(keys):
        if g is not None:
            out.setdefault((s, ind), []).append(i)
    return {k: np.asarray(v) for k, v in out.items()}


def annotate_groups(con: duckdb.DuckDBPyConnection, level: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Replace the spreads of table ``metrics`` by ``<metric>_lo``/``_hi``, ``_p_worse`` and ``_worse``.

    ``_p_worse`` is the one-sided p-value that a ranked group is worse than the other groups;
    ``_worse`` is true when it stays below 1 − ``level`` after Holm's correction. Returns the
    (θ, se) of every metric and row for the group bootstrap.
    """
    t = con.sql("SELECT * FROM metrics ORDER BY split, indicator, grp NULLS FIRST").to_arrow_table()
    c = floats(t, ["n", "n_answered", *METRICS, *SPREADS])
    ranked = np.asarray(t["ranked"].to_numpy(zero_copy_only=False), dtype=bool)
    families = _families(t)
    out = t.drop_columns(list(SPREADS))
    scales = {}
    for m in METRICS.values():
        lo, hi = interval(m.name, c, level)
        theta, se, _ = theta_se(m.name, c, level)
        scales[m.name] = (theta, se)
        p, flag = np.full(len(lo), np.nan), np.zeros(len(lo), dtype=bool)
        for rows in families.values():
            p[rows] = worse_than_rest(theta[rows], se[rows], theta_direction(m.name), ranked[rows])
            flag[rows] = holm(p[rows]) < 1 - level
        for suffix, values in (("lo", lo), ("hi", hi), ("p_worse", p)):
            out = out.append_column(f"{m.name}_{suffix}", pa.array(values, pa.float64(), mask=np.isnan(values)))
        worse = [bool(f) if g is not None else None for f, g in zip(flag, t["grp"].to_pylist())]
        out = out.append_column(f"{m.name}_worse", pa.array(worse, pa.bool_()))
    con.register("annotated", out)
    con.execute("CREATE OR REPLACE TABLE metrics AS SELECT * FROM annotated")
    con.unregister("annotated")
    return scales


def score_intervals(rows: list[dict[str, Any]], level: float) -> list[dict[str, Any]]:
    """The score-scale rows with ``<metric>_lo``/``_hi`` instead of their spreads (answered pairs only)."""
    if not rows:
        return rows
    t = pa.Table.from_pylist(rows)
    c = floats(t, ["n_answered", *SPREADS, *[m for m in METRICS if m != "answer_rate"]])
    c["n"] = c["n_answered"]
    for m in METRICS:
        if m == "answer_rate":
            continue
        lo, hi = interval(m, c, level)
        for row, a, b in zip(rows, lo, hi):
            row[f"{m}_lo"], row[f"{m}_hi"] = _num(a), _num(b)
    return [{k: v for k, v in r.items() if k not in SPREADS} for r in rows]


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def across_group_intervals(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]],
                           scales: dict[str, tuple[np.ndarray, np.ndarray]], level: float, seed: int,
                           replicates: int) -> list[dict[str, Any]]:
    """Add ``worst_lo`` … ``worst_decile_hi`` and ``significantly_worse`` (group names) to bias-summary rows."""
    t = con.sql("SELECT split, indicator, grp, ranked, " + ", ".join(METRICS) + ", "
                + ", ".join(f"{m}_worse" for m in METRICS)
                + " FROM metrics ORDER BY split, indicator, grp NULLS FIRST").to_arrow_table()
    values = floats(t, list(METRICS))
    ranked = np.asarray(t["ranked"].to_numpy(zero_copy_only=False), dtype=bool)
    families = _families(t)
    names = np.asarray(t["grp"].to_pylist(), dtype=object)
    rng = np.random.default_rng(seed)
    for row in rows:
        m = row["metric"]
        fam = families[(row["split"], row["indicator"])]
        worse = np.asarray(t[f"{m}_worse"].to_numpy(zero_copy_only=False), dtype=object)[fam]
        row["significantly_worse"] = sorted(str(g) for g, w in zip(names[fam], worse) if w)
        sel = fam[ranked[fam] & ~np.isnan(values[m][fam])]
        theta, se = scales[m]
        intervals = resample.across_groups(m, METRICS[m].direction, values[m][sel], theta[sel], se[sel], rng,
                                           replicates, level)
        for figure, (lo, hi) in intervals.items():
            row[f"{figure}_lo"], row[f"{figure}_hi"] = lo, hi
    return rows


def _sums(con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str]) -> dict[tuple[str, str], Arrays]:
    """Per split × indicator, the per-group sums of ``table`` as arrays (groups in name order)."""
    t = con.sql(f"SELECT * FROM {table} ORDER BY split, indicator, grp").to_arrow_table()
    c = floats(t, columns)
    keys = list(zip(t["split"].to_pylist(), t["indicator"].to_pylist()))
    out: dict[tuple[str, str], Arrays] = {}
    for key in dict.fromkeys(keys):
        sel = np.asarray([k == key for k in keys])
        out[key] = {n: v[sel] for n, v in c.items()}
    return out


def drop_intervals(con: duckdb.DuckDBPyConnection, drop: dict[str, dict[str, Any]], level: float, seed: int,
                   replicates: int) -> None:
    """Add ``<metric>_lo``/``_hi`` to each indicator's seen − unseen drop (groups of each split resampled)."""
    sums = _sums(con, "group_sums", ["n", "n_answered", *SUM_COLUMNS])
    rng = np.random.default_rng([seed, 1])
    for ind, row in drop.items():
        seen = resample.pooled_metrics(resample.resampled_sums(sums[("test_seen", ind)], rng, replicates))
        unseen = resample.pooled_metrics(resample.resampled_sums(sums[("test_unseen", ind)], rng, replicates))
        for m in METRICS.values():
            draws = resample.drop_value(m.direction, seen[m.name], unseen[m.name])
            row[f"{m.name}_lo"], row[f"{m.name}_hi"] = resample.percentile_interval(draws, level)


def bias_score_intervals(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]], level: float, seed: int,
                         replicates: int) -> list[dict[str, Any]]:
    """Add ``bias_score_lo``/``_hi`` to the bias-score rows (groups resampled as units)."""
    con.execute("""CREATE OR REPLACE TEMP TABLE bias_units AS
                   SELECT g.split, g.indicator, g.grp, g.n, g.n_answered, b.* EXCLUDE (split, indicator, grp)
                   FROM group_sums g LEFT JOIN bias_group_sums b USING (split, indicator, grp)""")
    sums = _sums(con, "bias_units", ["n", "n_answered", *BIAS_SUM_COLUMNS])
    rng = np.random.default_rng([seed, 2])
    for row in rows:
        key = (row["split"], row["indicator"])
        lo, hi = (None, None)
        if row.get("bias_score") is not None and key in sums:
            lo, hi = resample.percentile_interval(resample.bias_score_draws(sums[key], rng, replicates), level)
        row["bias_score_lo"], row["bias_score_hi"] = lo, hi
    return rows


def methods(level: float, seed: int, replicates: int) -> dict[str, Any]:
    """What ``summary.json`` says about how each interval and test was made."""
    return {
        "level": level,
        "per_metric": {m: METHODS[m].name for m in METRICS},
        "per_metric_units": "samples (answered pairs; evaluated samples for the answer rate), analytic",
        "across_groups": (f"percentile interval of {replicates} replicates (numpy default_rng seed {seed}): ranked "
                          "groups resampled as units, each drawn group's figure drawn from its own interval's "
                          "normal distribution (theta scale)"),
        "drop_and_bias_score": (f"percentile interval of {replicates} replicates: the groups of each split "
                                "resampled as units, split figures recomputed from per-group sums (Spearman on "
                                "the full sample's ranks)"),
        "group_test": ("one-sided Wald test of each ranked group against the inverse-variance pooled other groups "
                       "of its split and indicator, on the interval's theta scale"),
        "correction": CORRECTION,
        "alpha": round(1 - level, 10),
    }
