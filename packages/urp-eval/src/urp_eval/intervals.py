"""Confidence intervals of the per-group and split figures, analytic, from each partition's counts and spreads.

Every metric is mapped to a scale θ on which its estimate is close to normal with a standard
error se; the interval is the back-transform of θ ± q·se (q the normal or Student t quantile at
the level). The same (θ, se) drive the group tests (:mod:`urp_eval.significance`) and the
within-group draws of the across-group bootstrap (:mod:`urp_eval.resample`), so the three agree.

No resampling of samples: at 10M samples a bootstrap of every group would cost hundreds of
passes, while these need one (the ``sd_*`` columns of ``metrics``). The tests check the
intervals against ``scipy.stats.bootstrap`` and their coverage on synthetic data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Method:
    """How one metric's interval is made: its name in the outputs and the back-transform from θ."""

    name: str
    inverse: Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _clip_r2(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 1.0)  # R² <= 1; it has no lower bound


def _sqrt0(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(x, 0.0))


def _nonneg(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


METHODS: dict[str, Method] = {
    "answer_rate": Method("Wilson score interval", _identity),
    "pearson": Method("Fisher z: tanh(atanh(r) ± z/√(n−3))", np.tanh),
    "spearman": Method("Fisher z with the Bonett–Wright variance (1 + ρ²/2)/(n−3)", np.tanh),
    "r2": Method("delta method: R² ± z·sd(influence)/√n, influence of each pair on 1 − MSE/Var(truth)",
                 _clip_r2),
    "rmse": Method("Student t interval of the mean squared error, square-rooted", _sqrt0),
    "mae": Method("Student t interval of the mean absolute error", _nonneg),
    "mean_error": Method("Student t interval of the mean signed error", _identity),
}
"""Per metric: the method named in ``summary.json`` and the README, and the map from θ back to the metric."""


def z_quantile(level: float) -> float:
    """The two-sided normal quantile of ``level`` (1.96 at 0.95)."""
    return float(stats.norm.ppf(0.5 + level / 2))


def theta_se(metric: str, c: Arrays, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(θ, se, q) of ``metric`` for each partition; NaN where the interval is undefined.

    ``c`` holds the columns of ``metrics`` as float arrays (NaN for null): the metric itself,
    ``n``, ``n_answered`` and the spreads ``sd_e``, ``sd_ae``, ``sd_ee``, ``sd_r2``.
    """
    n, na, v = c["n"], c["n_answered"], c[metric]
    z = z_quantile(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "answer_rate":  # Wilson: centre and half-width in closed form
            shrink = 1 + z * z / n
            centre = (v + z * z / (2 * n)) / shrink
            half = z / shrink * np.sqrt(v * (1 - v) / n + z * z / (4 * n * n))
            return centre, half / z, np.full_like(v, z)
        if metric in ("pearson", "spearman"):
            var = (1 + v * v / 2) if metric == "spearman" else np.ones_like(v)
            se = np.where(na > 3, np.sqrt(var / (na - 3)), np.nan)
            return np.arctanh(v), se, np.full_like(v, z)
        root = np.sqrt(na)
        if metric == "r2":
            return v, c["sd_r2"] / root, np.full_like(v, z)
        q = np.where(na > 1, stats.t.ppf(0.5 + level / 2, np.maximum(na - 1, 1)), np.nan)
        spread = {"rmse": "sd_ee", "mae": "sd_ae", "mean_error": "sd_e"}[metric]
        theta = v * v if metric == "rmse" else v
        return theta, c[spread] / root, q


def interval(metric: str, c: Arrays, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of each partition's interval (NaN where undefined: too few pairs, a constant side)."""
    theta, se, q = theta_se(metric, c, level)
    inv = METHODS[metric].inverse
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = inv(theta - q * se), inv(theta + q * se)
    bad = ~np.isfinite(se) | np.isnan(c[metric])
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
