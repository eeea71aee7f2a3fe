"""Fixtures for urp-train's unit tests: a small contract-conforming build and the tiny offline VLM."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from urp_data.contract import SPLITS, IndicatorInfo, Manifest, ScoreScale, arrow_schema, split_path

INDICATORS = ("population", "night_light")
GROUPS = ("g-north", "g-centre", "g-south")
CHIP = 64  # pixels; every chip of a build has the same size


def _jpeg(rng: np.random.Generator) -> bytes:
    from PIL import Image

    arr = rng.integers(0, 255, size=(CHIP, CHIP, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _square_wkb(lon: float, lat: float, half: float = 0.005) -> bytes:
    import struct

    ring = [(lon - half, lat - half), (lon + half, lat - half), (lon + half, lat + half),
            (lon - half, lat + half), (lon - half, lat - half)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def write_build(out: Path, per_group: int = 4, seed: int = 0) -> Path:
    """A build folder with 3 groups × ``per_group`` train samples (and 2 per other split).

    ``population`` is null for every third sample (no source covers it), ``night_light`` is
    never null; the manifest's score scales are fitted on train, as `urp-data build` does.
    """
    rng = np.random.default_rng(seed)
    build = out / "tiny"
    build.mkdir(parents=True)
    tables = {}
    for split in SPLITS:
        n = per_group if split == "train" else 2
        rows = []
        for gi, group in enumerate(GROUPS if split != "test_unseen" else ("g-unseen",)):
            for k in range(n):
                lat, lon = -8.0 - gi * 0.1 - k * 0.01, -34.85 + k * 0.01
                i = len(rows)
                rows.append({
                    "sample_id": f"{split}-{group}-{k}", "h3_cell": f"88{gi}{k}{split[:2]}", "lat": lat, "lon": lon,
                    "region": "tiny", "group": group, "country": "BRA", "split": split,
                    "image": {"bytes": _jpeg(rng), "path": None},
                    "address": f"Rua {k}, Bairro {group}, Olinda, Pernambuco, Brazil",
                    "nearby_places": [{"name": "Recife", "kind": "city", "distance_km": 6.2 + k,
                                       "direction": "South"}],
                    "population": None if i % 3 == 2 else float(100 * (gi + 1) + 10 * k),
                    "night_light": float(rng.uniform(0, 63)),
                    "geometry": _square_wkb(lon, lat),
                })
        tables[split] = pa.Table.from_pylist(rows, schema=arrow_schema(INDICATORS))
        pq.write_table(tables[split], split_path(build, split))
    train = tables["train"]
    indicators = {
        name: IndicatorInfo(name=name, description=name.replace("_", " "), unit="people" if name == "population"
                            else "DN", source="synthetic test values", resolution="sample",
                            scale=list(ScoreScale.fit([v for v in train[name].to_pylist() if v is not None]).quantiles))
        for name in INDICATORS
    }
    manifest = Manifest(region="tiny", resolution=8, indicators=indicators,
                        counts={s: tables[s].num_rows for s in SPLITS})
    (build / "manifest.json").write_text(manifest.to_json())
    return build


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_build(tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from urp_train.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")
