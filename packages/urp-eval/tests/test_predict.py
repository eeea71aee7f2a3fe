"""urp-eval predict: baselines against scikit-learn, answer parsing and score mapping, resume, atomic output."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.neighbors import BallTree
from urp_data.contract import load_manifest, split_path
from urp_eval import generators as G
from urp_eval import predict as P
from urp_eval.baselines import knn_mean
from urp_eval.cli import main
from urp_eval.inputs import ReportInputError
from urp_eval.predict import PREDICTION_SCHEMA, PredictConfig, predict


@pytest.fixture(autouse=True)
def model_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake generators' model names are folders here, so predict's model check passes without a hub."""
    models = tmp_path_factory.mktemp("models")
    for name in ("fake-model", "other-model", "m"):
        (models / name).mkdir()
    monkeypatch.chdir(models)


def test_knn_matches_sklearn_haversine_balltree() -> None:
    rng = np.random.default_rng(0)
    tlat, tlon = rng.uniform(-80, 80, 500), rng.uniform(-180, 180, 500)
    values = rng.normal(size=500)
    qlat, qlon = rng.uniform(-80, 80, 200), rng.uniform(-180, 180, 200)
    qlon[:5] = 179.9  # neighbours across the antimeridian
    tree = BallTree(np.radians(np.column_stack([tlat, tlon])), metric="haversine")  # (lat, lon) order
    _, idx = tree.query(np.radians(np.column_stack([qlat, qlon])), k=7)
    np.testing.assert_allclose(knn_mean(tlat, tlon, values, qlat, qlon, 7), values[idx].mean(axis=1), rtol=1e-12)
    # k above the number of training points: the mean of all of them
    np.testing.assert_allclose(knn_mean(tlat[:3], tlon[:3], values[:3], qlat, qlon, 7), values[:3].mean())


@pytest.mark.parametrize("backend", ["knn", "mean"])
def test_baselines_write_one_row_per_sample_and_indicator(build: Path, tmp_path: Path, backend: str) -> None:
    out = predict(PredictConfig(data=str(build), out=str(tmp_path / "p.parquet"), backend=backend, split="test"))
    table = pq.read_table(out)
    assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    manifest = load_manifest(build)
    train = pq.read_table(split_path(build, "train")).to_pandas()
    for split in ("test_seen", "test_unseen"):
        truth = pq.read_table(split_path(build, split)).to_pandas()
        for ind in manifest.indicators:
            rows = table.filter((table["indicator"].to_numpy(zero_copy_only=False) == ind)
                                & (table["split"].to_numpy(zero_copy_only=False) == split)).to_pandas()
            assert sorted(rows.sample_id) == sorted(truth[truth[ind].notna()].sample_id)
            if backend == "mean":
                np.testing.assert_allclose(rows.prediction, train[ind].mean(), rtol=1e-12)
            np.testing.assert_allclose(rows.score, manifest.indicators[ind].score_scale().to_score(rows.prediction))
            assert (rows.model == ("train-mean" if backend == "mean" else "knn(k=5)")).all()


class FakeGenerator:
    """Stands in for a model: answers from a script, one entry per prompt."""

    calls: ClassVar[list[int]] = []

    def __init__(self, cfg: PredictConfig) -> None:
        self.k = cfg.samples_per_prompt

    def generate(self, messages, images):
        FakeGenerator.calls.append(len(messages))
        assert all(im.size == (32, 32) for im in images)
        assert all(m[1]["content"][0] == {"type": "image"} for m in messages)
        answers = ["<think>dense</think><answer>4.5</answer>", "no answer here", "<answer>9.9</answer>"]
        out = []
        for i in range(len(messages)):  # [4.5, 9.9], [none, none] or [9.9, 9.9]
            a = (len(FakeGenerator.calls) + i) % 3
            out.append([answers[a]] + [answers[1 if a == 1 else 2]] * (self.k - 1))
        return out


