"""Hostile names, paths, answers and output folders for the bias report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from urp_data.contract import split_path
from urp_eval import report as R
from urp_eval.cli import main

ODD_GROUP = "$x_{1$ <script>alert('g')</script> & \\n"
ODD_MODEL = "<b>model</b> $\\alpha$"


def _close(a: object, b: object) -> bool:
    """Equal up to floating-point summation order (DuckDB sums in parallel)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return a == b


def _copy_build(build: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in build.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def _args(build: Path, preds: Path, out: Path, *extra: str) -> list[str]:
    return ["bias-report", "--data", str(build), "--predictions", str(preds), "--out", str(out),
            "--permutations", "0", "--min-group-size", "1", *extra]


def test_odd_group_and_model_names_render_literally(build: Path, predictions: Path, tmp_path: Path) -> None:
    odd = _copy_build(build, tmp_path / "odd build [1]")
    unseen = pq.read_table(split_path(odd, "test_unseen"))
    groups = pa.array([ODD_GROUP] * len(unseen))  # one group: it is the worst and the best, named in every table
    pq.write_table(unseen.set_column(unseen.schema.get_field_index("group"), "group", groups),
                   split_path(odd, "test_unseen"))
    preds = pq.read_table(predictions)
    preds = preds.set_column(preds.schema.get_field_index("model"), "model", pa.array([ODD_MODEL] * len(preds)))
    path = tmp_path / "preds[1]*.parquet"  # glob characters: read literally, not as a pattern
    pq.write_table(preds, path)
    assert main(_args(odd, path, tmp_path / "r")) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;g&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;model&lt;/b&gt; $\\alpha$" in page
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["models"][0]["model"] == ODD_MODEL
    assert summary["inputs"]["predictions"]["path"] == str(path)
    assert ODD_GROUP in set(pq.read_table(tmp_path / "r" / "groups.parquet")["group"].to_pylist())


def test_off_scale_answers_count_as_unanswered(build: Path, predictions: Path, tmp_path: Path) -> None:
    preds = pq.read_table(predictions)
    answered = pc.and_(pc.is_valid(preds["score"]), pc.equal(preds["split"], "test_unseen"))
    first = int(pc.index(answered, True).as_py())
    scores = preds["score"].to_pylist()
    values = preds["prediction"].to_pylist()
    scores[first], values[first] = 1e300, 1e300  # a runaway answer from another writer
    hostile = preds.set_column(preds.schema.get_field_index("score"), "score", pa.array(scores))
    hostile = hostile.set_column(hostile.schema.get_field_index("prediction"), "prediction", pa.array(values))
    pq.write_table(hostile, tmp_path / "hostile.parquet")
    # the same row left unanswered: the figures must be identical
    scores[first], values[first] = None, None
    blank = preds.set_column(preds.schema.get_field_index("score"), "score", pa.array(scores, pa.float64()))
    blank = blank.set_column(blank.schema.get_field_index("prediction"), "prediction", pa.array(values, pa.float64()))
    pq.write_table(blank, tmp_path / "blank.parquet")
    assert main(_args(build, tmp_path / "hostile.parquet", tmp_path / "a")) == 0
    assert main(_args(build, tmp_path / "blank.parquet", tmp_path / "b")) == 0
    a, b = (json.loads((tmp_path / x / "summary.json").read_text()) for x in "ab")
    assert _close(a["metrics"], b["metrics"]) and _close(a["bias_score"], b["bias_score"])
    ind = preds["indicator"][first].as_py()
    assert a["metrics"]["test_unseen"][ind]["n_answered"] < a["metrics"]["test_unseen"][ind]["n"]


def test_a_folder_that_is_not_a_report_is_never_replaced(build: Path, predictions: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    assert main(_args(build, predictions, home)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds other files than a report" in err
    assert [p.name for p in home.iterdir()] == ["thesis.tex"]


def test_a_failed_report_leaves_the_previous_one_whole(build: Path, predictions: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r"
    assert main(_args(build, predictions, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args: object) -> str:
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(R, "render_html", broken)
    assert main(_args(build, predictions, out, "--split", "seen")) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folder left behind


def test_indicators_that_collide_ignoring_case_are_refused(build: Path, predictions: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    bad = _copy_build(build, tmp_path / "bad")
    for split in ("test_seen", "test_unseen"):
        t = pq.read_table(split_path(bad, split))
        pq.write_table(t.append_column("Population", t["population"]), split_path(bad, split))
    assert main(_args(bad, predictions, tmp_path / "r")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "collides with" in err and "'Population'" in err
