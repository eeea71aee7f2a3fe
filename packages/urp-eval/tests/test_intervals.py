"""Intervals, group tests and the group bootstrap: against scipy.stats.bootstrap, by coverage, by invariants.

Synthetic samples go straight into the report's DuckDB views (``samples``, ``preds``), so the
SQL that computes the spreads is exercised, not a copy of it.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from urp_eval.compare import paired_bootstrap, sample_metrics
from urp_eval.inputs import connect
from urp_eval.metrics import METRICS, bias_summary, group_metrics
from urp_eval.resample import across_group_figures
from urp_eval.significance import holm, permutation_worse, worse_than_rest
from urp_eval.sql import records
from urp_eval.uncertainty import GroupTest, across_group_intervals, annotate_groups

LEVEL = 0.95


def load(groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> duckdb.DuckDBPyConnection:
    """A connection whose ``samples`` and ``preds`` hold (truth, prediction) per group (NaN: unanswered)."""
    ids, grp, truth, pred = [], [], [], []
    for g, (y, p) in groups.items():
        ids += [f"{g}-{i}" for i in range(len(y))]
        grp += [g] * len(y)
        truth.append(y)
        pred.append(p)
    y, p = np.concatenate(truth), np.concatenate(pred)
    con = connect("512MB")
    con.register("samples_t", pa.table({
        "sample_id": ids, "split": ["test_unseen"] * len(ids), "grp": grp, "h3_cell": ["8828308281fffff"] * len(ids),
        "lat": np.zeros(len(ids)), "lon": np.zeros(len(ids)), "ind": y, "anchor": y + 1.0}))
    con.register("preds_t", pa.table({
        "sample_id": ids, "indicator": ["ind"] * len(ids), "prediction": pa.array(p, mask=np.isnan(p)),
        "score": pa.array(np.clip(p, 0, 9.9), mask=np.isnan(p))}))
    con.execute("CREATE VIEW samples AS SELECT * FROM samples_t")
    con.execute("CREATE VIEW preds AS SELECT * FROM preds_t")
    return con


WALD = GroupTest(permutations=0, max_samples=0, seed=0)
PERMUTATION = GroupTest(permutations=999, max_samples=20_000, seed=0)


def report_tables(groups: dict[str, tuple[np.ndarray, np.ndarray]], min_group_size: int = 30,
                  test: GroupTest = WALD) -> tuple[duckdb.DuckDBPyConnection, dict]:
    con = load(groups)
    group_metrics(con, ["ind"], min_group_size, "anchor")
    scales = annotate_groups(con, LEVEL, test)
    return con, scales


def rows(con: duckdb.DuckDBPyConnection) -> dict[str | None, dict]:
    return {r["grp"]: r for r in records(con, "SELECT * FROM metrics")}


def test_intervals_agree_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(3)
    y = rng.gamma(2.0, 3.0, 200)
    p = y + rng.normal(0.5, 2.0, 200)
    p[rng.random(200) < 0.1] = np.nan
    con, _ = report_tables({"a": (y, p), "b": (y[:50], p[:50])})
    got = rows(con)["a"]
    ok = ~np.isnan(p)

    def stat(metric: str):
        if metric == "answer_rate":
            return lambda answered: answered.mean()
        return lambda yy, pp: sample_metrics(yy, pp)[metric]

    for metric in METRICS:
        data = (ok.astype(float),) if metric == "answer_rate" else (y[ok], p[ok])
        ref = stats.bootstrap(data, stat(metric), paired=True, vectorized=False, n_resamples=2000,
                              confidence_level=LEVEL, method="percentile", random_state=0).confidence_interval
        width = ref.high - ref.low
        assert got[f"{metric}_lo"] == pytest.approx(ref.low, abs=0.2 * width), metric
        assert got[f"{metric}_hi"] == pytest.approx(ref.high, abs=0.2 * width), metric
        assert got[f"{metric}_lo"] <= got[metric] <= got[f"{metric}_hi"], metric


def test_coverage_of_known_correlation_and_errors_at_group_size_50() -> None:
    """400 seeded draws of 50 pairs, one group each: the 95 % intervals cover the truth 93-97 % of the time."""
    rng = np.random.default_rng(2026)
    rho, shift, spread = 0.6, 0.3, 1.0
    groups = {}
    for k in range(400):
        y, noise = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], 50).T
        groups[f"g{k:03d}"] = (y, noise)
    truth = {"pearson": rho, "spearman": 6 / math.pi * math.asin(rho / 2)}
    con, _ = report_tables(groups)
    per = [r for g, r in rows(con).items() if g is not None]
    for metric, value in truth.items():
        covered = np.mean([r[f"{metric}_lo"] <= value <= r[f"{metric}_hi"] for r in per])
        assert 0.93 <= covered <= 0.97, (metric, covered)
    # Errors: prediction = truth + N(shift, spread), truth ~ N(0, 1): known mean error, MAE, RMSE and R².
    groups = {g: (y, y + rng.normal(shift, spread, 50)) for g, (y, _) in groups.items()}
    con, _ = report_tables(groups)
    per = [r for g, r in rows(con).items() if g is not None]
    z = shift / spread
    mae = spread * math.sqrt(2 / math.pi) * math.exp(-z * z / 2) + shift * (1 - 2 * stats.norm.cdf(-z))
    known = {"mean_error": shift, "mae": mae, "rmse": math.hypot(shift, spread), "r2": 1 - shift ** 2 - spread ** 2}
    for metric, value in known.items():
        covered = np.mean([r[f"{metric}_lo"] <= value <= r[f"{metric}_hi"] for r in per])
        assert 0.93 <= covered <= 0.97, (metric, covered)


@pytest.mark.parametrize("test", [WALD, PERMUTATION], ids=["wald", "permutation"])
def test_a_worse_group_is_flagged_and_equal_groups_are_not(test: GroupTest) -> None:
    rng = np.random.default_rng(5)
    same = {f"g{k}": (y := rng.normal(0, 1, 80), y + rng.normal(0, 0.5, 80)) for k in range(8)}
    con, _ = report_tables(same, test=test)
    assert not any(r[f"{m}_worse"] for g, r in rows(con).items() if g is not None for m in METRICS)
    worse = dict(same, bad=(y := rng.normal(0, 1, 80), y + rng.normal(0, 2.0, 80)),
                 tiny=(y := rng.normal(0, 1, 10), y + rng.normal(0, 5.0, 10)))
    con, _ = report_tables(worse, test=test)
    r = rows(con)
    method = "permutation" if test.permutations else "wald"
    assert {row["group_test"] for g, row in r.items() if g is not None} == {method}
    assert not any(r[g][f"{m}_worse"] for g in same for m in METRICS)  # the null groups stay unflagged
    assert r["bad"]["mae_worse"] and r["bad"]["spearman_worse"] and r["bad"]["rmse_worse"]
    assert r["tiny"]["mae_p_worse"] is None and r["tiny"]["mae_worse"] is False  # below min group size: untested
    assert r[None]["mae_worse"] is None  # the whole split is no group
    summary = {(b["metric"]): b for b in bias_summary(con)}
    assert summary["mae"]["worst_group"] == "bad"  # "tiny" is worse still, but never named


PERMUTATION_CASES = {  # metric: (truth, prediction) of the group, then of the rest (NaN: unanswered)
    "mae": ((y := np.arange(12.0), y + np.r_[1.5, -2, 1, 1, -1.5, 2, 1, -1, 2, 0.5, -2, 1]),
            (z := np.arange(15.0) * 0.7, z + np.r_[1.0, -1, 0.5, 2, -0.5, 1, -1, 0, 1.5, -2, 0.5, 1, -1, 2, 0])),
    "spearman": ((y, y[::-1] * 0.3 + np.r_[0.0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 11]), (z, z * 1.1 + 0.3)),
    "answer_rate": ((y, np.where(np.arange(12) % 3 == 0, np.nan, y)),
                    (z, np.where(np.arange(15) % 7 == 0, np.nan, z))),
}


@pytest.mark.parametrize("metric", list(PERMUTATION_CASES))
def test_permutation_test_agrees_with_scipy(metric: str) -> None:
    """Group 0 against the rest: p equals scipy.stats.permutation_test's within Monte-Carlo error."""
    (y0, p0), (y1, p1) = PERMUTATION_CASES[metric]
    codes = np.r_[np.zeros(len(y0), int), np.ones(len(y1), int)]
    truth, pred = np.r_[y0, y1], np.r_[p0, p1]
    draws = 4999
    mine = permutation_worse(codes, truth, pred, {m.name: m.direction for m in METRICS.values()}, draws,
                             np.random.default_rng(0))[metric][0]
    answered = ~np.isnan(pred)
    pool = np.arange(len(truth)) if metric == "answer_rate" else np.flatnonzero(answered)
    group = pool[codes[pool] == 0]

    def value(idx: np.ndarray) -> float:
        if metric == "answer_rate":
            return answered[idx].mean()
        if metric == "mae":
            return np.abs(pred[idx] - truth[idx]).mean()
        ranks_p, ranks_t = stats.rankdata(pred[pool]), stats.rankdata(truth[pool])  # the split's ranks
        at = np.searchsorted(pool, idx)
        return stats.pearsonr(ranks_p[at], ranks_t[at])[0]

    sign = -1 if METRICS[metric].direction == "higher" else 1
    ref = stats.permutation_test((group, pool[codes[pool] == 1]), lambda a, b: sign * (value(a) - value(b)),
                                 permutation_type="independent", vectorized=False, n_resamples=draws,
                                 alternative="greater", random_state=1).pvalue
    assert 0.01 < ref < 0.99  # a case where Monte-Carlo error, not a bound, decides
    assert abs(mine - ref) < 4 * math.sqrt(ref * (1 - ref) / draws) + 1e-9, (mine, ref)


