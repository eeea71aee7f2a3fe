"""A task no code knows, by configuration only: built, then carried through the paper's transfer table.

The indicator (name, description, unit, source) exists only in a region YAML written here; no
Python names it. `scripts/paper.sh` with `PAPER_HELD_OUT` then does what a user of the transfer
table does: GRPO for one step on the build's other indicator, predictions of the held-out one by
kNN, the base model and the trained one, a bias report of each and the table. The tiny base model
is untrained, so its rows count answers and hold no scores (the demo's warm start that fills them,
`scripts/transfer_demo.sh`, costs minutes); kNN's row holds figures with intervals.
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


def _run(*cmd: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=600, cwd=cwd,
                         env={**os.environ, "URP_DEBUG": "1", "OMP_NUM_THREADS": "1", **(env or {})})
    assert out.returncode == 0, (cmd, out.stderr[-3000:])
    return out


@pytest.mark.slow
def test_an_indicator_no_code_knows_is_built_and_goes_through_the_transfer_table(tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageTextToText
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
        "indicators": [{"name": "settlement_population", "type": "geonames_population", "radius_km": 5},
                       {"name": NAME, "type": "raster", "path": str(REPO / "data/demo/olinda_l7_etm.tif"),
                        "band": 4, "description": DESCRIPTION, "unit": UNIT,
                        "licence": "Landsat-7 ETM+, US public domain"}],
    }
    yaml_path = tmp_path / "newtask.yaml"
    yaml_path.write_text(yaml.safe_dump(region))
    _run("urp-data", "build", "--region", str(yaml_path), "--out", str(tmp_path / "build"), cwd=tmp_path)
    build = tmp_path / "build" / "newtask"
    info = load_manifest(build).indicators[NAME]
    assert (info.description, info.unit) == (DESCRIPTION, UNIT) and info.scale
    prompt = next(e for e in load_examples(build, "train") if e["indicator"] == NAME)["prompt"][-1]["content"][-1]["text"]
    assert f"{DESCRIPTION} (measured in {UNIT})" in prompt

    paper = tmp_path / "paper"
    out = _run("bash", "scripts/paper.sh", str(build), "demo", "--model_name_or_path", str(tiny_model_dir),
               "--max_steps", "1", "--per_device_train_batch_size", "4", "--num_generations", "2",
               "--max_completion_length", "8", "--max_examples", "4", "--save_strategy", "no", "--log_level", "info",
               cwd=REPO,
               env={"PAPER_OUT": str(paper), "PAPER_ONLY_TRANSFER": "1", "PAPER_HELD_OUT": NAME,
                    "PAPER_PREDICT": "--max-samples 2 --max-new-tokens 8"})
    trained_on = [line for line in out.stderr.splitlines() if "examples from split train" in line]
    assert len(trained_on) == 1, trained_on  # the transfer run only: the given base needs no warm start
    assert "settlement_population" in trained_on[0] and NAME not in trained_on[0]
    t = paper / "transfer"
    # the trained model is the one predicted from (an untrained model scores no reward, so one step leaves it as it was)
    state = json.loads((paper / "runs" / "transfer" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["log_history"][0]["rewards/format/mean"] == 0.0
    tuned = AutoModelForImageTextToText.from_pretrained(paper / "runs" / "transfer")
    assert tuned.config.model_type == "qwen2_5_vl"

    unseen = pq.read_table(build / "test_unseen.parquet", columns=[NAME]).column(0).drop_null()
    for method, n in (("knn", len(unseen)), ("base", 2), ("transfer", 2)):
        preds = pq.read_table(t / "predictions" / f"{method}-unseen.parquet", columns=["indicator"])
        assert set(preds.column(0).to_pylist()) == {NAME}, method
        summary = json.loads((t / "reports" / f"{method}-unseen" / "summary.json").read_text())
        assert summary["indicators"] == [NAME] and summary["metrics"]["test_unseen"][NAME]["n"] == n, method
        assert NAME in (t / "reports" / f"{method}-unseen" / "report.html").read_text()
    r2 = (t / "table.md").read_text().split("## R²")[1].split("##")[0].splitlines()
    assert f"| method | {NAME} (unseen) | mean (unseen) |" in r2  # the transfer table is the unseen split's
    assert {line.split(" | ")[0] for line in r2 if line.startswith("| ") and "---" not in line} == {
        "| method", "| kNN (GeoLLM baseline, trained on the indicator)", "| base model (zero-shot)",
        "| GRPO on the other indicators (zero-shot)"}
    assert "±" in next(line for line in r2 if line.startswith("| kNN"))  # kNN answers every sample
