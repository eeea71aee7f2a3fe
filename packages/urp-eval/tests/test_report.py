"""The bias-report and compare commands: exit codes, thresholds, one-line errors, HTML, no torch."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from urp_data.contract import split_path
from urp_eval.cli import main
from urp_eval.html import _draw_basemap, _fmt
from urp_eval.report import ReportConfig, check_thresholds


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def report_args(build: Path, preds: Path, out: Path, *extra: str) -> list[str]:
    return ["bias-report", "--data", str(build), "--predictions", str(preds), "--out", str(out),
            "--permutations", "9", *extra]


@pytest.fixture(scope="module")
def summary(build: Path, predictions: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("rep")
    assert main(report_args(build, predictions, out, "--split", "test", "--min-group-size", "5")) == 0
    return json.loads((out / "summary.json").read_text())


def test_exit_codes_follow_thresholds(build: Path, predictions: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture, summary: dict) -> None:
    rho = {i: m["spearman"] for i, m in summary["metrics"]["test_unseen"].items()}
    code, _, err = run(capsys, *report_args(build, predictions, tmp_path / "a", "--fail-under",
                                            f"spearman={min(rho.values()) - 1e-6}"))
    assert code == 0, err
    code, _, err = run(capsys, *report_args(build, predictions, tmp_path / "b", "--fail-under",
                                            f"spearman={rho['population'] + 1e-6}", "--fail-under", "answer_rate=0"))
    assert code == 3
    assert "threshold breached: spearman of population on test_unseen" in err
    assert "answer_rate" not in err  # that threshold held
    written = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert written["passed"] is False
    assert {(c["metric"], c["indicator"]) for c in written["thresholds"] if not c["passed"]} >= {
        ("spearman", "population")}


def test_max_gap(build: Path, predictions: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, *report_args(build, predictions, tmp_path / "a", "--min-group-size", "5",
                                            "--max-gap", "mae=0"))
    assert code == 3 and "best - worst group gap of mae" in err
    code, _, err = run(capsys, *report_args(build, predictions, tmp_path / "b", "--min-group-size", "5",
                                            "--max-gap", "mae=1e12"))
    assert code == 0, err


def test_threshold_logic_fails_closed() -> None:
    cfg = ReportConfig(data="d", predictions="p", fail_under=["spearman=0.5"], max_gap=["rmse=10"])
    summary = {"metrics": {"test_unseen": {"a": {"spearman": 0.5}, "b": {"spearman": None}}},
               "bias": {"test_unseen": {"a": {"rmse": {"gap": 10.0}}, "b": {"rmse": {"gap": 10.5}}}}}
    got = {(c["kind"], c["indicator"]): c["passed"] for c in check_thresholds(summary, cfg)}
    assert got == {("fail_under", "a"): True, ("fail_under", "b"): False,
                   ("max_gap", "a"): True, ("max_gap", "b"): False}


@pytest.mark.parametrize("flags, message", [
    (["--fail-under", "rmse=3"], "--fail-under 'rmse=3'"),
    (["--fail-under", "spearman"], "METRIC=VALUE"),
    (["--max-gap", "spearman=abc"], "METRIC=VALUE"),
    (["--group-by", "h3:9"], "resolution 8"),
    (["--group-by", "admin"], "choose group, country or h3:R"),
    (["--split", "holdout"], "unknown split 'holdout'"),
    (["--anchor", "gdp"], "--anchor 'gdp'"),
])
def test_usage_errors_exit_2(build: Path, predictions: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                             flags: list[str], message: str) -> None:
    code, _, err = run(capsys, *report_args(build, predictions, tmp_path, *flags))
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def _copy_build(build: Path, dest: Path, **replace: pa.Table) -> Path:
    dest.mkdir()
    for f in build.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    for split, table in replace.items():
        pq.write_table(table, split_path(dest, split))
    return dest


def test_bad_inputs_exit_1(build: Path, predictions: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    preds = pq.read_table(predictions)
    cases: dict[str, tuple[Path, Path]] = {}
    cases["not found"] = (build, tmp_path / "missing.parquet")
    pq.write_table(preds.drop(["prediction"]), tmp_path / "noprediction.parquet")
    cases["no column 'prediction'"] = (build, tmp_path / "noprediction.parquet")
    pq.write_table(preds.set_column(preds.schema.get_field_index("prediction"), "prediction",
                                    pa.array(["x"] * len(preds))), tmp_path / "strings.parquet")
    cases["expected a float"] = (build, tmp_path / "strings.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    cases["not a readable Parquet file"] = (build, tmp_path / "garbage.parquet")
    other = preds.set_column(0, "sample_id", pa.array([f"x{i}" for i in range(len(preds))]))
    pq.write_table(other, tmp_path / "other.parquet")
    cases["matches a sample"] = (build, tmp_path / "other.parquet")
    dup = pa.concat_tables([preds, preds.slice(5, 1)])
    pq.write_table(dup, tmp_path / "dup.parquet")  # unsorted: the hash-aggregate check
    cases["several predictions for sample"] = (build, tmp_path / "dup.parquet")
    pq.write_table(dup.sort_by([("indicator", "ascending"), ("sample_id", "ascending")]), tmp_path / "dup2.parquet")
    cases[f"several predictions for sample {preds['sample_id'][5].as_py()!r}"] = (build, tmp_path / "dup2.parquet")
    unseen = pq.read_table(split_path(build, "test_unseen"))
    cases["has no rows"] = (_copy_build(build, tmp_path / "empty", test_unseen=unseen.slice(0, 0)), predictions)
    cases["has no column 'group'"] = (_copy_build(build, tmp_path / "nogroup", test_unseen=unseen.drop(["group"])),
                                      predictions)
    cases["manifest.json not found"] = (tmp_path, predictions)
    for message, (b, p) in cases.items():
        code, _, err = run(capsys, *report_args(b, p, tmp_path / "out"))
        assert code == 1, (message, err)
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, (message, err)


def test_traceback_only_with_urp_debug(build: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URP_DEBUG", "1")
    code, _, err = run(capsys, *report_args(build, tmp_path / "missing.parquet", tmp_path / "out"))
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("urp-eval bias-report: error:")


@pytest.mark.slow
def test_report_never_imports_torch(build: Path, predictions: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from urp_eval.cli import main\n"
        f"rc = main({report_args(build, predictions, tmp_path)!r})\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'vllm', 'urp_train') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'RC', rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert "HEAVY [] RC 0" in res.stdout, res.stdout + res.stderr


def test_html_is_self_contained_with_png_plots(build: Path, predictions: Path, tmp_path: Path) -> None:
    assert main(report_args(build, predictions, tmp_path, "--min-group-size", "5")) == 0
    text = (tmp_path / "report.html").read_text()
    assert not re.search(r"(?:https?:|ftp:)?//[\w.-]+\.\w", text.replace("http://www.w3.org", ""))
    assert "<script" not in text and "<link" not in text and "@import" not in text
    sources = re.findall(r'src="([^"]+)"', text)
    assert len(sources) == 6  # scatter, map and bars for each of the two indicators
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert mpimg.imread(io.BytesIO(png)).shape[0] > 100  # decodes to a real image
    assert "Headline" in text and "population" in text


def test_groups_parquet_has_one_row_per_split_indicator_group(build: Path, predictions: Path,
                                                              tmp_path: Path, summary: dict) -> None:
    assert main(report_args(build, predictions, tmp_path, "--split", "test")) == 0
    groups = pq.read_table(tmp_path / "groups.parquet").to_pandas()
    assert not groups.duplicated(["split", "indicator", "group"]).any()
    assert groups.groupby(["split", "indicator"]).n.sum().to_dict() == {
        (s, i): m["n"] for s, per in summary["metrics"].items() for i, m in per.items()}


def test_compare_pairs_samples_and_refuses_other_splits(build: Path, predictions: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture, make_predictions) -> None:
    worse = make_predictions(build, tmp_path / "worse.parquet", seed=7, answer_rate=0.5)
    assert main(report_args(build, predictions, tmp_path / "a")) == 0
    assert main(report_args(build, worse, tmp_path / "b")) == 0
    assert main(report_args(build, predictions, tmp_path / "seen", "--split", "seen")) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b" / "summary.json"))
    assert code == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())["metrics"]["test_unseen"]["population"]
    b = json.loads((tmp_path / "b" / "summary.json").read_text())["metrics"]["test_unseen"]["population"]
    line = next(ln for ln in out.splitlines() if ln.startswith("test_unseen") and " population " in ln
                and " answer_rate " in ln).split()
    assert line[4:7] == [f"{a['answer_rate']:.4g}", f"{b['answer_rate']:.4g}",
                         f"{b['answer_rate'] - a['answer_rate']:.4g}"]
    assert line[-1] == "*"  # half the answers: significantly worse
    code, _, err = run(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-if-worse", "answer_rate")
    assert code == 3 and "significantly worse than A on answer_rate" in err
    code, _, err = run(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-if-worse", "spearman")
    assert code == 0, err
    code, out, err = run(capsys, "compare", str(tmp_path / "seen"), str(tmp_path / "a"))
    assert code == 1 and err.count("\n") == 1 and "different splits" in err and not out
    code, _, err = run(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "nothing"))
    assert code == 1 and "not found" in err


def test_compare_refuses_reports_of_different_builds(build: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     make_build, make_predictions) -> None:
    other = make_build(tmp_path / "other", seed=3)
    assert main(report_args(build, make_predictions(build, tmp_path / "p.parquet"), tmp_path / "a")) == 0
    assert main(report_args(other, make_predictions(other, tmp_path / "q.parquet"), tmp_path / "b")) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 1 and err.count("\n") == 1 and "different builds" in err and not out


def test_label_warning_is_repeated_in_summary_and_html(build: Path, predictions: Path, tmp_path: Path) -> None:
    import shutil

    from urp_data.contract import load_manifest

    honest = tmp_path / "build"
    shutil.copytree(build, honest)
    m = load_manifest(honest)
    m.indicators["population"].derived_from_prompt = True
    m.indicators["population"].resolution_km = 10.0
    (honest / "manifest.json").write_text(m.to_json())
    out = tmp_path / "rep"
    assert main(report_args(honest, predictions, out)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert list(s["label_warnings"]) == ["population"] and "derived from what the prompt shows" in \
        s["label_warnings"]["population"]
    assert s["labels"]["population"]["resolution_km"] == 10.0 and not s["labels"]["night_light"]["derived_from_prompt"]
    text = (out / "report.html").read_text()
    assert "Label warning (population)" in text and "derived from what the prompt shows" in text
    assert "bias anchor" in text and "0.0–9.9 score scale" in text
    plain = tmp_path / "plain"
    assert main(report_args(build, predictions, plain)) == 0
    assert json.loads((plain / "summary.json").read_text())["label_warnings"] == {}


def test_figures_zero_up_to_rounding_print_as_zero() -> None:
    assert _fmt(3.638e-12) == "0" and _fmt(-9.1e-13) == "0"
    assert _fmt(2e-6, scale=6873.0) == "0"  # a gap between two MAEs of 6873 that differ in the 10th digit
    assert _fmt(2e-6) == "2e-06" and _fmt(0.01309) == "0.01309" and _fmt(6873.0) == "6873"


def test_group_map_basemap_is_the_country_outlines_around_the_points() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    lon, lat = np.array([-54.70, -54.50]), np.array([-25.60, -25.35])  # Ciudad del Este / Foz do Iguaçu
    ax.scatter(lon, lat)
    _draw_basemap(ax, lon, lat)
    (lines,) = ax.collections[1:]
    segments = lines.get_segments()
    ax.autoscale_view()
    x0, x1 = ax.get_xlim()
    plt.close(fig)
    assert len(segments) == 3  # the rings of Argentina, Brazil and Paraguay, whose borders meet here
    assert x0 > -54.8 and x1 < -54.4  # the samples set the view, not the outlines of whole countries


def test_every_output_carries_intervals_and_methods(build: Path, predictions: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from urp_eval.intervals import METHODS
    from urp_eval.metrics import METRICS
    from urp_eval.significance import CORRECTION

    out = tmp_path / "r"
    assert main(report_args(build, predictions, out, "--split", "test", "--min-group-size", "5")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["intervals"]["per_metric"] == {m: METHODS[m].name for m in METRICS}
    assert summary["intervals"]["correction"] == CORRECTION and summary["intervals"]["level"] == 0.95
    for per in summary["metrics"].values():
        for m in per.values():
            for name in METRICS:
                assert m[f"{name}_lo"] <= m[name] <= m[f"{name}_hi"], name
    for per in summary["metrics_score_scale"].values():
        for m in per.values():
            assert m["spearman_lo"] <= m["spearman"] <= m["spearman_hi"]
    for per in summary["bias"].values():
        for pm in per.values():
            for b in pm.values():
                assert {"worst_lo", "worst_hi", "gap_lo", "gap_hi", "worst_decile_lo", "worst_decile_hi",
                        "best_lo", "best_hi", "significantly_worse"} <= set(b)
                assert b["group_test"] == "permutation"  # a small build: under --group-test-samples
    for d in summary["drop"].values():
        assert d["mae_lo"] < d["mae_hi"]
    for per in summary["bias_score"].values():
        for b in per.values():
            assert b["bias_score_lo"] <= b["bias_score"] <= b["bias_score_hi"]
    groups = pq.read_table(out / "groups.parquet")
    assert {f"{m}_{s}" for m in METRICS for s in ("lo", "hi", "p_worse", "worse")} <= set(groups.column_names)
    assert json.loads(groups.schema.metadata[b"urp.intervals"]) == summary["intervals"]
    page = (out / "report.html").read_text()
    assert html.escape(CORRECTION) in page and "Brackets: 95% intervals" in page
    assert "significantly worse (Holm)" in page and page.count("<small>[") >= 20
    assert set(groups["group_test"].to_pylist()) == {"permutation"} and "<th>group test</th>" in page
    assert html.escape(summary["intervals"]["group_test"]["permutation"]) in page
    wald = tmp_path / "w"
    assert main(report_args(build, predictions, wald, "--split", "test", "--min-group-size", "5",
                            "--group-test-samples", "0")) == 0
    assert set(pq.read_table(wald / "groups.parquet")["group_test"].to_pylist()) == {"wald"}
    code, _, err = run(capsys, *report_args(build, predictions, tmp_path / "x", "--level", "95"))
    assert code == 2 and "level" in err


def test_group_bars_have_error_bars(build: Path, predictions: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar plot passes each group's interval to matplotlib as an error bar, on both panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.axes
    from urp_eval.compute import compute
    from urp_eval.html import _group_bars
    from urp_eval.inputs import connect

    drawn = []
    real = matplotlib.axes.Axes.barh

    def spy(self, *args, **kwargs):
        drawn.append(kwargs.get("xerr"))
        return real(self, *args, **kwargs)

    con = connect("256MB")
    compute(con, ReportConfig(data=str(build), predictions=str(predictions), out=str(tmp_path / "y"),
                              permutations=0, min_group_size=5))
    monkeypatch.setattr(matplotlib.axes.Axes, "barh", spy)
    assert _group_bars(con, "test_unseen", "population", {}, 0.95).startswith("<img")
    assert len(drawn) == 2 and all(x is not None and (x > 0).any() for x in drawn)
