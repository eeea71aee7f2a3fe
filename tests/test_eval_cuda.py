"""GPU-only path of ``urp-eval predict``: the transformers backend in bf16 on CUDA. Skipped without CUDA.

It crosses packages, so it lives here: the random-weight model comes from urp-train's offline
builder (``tiny_model_dir``) and the data from the demo build; urp-eval itself never imports urp-train.
"""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from urp_data.contract import load_manifest, split_path

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_transformers_prediction_runs_in_bf16_on_the_gpu(demo_build: Path, tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    from urp_eval.generators import TransformersGenerator
    from urp_eval.predict import PredictConfig, predict, read_settings

    build = demo_build
    cfg = PredictConfig(data=str(build), out=str(tmp_path / "p.parquet"), backend="transformers",
                        model=str(tiny_model_dir), max_samples=4, max_new_tokens=8, batch_size=4)
    generator = TransformersGenerator(cfg)
    weights = next(generator.model.parameters())
    assert (weights.device.type, weights.dtype) == ("cuda", torch.bfloat16)
    del generator
    out = predict(cfg)
    table = pq.read_table(out)
    unseen = pq.read_table(split_path(build, "test_unseen")).sort_by("sample_id").slice(0, 4)
    assert table.num_rows == sum(4 - unseen[k].null_count for k in load_manifest(build).indicators)
    assert [len(c) for c in table["completions"].to_pylist()] == [1] * table.num_rows
    assert read_settings(out)["backend"] == "transformers"