def test_model_backend_parses_maps_and_resumes(build: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "TransformersGenerator", FakeGenerator)
    out = tmp_path / "p.parquet"
    cfg = {"data": str(build), "out": str(out), "model": "fake-model", "max_samples": 6, "batch_size": 4,
           "save_every": 4, "samples_per_prompt": 2, "temperature": 1.0}
    predict(PredictConfig(**cfg))
    first = pq.read_table(out).to_pandas()
    unseen = pq.read_table(split_path(build, "test_unseen")).sort_by("sample_id").slice(0, 6).to_pandas()
    assert len(first) == unseen[["population", "night_light"]].notna().sum().sum()
    scale = load_manifest(build).indicators["population"].score_scale()
    for _, r in first.iterrows():
        parsed = [v for v in (4.5 if "4.5" in c else 9.9 if "9.9" in c else None for c in r.completions)
                  if v is not None]
        assert r.n_parsed == len(parsed) and len(r.completions) == 2
        if parsed:
            assert r.score == pytest.approx(np.mean(parsed))
            if r.indicator == "population":
                assert r.prediction == pytest.approx(scale.to_value(np.mean(parsed)))
        else:
            assert np.isnan(r.score) and np.isnan(r.prediction)
    assert first.prediction.isna().any() and first.prediction.notna().any()
    # resume with more samples: the first rows are kept as they were, nothing is duplicated
    FakeGenerator.calls = []
    predict(PredictConfig(**{**cfg, "max_samples": 9}))
    second = pq.read_table(out).to_pandas()
    assert not second.duplicated(["sample_id", "indicator"]).any()
    assert sum(FakeGenerator.calls) == len(second) - len(first) > 0
    kept = second.merge(first, on=["sample_id", "indicator"], suffixes=("", "_first"))
    assert len(kept) == len(first) and (kept.completions.map(list) == kept.completions_first.map(list)).all()
    assert not list(tmp_path.glob("*.tmp"))
    assert not (tmp_path / ".p.parquet.parts").exists()  # parts merged and removed
    # another model, or other sampling settings, into the same file is refused
    for change, named in [({"model": "other-model"}, "model='fake-model'"), ({"temperature": 0.7}, "temperature=1.0"),
                          ({"max_new_tokens": 7}, "max_new_tokens=512"), ({"split": "seen"}, "split='test_unseen'"),
                          ({"drop": "text"}, "drop=None")]:
        with pytest.raises(ReportInputError, match=f"other settings .*{named}"):
            predict(PredictConfig(**{**cfg, **change}))
    assert pq.read_table(out).num_rows == len(second)  # untouched by the refusals


class DyingGenerator(FakeGenerator):
    """Answers two batches, then the run is interrupted (as by Ctrl-C or a killed job)."""

    def generate(self, messages, images):
        if len(FakeGenerator.calls) >= 2:
            raise KeyboardInterrupt
        return super().generate(messages, images)


def test_interrupted_run_resumes_from_its_parts(build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"data": str(build), "model": "fake-model", "max_samples": 10, "batch_size": 2, "save_every": 2}
    FakeGenerator.calls = []
    monkeypatch.setattr(G, "TransformersGenerator", FakeGenerator)
    ref = predict(PredictConfig(**cfg, out=str(tmp_path / "ref.parquet")))
    out = tmp_path / "p.parquet"
    FakeGenerator.calls = []
    monkeypatch.setattr(G, "TransformersGenerator", DyingGenerator)
    with pytest.raises(KeyboardInterrupt):
        predict(PredictConfig(**cfg, out=str(out)))
    parts = sorted((tmp_path / ".p.parquet.parts").glob("part-*.parquet"))
    assert len(parts) == 2 and not out.exists()  # two finished batches kept, nothing merged yet
    kept = sum(pq.read_metadata(p).num_rows for p in parts)
    FakeGenerator.calls = []
    monkeypatch.setattr(G, "TransformersGenerator", FakeGenerator)
    predict(PredictConfig(**cfg, out=str(out)))
    total = pq.read_table(ref).num_rows
    assert sum(FakeGenerator.calls) == total - kept  # only the missing prompts were generated
    got, want = pq.read_table(out), pq.read_table(ref)
    assert got.select(["sample_id", "indicator", "split"]).equals(want.select(["sample_id", "indicator", "split"]))
    assert not (tmp_path / ".p.parquet.parts").exists()


class RecordingGenerator(FakeGenerator):
    seen: ClassVar[list] = []

    def generate(self, messages, images):
        RecordingGenerator.seen.append((messages, list(images)))
        return [["<think>a</think><answer>5.0</answer>"] * self.k for _ in messages]


