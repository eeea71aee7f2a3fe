"""The score scale: raw indicator values to 0.0–SCORE_MAX scores and back, fitted on train."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from urp_data.contract.columns import SCORE_MAX
from urp_data.errors import SchemaError


@dataclass(frozen=True)
class ScoreScale:
    """Maps raw indicator values to 0.0–SCORE_MAX scores and back.

    Fitted on the train split only: ``quantiles`` are the train values at 0, 1, ..., 100
    percent. A value's score is its empirical percentile times SCORE_MAX / 100, so scores
    are uniform on train whatever the raw distribution (population and night light are
    heavily skewed). ``to_value`` inverts by linear interpolation between quantiles.
    """

    quantiles: tuple[float, ...]

    @classmethod
    def fit(cls, values: Sequence[float] | np.ndarray, n: int = 101) -> ScoreScale:
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            raise SchemaError("cannot fit a score scale on no finite values")
        return cls(tuple(float(q) for q in np.quantile(arr, np.linspace(0, 1, n))))

    def _grid(self) -> np.ndarray:
        return np.linspace(0.0, SCORE_MAX, len(self.quantiles))

    def breakpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, scores) of the piecewise-linear value -> score map: the unique quantiles, each
        with the mean score of its tied run (reports compute scores in SQL from these)."""
        uq, inv = np.unique(np.asarray(self.quantiles), return_inverse=True)
        return uq, np.bincount(inv, self._grid()) / np.bincount(inv)

    def to_score(self, value: float | np.ndarray) -> Any:
        """Score(s) in [0, SCORE_MAX]; a value equal to a run of tied quantiles gets their mean score."""
        uq, grid = self.breakpoints()
        v = np.asarray(value, dtype=np.float64)
        out = np.where(np.isfinite(v), np.interp(v, uq, grid), np.nan)
        return float(out) if out.ndim == 0 else out

    def to_value(self, score: float | np.ndarray) -> Any:
        """Raw value(s) for score(s); scores outside [0, SCORE_MAX] are clipped."""
        s = np.clip(np.asarray(score, dtype=np.float64), 0.0, SCORE_MAX)
        out = np.interp(s, self._grid(), np.asarray(self.quantiles))
        out = np.where(np.isfinite(np.asarray(score, dtype=np.float64)), out, np.nan)
        return float(out) if out.ndim == 0 else out
