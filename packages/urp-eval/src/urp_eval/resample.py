"""Intervals of the across-group figures, by a seeded bootstrap that resamples groups as units.

* Worst, best, gap and worst decile: a two-stage bootstrap over the ranked groups of a split ×
  indicator. Each replicate draws the groups with replacement (the places are a sample of
  places) and each drawn group's figure from its own sampling distribution (normal on the θ
  scale of :mod:`urp_eval.intervals`), so a small noisy group widens the interval of the worst.
* Seen − unseen drop and the bias score: the split-level figures are recomputed from per-group
  sums (``group_sums``, ``bias_group_sums``) with the groups of each split drawn with
  replacement; no pass over the samples. Spearman's ρ keeps the split-level ranks of the full
  sample (a replicate does not re-rank), and the bias score's mean absolute deviation keeps
  the full sample's mean.

Intervals are percentile intervals of ``replicates`` draws from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from urp_eval.intervals import METHODS, Arrays

FIGURES = ("worst", "best", "gap", "worst_decile")


def percentile_interval(x: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """The central ``level`` percentile interval of the finite replicates (None when there are none)."""
    x = x[np.isfinite(x)]
    if not len(x):
        return None, None
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def badness(direction: str, value: Any) -> Any:
    """A number that grows as ``value`` gets worse (``direction``: higher, lower or zero is good); floats or arrays."""
    return {"higher": lambda: -value, "lower": lambda: value, "zero": lambda: abs(value)}[direction]()


def across_group_figures(values: np.ndarray, direction: str) -> dict[str, np.ndarray]:
    """Worst, best, gap and worst decile over the last axis, as :func:`urp_eval.metrics.bias_summary` defines them."""
    bad = badness(direction, values)
    rows = np.arange(values.shape[0])[:, None]
    worst = values[rows, np.argmax(bad, axis=-1)[:, None]][:, 0]
    best = values[rows, np.argmin(bad, axis=-1)[:, None]][:, 0]
    decile = np.quantile(bad, 0.9, axis=-1)
    return {"worst": worst, "best": best, "gap": values.max(axis=-1) - values.min(axis=-1),
            "worst_decile": -decile if direction == "higher" else decile}


def across_groups(metric: str, direction: str, value: np.ndarray, theta: np.ndarray, se: np.ndarray,
                  rng: np.random.Generator, replicates: int, level: float) -> dict[str, tuple[float | None, float | None]]:
    """Intervals of worst, best, gap and worst decile of one split × indicator × metric (ranked groups)."""
    if not len(value):
        return {f: (None, None) for f in FIGURES}
    idx = rng.integers(0, len(value), (replicates, len(value)))
    noise = rng.standard_normal(idx.shape) * np.nan_to_num(se[idx])
    if metric == "answer_rate":  # θ is the Wilson centre; draw around the rate itself
        draws = np.clip(value[idx] + noise, 0.0, 1.0)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            draws = np.where(np.isfinite(theta[idx]), METHODS[metric].inverse(theta[idx] + noise), value[idx])
    figures = across_group_figures(draws, direction)
    return {f: percentile_interval(figures[f], level) for f in FIGURES}


def group_weights(rng: np.random.Generator, groups: int, replicates: int) -> np.ndarray:
    """(replicates, groups) counts of each group in a draw of ``groups`` groups with replacement."""
    idx = rng.integers(0, groups, (replicates, groups))
    weights = np.zeros((replicates, groups))
    np.add.at(weights, (np.repeat(np.arange(replicates), groups), idx.ravel()), 1.0)
    return weights


def _corr(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray,
          sxy: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))


def pooled_metrics(t: Arrays) -> Arrays:
    """Split-level metrics from summed group sums (``urp_eval.metrics.SUM_COLUMNS`` plus n, n_answered)."""
    na = t["n_answered"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "answer_rate": na / t["n"],
            "pearson": _corr(na, t["s_y"], t["s_p"], t["s_yy"], t["s_pp"], t["s_yp"]),
            "spearman": _corr(na, t["s_rt"], t["s_rp"], t["s_rtt"], t["s_rpp"], t["s_rpt"]),
            "r2": 1 - t["sse"] / (t["s_yy"] - t["s_y"] ** 2 / na),
            "rmse": np.sqrt(t["sse"] / na), "mae": t["s_ae"] / na, "mean_error": (t["s_p"] - t["s_y"]) / na,
        }


def resampled_sums(sums: Arrays, rng: np.random.Generator, replicates: int) -> Arrays:
    """Each sum of ``sums`` (one value per group) totalled over ``replicates`` draws of the groups."""
    groups = len(next(iter(sums.values())))
    w = group_weights(rng, groups, replicates)
    return {k: w @ np.nan_to_num(v) for k, v in sums.items()}


def bias_score_draws(sums: Arrays, rng: np.random.Generator, replicates: int) -> np.ndarray:
    """Bias scores ρ × MAD × answer rate of ``replicates`` group draws (``BIAS_SUM_COLUMNS`` plus n, n_answered)."""
    t = resampled_sums(sums, rng, replicates)
    rho = _corr(t["c"], t["s_s"], t["s_a"], t["s_ss"], t["s_aa"], t["s_sa"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return rho * (t["s_dev"] / t["c"]) * (t["n_answered"] / t["n"])


def drop_value(direction: str, seen: Any, unseen: Any) -> Any:
    """How much worse a metric is on unseen than on seen groups (positive: worse on unseen); floats or arrays."""
    return badness(direction, unseen) - badness(direction, seen)