def test_permutation_test_runs_below_the_size_threshold_and_wald_above() -> None:
    rng = np.random.default_rng(2)
    groups = {f"g{k}": (y := rng.normal(0, 1, 40), y + rng.normal(0, 1, 40)) for k in range(3)}
    small = GroupTest(permutations=99, max_samples=120, seed=0)
    assert {r["group_test"] for g, r in rows(report_tables(groups, test=small)[0]).items() if g} == {"permutation"}
    large = GroupTest(permutations=99, max_samples=119, seed=0)
    r = rows(report_tables(groups, test=large)[0])
    assert {row["group_test"] for g, row in r.items() if g} == {"wald"}
    assert r["g0"]["mae_p_worse"] == pytest.approx(worse_than_rest(
        *(np.array([x[g] for g in ("g0", "g1", "g2")]) for x in _theta_se("mae", r)), "lower", np.ones(3, bool))[0])


def _theta_se(metric: str, r: dict) -> tuple[dict, dict]:
    """θ and se of the mae (θ = MAE, se from its interval's half-width over the t quantile)."""
    theta = {g: row[metric] for g, row in r.items() if g}
    q = stats.t.ppf(0.5 + LEVEL / 2, 39)
    return theta, {g: (row[f"{metric}_hi"] - row[metric]) / q for g, row in r.items() if g}


