"""A task no code knows, by configuration only: build, train, predict and report an unknown indicator.

The indicator (name, description, unit, source) exists only in a region YAML written here; no
Python names it. The test runs the three CLIs as a user would, on a tiny build and one SFT step.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NAME = "canopy_signal"  # in no KNOWN_INDICATORS table, in no code
DESCRIPTION = "near-infrared brightness of the ground (a vegetation proxy)"
UNIT = "Landsat DN"


def _run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=600, cwd=cwd,
                         env={**os.environ, "URP_DEBUG": "1", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, (cmd, out.stderr[-3000:])
    return out


@pytest.mark.slow
def test_an_indicator_no_code_knows_is_built_trained_predicted_and_reported(tiny_model_dir, tmp_path):
    from urp_data.contract import KNOWN_INDICATORS, load_manifest
    from urp_train.dataset import load_examples

    assert NAME not in KNOWN_INDICATORS
    region = {
        "name": "newtask",
        "area": {"bbox": [-34.90, -8.03, -34.86, -7.99]},  # lon/lat: part of Olinda
        "sampling": {"resolution": 8, "seed": 0},
        "chip": {"size_px": 64, "footprint_m": 1000},
        "splits": {"group_by": "h3:7", "unseen_fraction": 0.3, "buffer_km": 1.5},
        "countries": "gazetteer",
        "imagery": [{"type": "raster", "path": str(REPO / "data/demo/olinda_l7_etm.tif"), "bands": [3, 2, 1]}],
        "indicators": [{"name": NAME, "type": "raster", "path": str(REPO / "data/demo/olinda_l7_etm.tif"),
                        "band": 4, "description": DESCRIPTION, "unit": UNIT,
                        "licence": "Landsat-7 ETM+, US public domain"}],
    }
    yaml_path = tmp_path / "newtask.yaml"
    yaml_path.write_text(yaml.safe_dump(region))
    _run("urp-data", "build", "--region", str(yaml_path), "--out", str(tmp_path / "build"), cwd=tmp_path)
    build = tmp_path / "build" / "newtask"
    info = load_manifest(build).indicators[NAME]
    assert (info.description, info.unit) == (DESCRIPTION, UNIT) and info.scale
    prompt = load_examples(build, "train")[0]["prompt"][-1]["content"][-1]["text"]
    assert f"{DESCRIPTION} (measured in {UNIT})" in prompt

    run = tmp_path / "sft"
    _run("urp-train", "sft", "--config", str(REPO / "configs/train/sft_demo.yaml"), "--build_dir", str(build),
         "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(run), "--max_steps", "1",
         "--per_device_train_batch_size", "2", "--max_examples", "4", "--save_strategy", "no", cwd=REPO)
    preds = tmp_path / "preds.parquet"
    _run("urp-eval", "predict", "--backend", "transformers", "--model", str(run), "--data", str(build),
         "--split", "unseen", "--max-samples", "2", "--max-new-tokens", "8", "--out", str(preds), cwd=REPO)
    assert set(pq.read_table(preds, columns=["indicator"]).column(0).to_pylist()) == {NAME}
    _run("urp-eval", "bias-report", "--data", str(build), "--predictions", str(preds), "--split", "unseen",
         "--out", str(tmp_path / "report"), "--permutations", "0", cwd=REPO)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["indicators"] == [NAME] and summary["metrics"]["test_unseen"][NAME]["n"] == 2
    assert NAME in (tmp_path / "report" / "report.html").read_text()
