"""Intervals, tests and corrected flags attached to the report's tables and summary rows.

Reads the small tables :func:`urp_eval.metrics.group_metrics` leaves (one row per split ×
indicator × group) into numpy, so every step here is independent of the number of samples:
analytic intervals (:mod:`urp_eval.intervals`), group tests (:mod:`urp_eval.significance`) and
the group bootstrap of the across-group figures (:mod:`urp_eval.resample`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from urp_eval import resample
from urp_eval.inputs import joined
from urp_eval.intervals import METHODS, Arrays, interval, theta_direction, theta_se
from urp_eval.metrics import BIAS_SUM_COLUMNS, METRICS, SUM_COLUMNS
from urp_eval.significance import CORRECTION, holm, permutation_worse, worse_than_rest
from urp_eval.sql import literal

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


@dataclass(frozen=True)
class GroupTest:
    """How the groups are tested against the rest (:mod:`urp_eval.significance`)."""

    permutations: int  # draws of the permutation test; 0: the Wald test everywhere
    max_samples: int  # permutation test up to this many evaluated samples per split × indicator
    seed: int

    def method(self, n: float) -> str:
        """``permutation`` or ``wald``, for a split × indicator of ``n`` evaluated samples."""
        return "permutation" if 0 < self.permutations and n <= self.max_samples else "wald"


def _permutation_p(con: duckdb.DuckDBPyConnection, split: str, ind: str, names: list[str],
                   test: GroupTest) -> dict[str, np.ndarray]:
    """Permutation p-values of the groups ``names`` (in that order) of one split × indicator, per metric."""
    rows = con.sql(f"SELECT grp, truth, pred FROM ({joined(ind)}) WHERE split = {literal(split)}").to_arrow_table()
    index = {name: i for i, name in enumerate(names)}
    codes = np.asarray([index[g] for g in rows["grp"].to_pylist()])
    y, p = (np.asarray(rows[c].to_numpy(zero_copy_only=False), dtype=float) for c in ("truth", "pred"))
    rng = np.random.default_rng([test.seed, 3])
    return permutation_worse(codes, y, p, {m.name: m.direction for m in METRICS.values()}, test.permutations, rng)


def annotate_groups(con: duckdb.DuckDBPyConnection, level: float,
                    test: GroupTest) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Replace the spreads of table ``metrics`` by ``<metric>_lo``/``_hi``, ``_p_worse``, ``_worse`` and ``group_test``.

    ``_p_worse`` is the one-sided p-value that a ranked group is worse than the other groups,
    by the test ``group_test`` names (``permutation`` or ``wald``, per split × indicator);
    ``_worse`` is true when it stays below 1 − ``level`` after Holm's correction. Returns the
    (θ, se) of every metric and row for the group bootstrap.
    """
    t = con.sql("SELECT * FROM metrics ORDER BY split, indicator, grp NULLS FIRST").to_arrow_table()
    c = floats(t, ["n", "n_answered", *METRICS, *SPREADS])
    ranked = np.asarray(t["ranked"].to_numpy(zero_copy_only=False), dtype=bool)
    names = t["grp"].to_pylist()
    out = t.drop_columns(list(SPREADS))
    methods: list[str | None] = [None] * len(names)
    p = {m: np.full(len(names), np.nan) for m in METRICS}
    scales = {}
    for m in METRICS:
        theta, se, _ = theta_se(m, c, level)
        scales[m] = (theta, se)
    split_n = {(s, i): n for s, i, g, n in zip(t["split"].to_pylist(), t["indicator"].to_pylist(), names, c["n"])
               if g is None}
    for (split, ind), rows in _families(t).items():
        method = test.method(split_n[(split, ind)])
        if method == "permutation":
            perm = _permutation_p(con, split, ind, [names[i] for i in rows], test)
        for m, (theta, se) in scales.items():
            p[m][rows] = np.where(ranked[rows], perm[m], np.nan) if method == "permutation" else worse_than_rest(
                theta[rows], se[rows], theta_direction(m), ranked[rows])
        for i in rows:
            methods[i] = method
    for m in METRICS:
        lo, hi = interval(m, c, level)
        flag = np.zeros(len(lo), dtype=bool)
        for rows in _families(t).values():
            flag[rows] = holm(p[m][rows]) < 1 - level
        for suffix, values in (("lo", lo), ("hi", hi), ("p_worse", p[m])):
            out = out.append_column(f"{m}_{suffix}", pa.array(values, pa.float64(), mask=np.isnan(values)))
        worse = [bool(f) if g is not None else None for f, g in zip(flag, names)]
        out = out.append_column(f"{m}_worse", pa.array(worse, pa.bool_()))
    out = out.append_column("group_test", pa.array(methods, pa.string()))
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
    """Add ``worst_lo`` … ``worst_decile_hi``, ``significantly_worse`` (group names) and ``group_test`` to bias-summary rows."""
    t = con.sql("SELECT split, indicator, grp, ranked, group_test, " + ", ".join(METRICS) + ", "
                + ", ".join(f"{m}_worse" for m in METRICS)
                + " FROM metrics ORDER BY split, indicator, grp NULLS FIRST").to_arrow_table()
    values = floats(t, list(METRICS))
    ranked = np.asarray(t["ranked"].to_numpy(zero_copy_only=False), dtype=bool)
    families = _families(t)
    names = np.asarray(t["grp"].to_pylist(), dtype=object)
    tests = t["group_test"].to_pylist()
    rng = np.random.default_rng(seed)
    for row in rows:
        m = row["metric"]
        fam = families[(row["split"], row["indicator"])]
        worse = np.asarray(t[f"{m}_worse"].to_numpy(zero_copy_only=False), dtype=object)[fam]
        row["significantly_worse"] = sorted(str(g) for g, w in zip(names[fam], worse) if w)
        row["group_test"] = tests[fam[0]]
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


def methods(level: float, seed: int, replicates: int, test: GroupTest) -> dict[str, Any]:
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
        "group_test": {
            "permutation": (f"one-sided permutation test of each ranked group against the other groups of its split "
                            f"and indicator ({test.permutations} permutations of the group labels, numpy default_rng "
                            f"seed [{test.seed}, 3]; statistic: the metric of the group minus that of the rest, "
                            "Spearman on the split's ranks; answer rate over evaluated samples, the others over "
                            "answered pairs)"),
            "wald": ("one-sided Wald test of each ranked group against the inverse-variance pooled other groups of "
                     "its split and indicator, on the interval's theta scale"),
            "which": (f"permutation up to {test.max_samples} evaluated samples per split and indicator (and "
                      "--permutations above 0), wald above; each row's group_test names the one used"),
        },
        "correction": CORRECTION,
        "alpha": round(1 - level, 10),
    }
