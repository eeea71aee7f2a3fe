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
    decreasing: bool = False  # the metric falls as θ rises (R²: θ = log(1 − R²))


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _r2_from_log(x: np.ndarray) -> np.ndarray:
    return 1 - np.exp(x)


def _rmse_from_log(x: np.ndarray) -> np.ndarray:
    return np.exp(x / 2)


def _nonneg(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


METHODS: dict[str, Method] = {
    "answer_rate": Method("Wilson score interval", _identity),
    "pearson": Method("Fisher z: tanh(atanh(r) ± z/√(n−3))", np.tanh),
    "spearman": Method("Fisher z with the Bonett–Wright variance (1 + ρ²/2)/(n−3)", np.tanh),
    "r2": Method("delta method on log(1 − R²) = log(MSE/Var(truth)) with the Student t quantile, back-transformed",
                 _r2_from_log, decreasing=True),
    "rmse": Method("delta method on log(MSE) with the Student t quantile, back-transformed", _rmse_from_log),
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
        q = np.where(na > 1, stats.t.ppf(0.5 + level / 2, np.maximum(na - 1, 1)), np.nan)
        if metric == "r2":  # sd_r2: spread of the influence on log(MSE/Var(truth))
            return np.log(1 - v), c["sd_r2"] / root, q
        if metric == "rmse":
            return np.log(v * v), c["sd_ee"] / root / (v * v), q
        spread = {"mae": "sd_ae", "mean_error": "sd_e"}[metric]
        return v, c[spread] / root, q


def interval(metric: str, c: Arrays, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of each partition's interval (NaN where undefined: too few pairs, a constant side)."""
    theta, se, q = theta_se(metric, c, level)
    inv = METHODS[metric].inverse
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = inv(theta - q * se), inv(theta + q * se)
    if METHODS[metric].decreasing:
        lo, hi = hi, lo
    bad = ~np.isfinite(se) | ~np.isfinite(theta) | np.isnan(c[metric])
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def theta_direction(metric: str) -> str:
    """Which way is good on ``metric``'s θ scale (``higher``, ``lower`` or ``zero``)."""
    from urp_eval.metrics import METRICS

    direction = METRICS[metric].direction
    if METHODS[metric].decreasing:
        return {"higher": "lower", "lower": "higher"}.get(direction, direction)
    return direction
