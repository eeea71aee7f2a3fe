"""Which groups are significantly worse than the rest, corrected for the number of groups (Holm).

A group is compared with the other groups of the same split and indicator pooled by inverse
variance (fixed effect) on the metric's θ scale (:func:`urp_eval.intervals.theta_se`: Fisher z
for correlations, the MSE for RMSE, ...): z = (θ_rest − θ_g) / √(se_g² + se_rest²), signed so
that positive means worse, one-sided p = 1 − Φ(z). |θ| is compared for the mean error (best at
zero). This is a Wald test on the intervals' own standard errors: it needs no pass over the
samples, so it costs nothing at 10M samples, where a permutation test of every group would cost
a pass per permutation. Ranked groups (n >= ``--min-group-size``) are tested; Holm's step-down
correction controls the family-wise error over them, per split × indicator × metric.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

CORRECTION = "Holm (family-wise, per split × indicator × metric, over the ranked groups)"


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
    """One-sided p-value that each ``tested`` group is worse than the pooled others (NaN where untestable).

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
        gap = {"higher": rest - theta, "lower": theta - rest, "zero": np.abs(theta) - np.abs(rest)}[direction]
        p = stats.norm.sf(gap / spread)
    return np.where(ok & tested & (rest_w > 0), p, np.nan)
