"""The manifest of a finished build: score scales fitted on train, provenance, counts and group names."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from urp_data.build.plan import Plan
from urp_data.build.sources import Sources
from urp_data.config.build import BuildConfig
from urp_data.config.regions import RegionConfig
from urp_data.contract import Manifest, ScoreScale
from urp_data.sources.places.gazetteer import group_labels


def build_manifest(cfg: BuildConfig, region: RegionConfig, src: Sources, plan: Plan, final: Path,
                   counts: dict[str, Any], inputs: list[dict[str, Any]], versions: dict[str, str],
                   t0: float) -> Manifest:
    """The manifest of the build whose split files are in ``final``; ``t0`` is when it started (time.time())."""
    counts["buffer_dropped"] = len(plan.buffer_cells)
    counts["sampled"] = len(plan.cells) + len(plan.buffer_cells)  # = rows written + buffer_dropped + skipped
    scales = fit_scales(final / "train.parquet", [i.name for i in src.indicators])
    infos = {}
    for ind in src.indicators:
        info = ind.info
        info.scale = list(scales[ind.name].quantiles) if ind.name in scales else None
        infos[ind.name] = info
    return Manifest(
        region=region.name,
        resolution=region.sampling.resolution,
        indicators=infos,
        config={"build": {k: v for k, v in vars(cfg).items()}, "region": region.to_dict(),
                "unseen_groups": sorted(plan.unseen_groups), "buffer_cells": sorted(plan.buffer_cells),
                "splits": plan.splits},
        inputs=inputs,
        counts=counts,
        versions=versions,
        build_time=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=[f"built in {time.time() - t0:.1f} s"],
        group_labels=group_labels(plan.group, plan.lat, plan.lon, plan.country, region.splits.group_by,
                                  src.gazetteer),
    )


def fit_scales(train: Path, indicators: list[str]) -> dict[str, ScoreScale]:
    """Score scales fitted on the train split only (never on test data)."""
    if not indicators:
        return {}
    table = pq.read_table(train, columns=indicators)
    out = {}
    for name in indicators:
        vals = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        if np.isfinite(vals).any():
            out[name] = ScoreScale.fit(vals)
    return out
