"""Which indicator anchors the Manvi et al. bias score of each indicator."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from urp_eval.sql import finite, quote

SOCIO_ECONOMIC: tuple[str, ...] = ("gdp_per_capita", "gdp", "poverty", "income", "house_price", "night_light")
"""Preferred anchors of the bias score, in order: socio-economic indicators (night light as a proxy)."""


def varying_indicators(con: duckdb.DuckDBPyConnection, indicators: Sequence[str]) -> list[str]:
    """Indicators whose true values vary across the reported samples (a constant anchor has no ρ)."""
    if not indicators:
        return []
    counts = con.execute("SELECT " + ", ".join(f"count(DISTINCT {finite(quote(i))})" for i in indicators)
                         + " FROM samples").fetchone() or ()
    return [i for i, c in zip(indicators, counts, strict=True) if c > 1]


def default_anchor(indicator: str, candidates: Sequence[str]) -> str | None:
    """The bias-score anchor for ``indicator``: never itself; a socio-economic indicator when one
    is among ``candidates`` (in :data:`SOCIO_ECONOMIC` order), else the first other candidate.

    Anchoring on the predicted indicator itself measures accuracy, not bias: a perfect model
    would score as maximally "biased".
    """
    others = [c for c in candidates if c != indicator]
    preferred = [c for c in SOCIO_ECONOMIC if c in others]
    return next(iter(preferred or others), None)


