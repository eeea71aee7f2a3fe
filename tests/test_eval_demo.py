"""End to end on the real demo build: knn and tiny-model predictions, then `bias-report --split unseen`."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from urp_data.contract import load_manifest
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


@pytest.fixture(scope="module")
def knn_report(demo_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("knn")
    preds = tmp / "knn.parquet"
    assert main(["predict", "--data", str(demo_build), "--backend", "knn", "--split", "unseen",
                 "--out", str(preds)]) == 0
    assert main(["bias-report", "--data", str(demo_build), "--predictions", str(preds), "--split", "unseen",
                 "--out", str(tmp / "report")]) == 0
    return tmp / "report"


def test_knn_baseline_report(knn_report: Path) -> None:
    summary = check_report(knn_report, "knn(k=5)")
    varying = [m for m in summary["metrics"]["test_unseen"].values() if m["spearman"] is not None]
    assert varying and all(m["answer_rate"] == 1.0 for m in summary["metrics"]["test_unseen"].values())


def test_report_names_groups_and_prints_rounding_as_zero(demo_build: Path,
                                                                            knn_report: Path) -> None:
    text = (knn_report / "report.html").read_text()
    labels = load_manifest(demo_build).group_labels
    worst = json.loads((knn_report / "summary.json").read_text())["bias"]["test_unseen"]["night_light"]["mae"]
    assert f"{worst['worst_group']}<br><small>{html.escape(labels[worst['worst_group']])}</small>" in text
    # gdp_per_capita is one value per country: every Paraguayan group has the same MAE, a gap of 0 that the
    # arithmetic makes 3.6e-12; no table cell may show such a figure
    assert not re.findall(r"<td>-?\d(?:\.\d+)?e-(?:0*[6-9]|\d\d)</td>", text)
    gdp = json.loads((knn_report / "summary.json").read_text())["bias"]["test_unseen"]["gdp_per_capita"]["mae"]
    assert abs(gdp["gap"]) < 1e-6 and "<td>0</td>" in text


@pytest.mark.slow
def test_report_renders_offline_in_chromium(knn_report: Path, browser) -> None:
    page = browser(knn_report / "report.html", ["img", "table"])
    assert page.errors == [] and page.images_ok
    assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    assert len(page.boxes["img"]) >= 9 and len(page.boxes["table"]) >= 2
    for box in page.boxes["img"]:
        pixels = page.crop(box)
        assert box[2] > 200 and box[3] > 100 and pixels.std() > 10  # a drawn plot, not an empty frame


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