def test_holm_matches_its_definition() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.005])
    adj = holm(p)
    assert np.isnan(adj[1])
    np.testing.assert_allclose(adj[[4, 0, 3, 2]], [0.02, 0.03, 0.06, 0.06])


def test_across_group_intervals_bracket_the_sql_figures() -> None:
    rng = np.random.default_rng(9)
    groups = {f"g{k}": (y := rng.normal(0, 1, n), y + rng.normal(0, s, n))
              for k, (n, s) in enumerate([(40, 0.3), (60, 0.5), (35, 1.0), (80, 0.4), (50, 0.8)])}
    con, scales = report_tables(groups)
    figures = bias_summary(con)
    values = {r["grp"]: r for r in records(con, "SELECT * FROM metrics WHERE grp IS NOT NULL ORDER BY grp")}
    for row in figures:  # the numpy definitions equal the SQL ones
        v = np.array([[values[g][row["metric"]] for g in sorted(values)]])
        got = across_group_figures(v, METRICS[row["metric"]].direction)
        for f in ("worst", "best", "gap", "worst_decile"):
            assert got[f][0] == pytest.approx(row[f]), (row["metric"], f)
    across_group_intervals(con, figures, scales, LEVEL, seed=0, replicates=500)
    for row in figures:
        for f in ("worst", "gap"):
            assert row[f"{f}_lo"] < row[f"{f}_hi"], (row["metric"], f)
        assert row["worst_lo"] <= row["worst"] + 1e-9 or row["metric"] == "mean_error"


def test_paired_bootstrap_agrees_with_scipy() -> None:
    rng = np.random.default_rng(11)
    y = rng.normal(0, 1, 120)
    a, b = y + rng.normal(0, 0.5, 120), y + rng.normal(0, 0.6, 120)
    got = {r["metric"]: r for r in paired_bootstrap(y, a, b, ["mae", "spearman"], 2000, LEVEL,
                                                    np.random.default_rng(0))}
    for metric in ("mae", "spearman"):
        ref = stats.bootstrap((y, a, b), lambda yy, aa, bb, m=metric: sample_metrics(yy, bb)[m]
                              - sample_metrics(yy, aa)[m], paired=True, vectorized=False, n_resamples=2000,
                              method="percentile", random_state=0).confidence_interval
        width = ref.high - ref.low
        assert got[metric]["diff_lo"] == pytest.approx(ref.low, abs=0.15 * width)
        assert got[metric]["diff_hi"] == pytest.approx(ref.high, abs=0.15 * width)


def test_sample_metrics_match_scipy_and_leave_constant_predictions_undefined() -> None:
    rng = np.random.default_rng(4)
    y = np.round(rng.gamma(2.0, 2.0, 60), 0)  # ties
    p = np.round(y + rng.normal(0, 1, 60), 0)
    p[:6] = np.nan
    got, ok = sample_metrics(y, p), ~np.isnan(p)
    assert got["pearson"] == pytest.approx(stats.pearsonr(p[ok], y[ok]).statistic)
    assert got["spearman"] == pytest.approx(stats.spearmanr(p[ok], y[ok]).statistic)
    assert got["answer_rate"] == pytest.approx(0.9)
    flat = sample_metrics(y, np.where(ok, 0.1 + 0.2, np.nan))  # 0.30000000000000004: centres to rounding noise
    assert np.isnan(flat["pearson"]) and np.isnan(flat["spearman"]) and np.isfinite(flat["mae"])
