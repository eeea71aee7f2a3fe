"""``urp-eval predict --engine ray`` writes the single-process path's predictions (knn and the tiny model)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from urp_eval.predict import PredictConfig, predict

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _rows(path: Path):
    return pq.read_table(path).replace_schema_metadata(None)


def test_knn_on_ray_equals_local(local_ray, demo_build: Path, tmp_path: Path) -> None:
    cfg = {"data": str(demo_build), "backend": "knn", "split": "all"}
    local = predict(PredictConfig(**cfg, out=str(tmp_path / "local.parquet")))
    on_ray = predict(PredictConfig(**cfg, out=str(tmp_path / "ray.parquet"), engine="ray"))
    assert _rows(on_ray).num_rows > 100 and _rows(on_ray).equals(_rows(local))


def test_tiny_model_on_ray_equals_local(local_ray, demo_build: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = {"data": str(demo_build), "model": str(tiny_model_dir), "split": "unseen", "max_samples": 6,
           "batch_size": 2, "max_new_tokens": 8}
    local = predict(PredictConfig(**cfg, out=str(tmp_path / "local.parquet")))
    on_ray = predict(PredictConfig(**cfg, out=str(tmp_path / "ray.parquet"), engine="ray"))
    rows = _rows(on_ray)
    assert rows.num_rows > 4 and rows.equals(_rows(local))  # more prompts than one replica's batch
    assert all(len(c) == 1 for c in rows["completions"].to_pylist())


def test_engine_flags_are_validated(demo_build: Path) -> None:
    with pytest.raises(ValueError, match="drop --engine ray"):
        PredictConfig(data=str(demo_build), backend="mean", engine="ray")
    with pytest.raises(ValueError, match="needs --engine ray"):
        PredictConfig(data=str(demo_build), backend="knn", ray_address="127.0.0.1:6379")
