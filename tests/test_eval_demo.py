"""End to end on the real demo build: knn and tiny-model predictions, then `bias-report --split unseen`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from urp_eval.cli import main


def check_report(out: Path, model: str) -> dict:
    assert {p.name for p in out.iterdir()} == {"summary.json", "groups.parquet", "report.html"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"] == ["test_unseen"] and summary["models"][0]["model"] == model
    groups = pq.read_table(out / "groups.parquet")
    assert groups.num_rows > 0 and set(groups["split"].to_pylist()) == {"test_unseen"}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and not re.search(r"https?://(?!www\.w3\.org)", html)
    return summary


def test_knn_baseline_report(demo_build: Path, tmp_path: Path) -> None:
    preds = tmp_path / "knn.parquet"
    assert main(["predict", "--data", str(demo_build), "--backend", "knn", "--split", "unseen",
                 "--out", str(preds)]) == 0
    assert main(["bias-report", "--data", str(demo_build), "--predictions", str(preds), "--split", "unseen",
                 "--out", str(tmp_path / "report")]) == 0
    summary = check_report(tmp_path / "report", "knn(k=5)")
    varying = [m for m in summary["metrics"]["test_unseen"].values() if m["spearman"] is not None]
    assert varying and all(m["answer_rate"] == 1.0 for m in summary["metrics"]["test_unseen"].values())


def test_tiny_model_report(demo_build: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    preds = tmp_path / "tiny.parquet"
    argv = ["predict", "--data", str(demo_build), "--model", str(tiny_model_dir), "--split", "unseen",
            "--out", str(preds), "--max-samples", "4", "--batch-size", "4", "--max-new-tokens", "8"]
    assert main(argv) == 0
    table = pq.read_table(preds).to_pandas()
    assert len(table) > 0 and (table.backend == "transformers").all()
    assert table.completions.map(len).eq(1).all() and table.completions.map(lambda c: isinstance(c[0], str)).all()
    assert main(argv) == 0  # resumed: nothing left to do, nothing duplicated
    assert pq.read_table(preds).num_rows == len(table)
    out = tmp_path / "report"
    code = main(["bias-report", "--data", str(demo_build), "--predictions", str(preds), "--split", "unseen",
                 "--out", str(out), "--min-group-size", "1"])
    assert code == 0
    summary = check_report(out, str(tiny_model_dir))
    predicted = pq.read_table(preds).to_pandas()
    for ind, m in summary["metrics"]["test_unseen"].items():
        # a random-weight model rarely answers in format: the report counts exactly what the file holds
        rows = predicted[predicted.indicator == ind]
        assert m["n"] == len(rows) and m["n_answered"] == rows.prediction.notna().sum()
        assert m["answer_rate"] == pytest.approx(rows.prediction.notna().mean())
        if m["n_answered"] < 2:
            assert m["spearman"] is None


@pytest.mark.parametrize("flag", ["--fail-under", "--max-gap"])
def test_demo_thresholds_exit_3(demo_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flag: str) -> None:
    preds = tmp_path / "mean.parquet"
    assert main(["predict", "--data", str(demo_build), "--backend", "mean", "--out", str(preds)]) == 0
    limit = "answer_rate=1.5" if flag == "--fail-under" else "mae=0"
    code = main(["bias-report", "--data", str(demo_build), "--predictions", str(preds), "--out", str(tmp_path / "r"),
                 "--min-group-size", "1", flag, limit])
    assert code == 3 and "threshold breached" in capsys.readouterr().err
