"""Which groups are significantly worse than the rest, corrected for the number of groups (Holm).

Each ranked group (n >= ``--min-group-size``) of a split × indicator is tested, one-sided, against
the other groups of the same split and indicator, on each metric; Holm's step-down correction
controls the family-wise error over the ranked groups, per split × indicator × metric. Two tests:

* :func:`permutation_worse` (the default up to ``--group-test-samples`` evaluated samples): the
  group labels of the split's samples are permuted (seeded, ``--permutations`` draws) and the
  statistic badness(group) − badness(rest) recomputed; p = (1 + #{draws at least as extreme}) /
  (1 + draws), as ``scipy.stats.permutation_test`` gives it. Answer rates permute the labels of
  the evaluated samples, the other metrics those of the answered pairs (so each group keeps its
  number of answers). Spearman's statistic is the correlation of the split-level ranks within
  the group and within the rest (the reported ρ re-ranks within the group; a permutation test
  is valid for any statistic, and this one needs no re-ranking per draw).
* :func:`worse_than_rest` (above that size): a Wald test on the intervals' own standard errors
  (:func:`urp_eval.intervals.theta_se`), against the other groups pooled by inverse variance.
  It needs no pass over the samples, so it costs nothing at 10M samples, where each permutation
  would cost a pass.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from urp_eval.intervals import Arrays
from urp_eval.resample import badness, pooled_metrics

CORRECTION = "Holm (family-wise, per split × indicator × metric, over the ranked groups)"
BLOCK_VALUES = 2_000_000  # permuted values held at once per sum (16 MB): bounds memory at any size (ours)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN and does not count towards the family)."""
    out = np.full_like(p, np.nan, dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]) if m else np.empty(0)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def worse_than_rest(theta: np.ndarray, se: np.ndarray, direction: str, tested: np.ndarray) -> np.ndarray:
    """One-sided Wald p-value that each ``tested`` group is worse than the pooled others (NaN where untestable).

    ``theta`` and ``se`` are the groups of one split × indicator on one metric's θ scale;
    groups with an undefined or zero se neither are tested nor join the pool.
    """
    ok = np.isfinite(theta) & np.isfinite(se) & (se > 0)
    w = np.where(ok, 1.0 / np.where(ok, se, 1.0) ** 2, 0.0)
    wt = np.where(ok, w * np.where(ok, theta, 0.0), 0.0)
    rest_w = w.sum() - w
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = (wt.sum() - wt) / rest_w
        spread = np.sqrt(se ** 2 + 1.0 / rest_w)
        p = stats.norm.sf((badness(direction, theta) - badness(direction, rest)) / spread)
    return np.where(ok & tested & (rest_w > 0), p, np.nan)


def _permuted_sums(columns: Arrays, codes: np.ndarray, permutations: int,
                   rng: np.random.Generator) -> tuple[Arrays, np.ndarray]:
    """Per-group sums of ``columns`` for the observed labels (row 0) and ``permutations`` permuted ones.

    ``codes`` (0 … G−1, every group present) labels the samples. The samples are put in group
    order once; a draw is a permutation of which sample fills each group's slots, so the group
    sizes stay fixed and each sum is one ``np.add.reduceat`` per draw. Returns (sums, group sizes).
    """
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    n = len(codes)
    out = {k: np.empty((permutations + 1, len(sizes))) for k in columns}
    block = max(1, BLOCK_VALUES // max(n, 1))
    for start in range(0, permutations + 1, block):
        rows = min(block, permutations + 1 - start)
        draws = rng.permuted(np.tile(order, (rows, 1)), axis=1)
        if start == 0:
            draws[0] = order  # row 0: the observed grouping
        for k, v in columns.items():
            out[k][start:start + rows] = np.add.reduceat(v[draws], starts, axis=1)
    return out, sizes


def _p_values(stat: np.ndarray) -> np.ndarray:
    """One-sided p of row 0 of ``stat`` (draws × groups) among all rows; NaN draws count as extreme."""
    observed = stat[0]
    gamma = np.abs(observed) * np.finfo(float).eps * 100  # scipy.stats.permutation_test's tolerance
    with np.errstate(invalid="ignore"):
        extreme = ~(stat[1:] < observed - gamma)
    return np.where(np.isfinite(observed), (1.0 + extreme.sum(axis=0)) / len(stat), np.nan)


def permutation_worse(codes: np.ndarray, truth: np.ndarray, pred: np.ndarray, directions: dict[str, str],
                      permutations: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One-sided permutation p-value, per metric and group, that the group is worse than the rest of its split.

    ``codes`` (0 … G−1) labels the evaluated samples of one split × indicator, ``truth`` their
    true values and ``pred`` their predictions (NaN: unanswered); ``directions`` maps each metric
    of :data:`urp_eval.metrics.METRICS` to its direction. A metric undefined for a group (e.g. a
    constant truth) gives NaN.
    """
    groups = int(codes.max()) + 1
    answered = ~np.isnan(pred)
    out: dict[str, np.ndarray] = {}
    sums, sizes = _permuted_sums({"a": answered.astype(float)}, codes, permutations, rng)
    with np.errstate(invalid="ignore", divide="ignore"):  # one group: its rest is empty, p is NaN
        rate = sums["a"] / sizes
        rest = (sums["a"].sum(axis=1, keepdims=True) - sums["a"]) / (sizes.sum() - sizes)
        out["answer_rate"] = _p_values(badness(directions["answer_rate"], rate)
                                       - badness(directions["answer_rate"], rest))
    present = np.unique(codes[answered])
    accuracy = {m: np.full(groups, np.nan) for m in directions if m != "answer_rate"}
    if len(present) > 1:
        y, p = truth[answered], pred[answered]
        rp, rt = stats.rankdata(p), stats.rankdata(y)
        e = p - y
        cols = {"s_y": y, "s_p": p, "s_yy": y * y, "s_pp": p * p, "s_yp": y * p, "sse": e * e, "s_ae": np.abs(e),
                "s_rp": rp, "s_rt": rt, "s_rpp": rp * rp, "s_rtt": rt * rt, "s_rpt": rp * rt}
        local = np.searchsorted(present, codes[answered])
        g, sizes = _permuted_sums(cols, local, permutations, rng)
        g["n_answered"] = g["n"] = np.broadcast_to(sizes.astype(float), g["s_y"].shape)
        total = {k: v.sum(axis=1, keepdims=True) for k, v in g.items()}
        mine, others = pooled_metrics(g), pooled_metrics({k: total[k] - g[k] for k in g})
        for m, p_m in accuracy.items():
            with np.errstate(invalid="ignore"):
                p_m[present] = _p_values(badness(directions[m], mine[m]) - badness(directions[m], others[m]))
    return out | accuracy