@pytest.mark.parametrize("drop", ["image", "text"])
def test_drop_ablations_use_the_training_prompts(build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 drop: str) -> None:
    from urp_data.contract import render_messages

    monkeypatch.setattr(G, "TransformersGenerator", RecordingGenerator)
    RecordingGenerator.seen = []
    out = predict(PredictConfig(data=str(build), out=str(tmp_path / "p.parquet"), model="m", max_samples=2,
                                indicators=["night_light"], drop=drop))
    messages, images = RecordingGenerator.seen[0]
    row = pq.read_table(split_path(build, "test_unseen")).sort_by("sample_id").slice(0, 1).to_pylist()[0]
    spec = load_manifest(build).indicators["night_light"].spec()
    assert messages[0] == render_messages(row, "night_light", spec=spec, drop=drop)
    assert (images == []) == (drop == "image")
    assert P.read_settings(out)["drop"] == drop


@pytest.mark.parametrize("argv, message", [
    (["--backend", "transformers"], "needs --model"),
    (["--backend", "knn", "--model", "x"], "uses no model"),
    (["--backend", "gpt"], "choose one of transformers"),
    (["--model", "m", "--samples-per-prompt", "4"], "set --temperature above 0"),
    (["--backend", "mean", "--split", "holdout"], "unknown split"),
    (["--backend", "knn", "--drop", "image"], "reads none"),
    (["--model", "m", "--drop", "audio"], "choose image or text"),
])
def test_predict_usage_errors(build: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                              argv: list[str], message: str) -> None:
    code = main(["predict", "--data", str(build), "--out", str(tmp_path / "p.parquet"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_predict_input_errors_exit_1(build: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["predict", "--data", str(build), "--out", str(tmp_path / "p.parquet"), "--backend", "mean",
                 "--indicators", "gdp"])
    err = capsys.readouterr().err
    assert code == 1 and "gdp not in" in err and err.count("\n") == 1
    (tmp_path / "dir.parquet").mkdir()
    assert main(["predict", "--data", str(build), "--out", str(tmp_path / "dir.parquet"), "--backend", "mean"]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_a_missing_model_is_named_before_anything_is_written(build: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.parquet"
    code = main(["predict", "--data", str(build), "--out", str(out), "--model", "runs/demo-grpo"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "model 'runs/demo-grpo' not found" in err and "`urp-train grpo --config configs/train/demo.yaml`" in err
    assert not list(tmp_path.iterdir())


def test_output_path_is_read_literally(build: Path, tmp_path: Path) -> None:
    """A name with glob characters is a file name, not a pattern."""
    out = tmp_path / "p[1]*.parquet"
    predict(PredictConfig(data=str(build), out=str(out), backend="mean", split="unseen"))
    predict(PredictConfig(data=str(build), out=str(out), backend="mean", split="unseen"))  # resumes
    table = pq.read_table(out)
    assert table.num_rows > 0 and not table.to_pandas().duplicated(["sample_id", "indicator"]).any()


def test_config_file_and_flags(build: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "predict.yaml"
    cfg.write_text(f"data: {build}\nbackend: knn\nk: 3\nsplit: unseen\n")
    out = tmp_path / "p.parquet"
    assert main(["predict", "--config", str(cfg), "--out", str(out), "--k", "2"]) == 0
    assert set(pq.read_table(out)["model"].to_pylist()) == {"knn(k=2)"}  # the flag wins
    cfg.write_text(f"data: {build}\nneighbours: 3\n")
    assert main(["predict", "--config", str(cfg)]) == 2
    assert "unknown option(s) neighbours" in capsys.readouterr().err


def test_parts_left_without_a_batch_do_not_block_a_new_run(build: Path, tmp_path: Path) -> None:
    """A run that failed before its first batch leaves only settings behind: nothing to protect."""
    parts = tmp_path / ".p.parquet.parts"
    parts.mkdir()
    (parts / "settings.json").write_text('{"model": "another"}')
    out = predict(PredictConfig(data=str(build), out=str(tmp_path / "p.parquet"), backend="mean", split="unseen"))
    assert pq.read_table(out).num_rows > 0 and not parts.exists()
