"""A small real build (real H3 cells, the contract's Arrow schema, a manifest) and random predictions.

Values are drawn so that every awkward case the metrics must survive appears: ties and
zeros in the truth and the predictions, null truths, unanswered samples, groups of one and
two samples, and a group whose truth is constant.
"""

from __future__ import annotations

import io
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from urp_data.contract import SPLITS, IndicatorInfo, Manifest, ScoreScale, arrow_schema, split_path
from urp_eval.predict import PREDICTION_SCHEMA

INDICATORS = ("population", "night_light")
CENTRE = (-8.01, -34.86)  # lat, lon (Olinda, Brazil)


def _jpeg(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_build(out: Path, seed: int = 0) -> Path:
    """A build folder with ~1,300 resolution-8 cells grouped by their resolution-6 parent."""
    rng = np.random.default_rng(seed)
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(*CENTRE, 8), 20))
    groups = np.array([h3.cell_to_parent(c, 6) for c in cells])
    uniq = sorted(set(groups))
    unseen = set(uniq[:: 4])
    split = np.where(np.isin(groups, list(unseen)), "test_unseen",
                     rng.choice(["train", "train", "val", "test_seen"], len(cells)))
    # Tiny groups: move one and two cells into their own groups on both test splits.
    for k, (i, name) in enumerate([(0, "tiny-1"), (1, "tiny-2"), (2, "tiny-2")]):
        groups[np.flatnonzero(split == "test_unseen")[i]] = name
        groups[np.flatnonzero(split == "test_seen")[k]] = name + "s"
    n = len(cells)
    pop = rng.poisson(3, n).astype(float) * 100.0  # ties and zeros
    pop[rng.random(n) < 0.05] = np.nan
    light = np.round(rng.gamma(2.0, 10.0, n), 1)
    light[groups == "tiny-2"] = 7.0  # constant truth in a group
    latlon = np.array([h3.cell_to_latlng(c) for c in cells])
    image = _jpeg(rng)
    out.mkdir(parents=True, exist_ok=True)
    schema = arrow_schema(INDICATORS)
    values = {"population": pop, "night_light": light}
    for s in SPLITS:
        m = split == s
        cols = {
            "sample_id": [f"s{i:05d}" for i in np.flatnonzero(m)],
            "h3_cell": [c for c, keep in zip(cells, m) if keep],
            "lat": latlon[m, 0], "lon": latlon[m, 1], "region": ["test"] * m.sum(), "group": groups[m],
            "country": np.where(latlon[m, 1] < -34.86, "BRA", "PRY"), "split": [s] * m.sum(),
            "image": [{"bytes": image, "path": None}] * m.sum(), "address": ["Olinda, Pernambuco, Brazil"] * m.sum(),
            "nearby_places": [[{"name": "Olinda", "kind": "city", "distance_km": 1.5, "direction": "North"}]] * m.sum(),
            **{c: [None] * m.sum() for c in ("scene_id", "scene_datetime", "scene_cloud_cover")},  # no STAC scenes
            **{k: pa.array(v[m], mask=np.isnan(v[m])) for k, v in values.items()},  # null, never NaN
            "geometry": [None] * m.sum(),
        }
        pq.write_table(pa.table(cols, schema=schema), split_path(out, s))
    train = split == "train"
    manifest = Manifest(
        region="test", resolution=8,
        indicators={k: IndicatorInfo(k, k, "", "synthetic", "cell", scale=list(ScoreScale.fit(v[train]).quantiles))
                    for k, v in values.items()},
    )
    (out / "manifest.json").write_text(manifest.to_json())
    return out


def write_predictions(build: Path, path: Path, seed: int = 1, answer_rate: float = 0.9,
                      splits: tuple[str, ...] = ("test_seen", "test_unseen")) -> Path:
    """Noisy predictions with ties and zeros and some unanswered samples, for every sample with a truth."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in splits:
        t = pq.read_table(split_path(build, s))
        for ind in INDICATORS:
            truth = t[ind].to_numpy(zero_copy_only=False)
            for sid, y in zip(t["sample_id"].to_pylist(), truth):
                if np.isnan(y):
                    continue
                pred = None if rng.random() > answer_rate else float(np.round(max(y + rng.normal(0, 50), 0), -1))
                rows.append({"sample_id": sid, "indicator": ind, "split": s, "score": None if pred is None else
                             float(np.round(rng.uniform(0, 9.9), 1)), "prediction": pred, "completions": [],
                             "n_parsed": int(pred is not None), "model": "random", "backend": "test"})
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), path)
    return path


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_build(tmp_path_factory.mktemp("build") / "test")


@pytest.fixture(scope="session")
def predictions(build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_predictions(build, tmp_path_factory.mktemp("preds") / "preds.parquet")


@pytest.fixture(scope="session")
def make_predictions():
    """:func:`write_predictions`, for tests that need predictions of their own."""
    return write_predictions


@pytest.fixture(scope="session")
def make_build():
    """:func:`write_build`, for tests that need a build of their own."""
    return write_build
