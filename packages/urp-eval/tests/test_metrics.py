"""Every metric of the report against scipy, scikit-learn and esda, to 1e-9.

The build and predictions (see conftest) hold ties, zeros, null truths, unanswered samples,
groups of one and two samples and a group with a constant truth.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import duckdb
import h3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from urp_data.contract import split_path
from urp_data.util.clikit import UsageError
from urp_eval import moran
from urp_eval.anchors import default_anchor
from urp_eval.inputs import connect, open_inputs
from urp_eval.metrics import METRICS, group_metrics
from urp_eval.moran import morans_i
from urp_eval.report import ReportConfig, bias_report

INDICATORS = ("population", "night_light")  # those of the conftest build
SPLITS = ("test_seen", "test_unseen")
MIN_GROUP = 5
SEED = 3


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


@pytest.fixture(scope="module")
def report(build: Path, predictions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    bias_report(ReportConfig(data=str(build), predictions=str(predictions), split="test", out=str(out),
                             min_group_size=MIN_GROUP, permutations=99, seed=SEED))
    return out


@pytest.fixture(scope="module")
def frame(build: Path, predictions: Path) -> pd.DataFrame:
    """Long table (split, group, h3_cell, indicator, truth, pred, score), evaluated samples only."""
    samples = pd.concat([pq.read_table(split_path(build, s)).to_pandas() for s in SPLITS])
    preds = pq.read_table(predictions).to_pandas()
    parts = []
    for ind in INDICATORS:
        s = samples[samples[ind].notna()][["sample_id", "split", "group", "h3_cell", ind]].rename(columns={ind: "truth"})
        p = preds[preds.indicator == ind][["sample_id", "indicator", "prediction", "score"]]
        parts.append(s.merge(p, on="sample_id").rename(columns={"prediction": "pred"}))
    return pd.concat(parts)


def reference(df: pd.DataFrame) -> dict[str, float | None]:
    """The metrics of one group with scipy / scikit-learn, undefined values as None."""
    a = df[df.pred.notna()]
    out: dict[str, float | None] = {"n": len(df), "n_answered": len(a), "answer_rate": len(a) / len(df)}
    y, p = a.truth.to_numpy(), a.pred.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defined = len(a) >= 2 and np.ptp(y) > 0 and np.ptp(p) > 0
        out["pearson"] = finite_or_none(stats.pearsonr(p, y).statistic) if defined else None
        out["spearman"] = finite_or_none(stats.spearmanr(p, y).statistic) if defined else None
        out["r2"] = finite_or_none(r2_score(y, p, force_finite=False)) if len(a) >= 2 else None
    out["rmse"] = math.sqrt(mean_squared_error(y, p)) if len(a) else None
    out["mae"] = mean_absolute_error(y, p) if len(a) else None
    out["mean_error"] = float(np.mean(p - y)) if len(a) else None
    return out


def test_fixture_has_the_awkward_cases(frame: pd.DataFrame) -> None:
    sizes = frame.groupby(["split", "indicator", "group"]).size()
    assert sizes.min() == 1 and (sizes == 2).any()
    assert frame.pred.isna().any() and (frame.pred == 0).any() and frame.pred.duplicated().any()
    assert frame[frame.group == "tiny-2"].query("indicator == 'night_light'").truth.nunique() == 1


def test_group_and_overall_metrics_match_scipy_and_sklearn(report: Path, frame: pd.DataFrame) -> None:
    groups = pq.read_table(report / "groups.parquet").to_pandas()
    summary = json.loads((report / "summary.json").read_text())
    checked = 0
    for (split, ind, grp), df in frame.groupby(["split", "indicator", "group"]):
        row = groups[(groups.split == split) & (groups.indicator == ind) & (groups.group == grp)].iloc[0]
        assert bool(row.ranked) == (len(df) >= MIN_GROUP)
        for k, v in reference(df).items():
            got = None if pd.isna(row[k]) else float(row[k])
            assert close(got, v), (split, ind, grp, k, got, v)
        checked += 1
    assert checked == len(groups)
    for (split, ind), df in frame.groupby(["split", "indicator"]):
        for k, v in reference(df).items():
            assert close(summary["metrics"][split][ind][k], v), (split, ind, k)


def test_across_group_bias_matches_numpy(report: Path) -> None:
    groups = pq.read_table(report / "groups.parquet").to_pandas()
    summary = json.loads((report / "summary.json").read_text())
    for (split, ind), g in groups[groups.ranked].groupby(["split", "indicator"]):
        for name, metric in METRICS.items():
            v = g[["group", name]].dropna()
            bad = {"higher": -v[name], "lower": v[name], "zero": v[name].abs()}[metric.direction]
            order = sorted(zip(bad, v.group))
            got = summary["bias"][split][ind][name]
            assert got["n_groups"] == len(v)
            assert got["worst_group"] == order[-1][1] and got["best_group"] == order[0][1]
            assert close(got["gap"], float(v[name].max() - v[name].min()))
            if metric.direction == "higher":
                assert close(got["worst_decile"], float(np.percentile(v[name], 10)))
            else:
                assert close(got["worst_decile"], float(np.percentile(bad, 90)))


def test_seen_unseen_drop(report: Path) -> None:
    s = json.loads((report / "summary.json").read_text())
    seen, unseen = s["metrics"]["test_seen"]["population"], s["metrics"]["test_unseen"]["population"]
    assert close(s["drop"]["population"]["spearman"], seen["spearman"] - unseen["spearman"])
    assert close(s["drop"]["population"]["rmse"], unseen["rmse"] - seen["rmse"])


def test_morans_i_matches_esda(report: Path, frame: pd.DataFrame) -> None:
    import esda
    from libpysal.weights import W

    summary = json.loads((report / "summary.json").read_text())
    islands = 0
    for (split, ind), df in frame[frame.pred.notna()].groupby(["split", "indicator"]):
        y = (df.pred - df.truth).groupby(df.h3_cell).mean().sort_index()
        cells = list(y.index)
        present = set(cells)
        neighbours = {c: [nb for nb in h3.grid_ring(c, 1) if nb in present] for c in cells}
        islands += sum(not v for v in neighbours.values())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = W(neighbours, id_order=cells, silence_warnings=True)
            np.random.seed(SEED)
            ref = esda.Moran(y.to_numpy(), w, transformation="r", permutations=99)
        got = summary["moran"][split][ind]
        assert got["n_cells"] == len(cells)
        assert close(got["I"], float(ref.I)) and close(got["expected_I"], float(ref.EI))
        assert close(got["p_sim"], float(ref.p_sim))
        assert close(got["z_rand"], float(ref.z_rand)) and close(got["p_rand"], float(ref.p_rand))
    assert islands  # the scattered test_seen cells include cells with no neighbour


ANCHORS = {"population": "night_light", "night_light": "population"}  # never the predicted indicator


def test_bias_score_matches_scipy(report: Path, frame: pd.DataFrame) -> None:
    summary = json.loads((report / "summary.json").read_text())
    assert summary["bias_anchor"] == ANCHORS
    for (split, ind), df in frame.groupby(["split", "indicator"]):
        anchor = frame[frame.indicator == ANCHORS[ind]][["sample_id", "truth"]].rename(columns={"truth": "anchor"})
        answered = df.merge(anchor, on="sample_id")
        answered = answered[answered.score.notna()]
        rho = stats.spearmanr(answered.score, answered.anchor).statistic
        mad = float(np.mean(np.abs(answered.score - answered.score.mean())))
        rate = df.pred.notna().mean()
        got = summary["bias_score"][split][ind]
        assert got["anchor"] == ANCHORS[ind]
        assert close(got["rho"], float(rho)) and close(got["mad"], mad)
        assert close(got["bias_score"], float(rho) * mad * rate)


def test_h3_parent_groups_match_h3(build: Path, predictions: Path) -> None:
    con = duckdb.connect()
    open_inputs(con, build, SPLITS, predictions, "h3:5")
    got = dict(con.execute("SELECT h3_cell, grp FROM samples").fetchall())
    assert got == {c: h3.cell_to_parent(c, 5) for c in got}
    with pytest.raises(UsageError, match="resolution 8"):
        open_inputs(con, build, SPLITS, predictions, "h3:9")


def test_group_by_country(build: Path, predictions: Path, tmp_path: Path) -> None:
    rep = bias_report(ReportConfig(data=str(build), predictions=str(predictions), split="unseen",
                                   group_by="country", out=str(tmp_path), permutations=0))
    groups = pq.read_table(tmp_path / "groups.parquet").to_pandas()
    assert set(groups.group) == {"BRA", "PRY"}
    assert groups.groupby("indicator").n.sum().to_dict() == {
        k: v["n"] for k, v in rep.summary["metrics"]["test_unseen"].items()}


def test_model_that_answers_nothing(build: Path, tmp_path: Path, make_predictions) -> None:
    preds = make_predictions(build, tmp_path / "none.parquet", answer_rate=0.0)
    rep = bias_report(ReportConfig(data=str(build), predictions=str(preds), split="unseen", out=str(tmp_path / "r"),
                                   fail_under=["spearman=0.1"]))
    for m in rep.summary["metrics"]["test_unseen"].values():
        assert m["answer_rate"] == 0 and m["n"] > 0
        assert m["pearson"] is None and m["spearman"] is None and m["r2"] is None and m["rmse"] is None
    assert all(v["I"] is None for v in rep.summary["moran"]["test_unseen"].values())
    assert all(v["bias_score"] is None for v in rep.summary["bias_score"]["test_unseen"].values())
    assert len(rep.breaches) == len(INDICATORS) and "undefined" in rep.breaches[0]
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"summary.json", "groups.parquet", "report.html"}


def test_default_anchor_prefers_socio_economic_and_never_the_indicator() -> None:
    assert default_anchor("population", ["population", "night_light", "gdp_per_capita"]) == "gdp_per_capita"
    assert default_anchor("gdp_per_capita", ["population", "gdp_per_capita"]) == "population"
    assert default_anchor("population", ["population"]) is None


def test_explicit_anchor_applies_to_every_indicator(build: Path, predictions: Path, tmp_path: Path) -> None:
    rep = bias_report(ReportConfig(data=str(build), predictions=str(predictions), split="unseen", out=str(tmp_path),
                                   anchor="population", permutations=0))
    assert rep.summary["bias_anchor"] == {"population": "population", "night_light": "population"}
    assert {v["anchor"] for v in rep.summary["bias_score"]["test_unseen"].values()} == {"population"}


def test_score_scale_metrics_match_scipy(report: Path, frame: pd.DataFrame, build: Path) -> None:
    from urp_data.contract import load_manifest

    summary = json.loads((report / "summary.json").read_text())
    assert summary["headline_scale"].startswith("score")
    manifest = load_manifest(build)
    checked = 0
    for (split, ind), df in frame.groupby(["split", "indicator"]):
        a = df[df.score.notna()]
        y = manifest.indicators[ind].score_scale().to_score(a.truth.to_numpy())
        p = a.score.to_numpy()
        got = summary["metrics_score_scale"][split][ind]
        assert got["n_answered"] == len(a)
        assert close(got["pearson"], float(stats.pearsonr(p, y).statistic))
        assert close(got["spearman"], float(stats.spearmanr(p, y).statistic))
        assert close(got["r2"], float(r2_score(y, p)))
        assert close(got["mae"], float(mean_absolute_error(y, p)))
        assert close(got["rmse"], math.sqrt(mean_squared_error(y, p)))
        assert not close(got["mae"], summary["metrics"][split][ind]["mae"])  # a different scale from raw units
        checked += 1
    assert checked == len(SPLITS) * len(INDICATORS)


def test_morans_i_neighbours_in_small_chunks_give_the_same_figures(build: Path, predictions: Path, report: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Python holds one chunk of neighbour pairs at a time; the chunk size must not change any figure."""
    monkeypatch.setattr(moran, "NEIGHBOUR_CHUNK", 7)
    con = connect("64MB")
    indicators = open_inputs(con, build, SPLITS, predictions, "group")
    group_metrics(con, indicators, MIN_GROUP, INDICATORS[0])
    got = {(r["split"], r["indicator"]): r for r in morans_i(con, indicators, 99, SEED)}
    want = json.loads((report / "summary.json").read_text())["moran"]
    assert len(got) == len(SPLITS) * len(INDICATORS)
    for (split, ind), row in got.items():
        for key in ("n_cells", "n_linked", "I", "z_rand", "p_rand", "p_sim"):
            assert close(row[key], want[split][ind][key]), (split, ind, key)
