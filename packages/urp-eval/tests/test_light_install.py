"""The bias report and the baselines install and run without the build stack or torch.

A fresh virtual environment gets urp-eval's locked dependencies (no extras) and the two
workspace packages, nothing else; the test then predicts with ``knn``, writes a report, and
checks that the heavy libraries are absent, that the Ray predictor's modules import without
them, and that ``urp-data build`` names the extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("rasterio", "osgeo", "geopandas", "osmium", "osmnx", "torch", "transformers", "shapely", "pandas")


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.skip("uv is not on PATH (run the tests with `uv run pytest`)")
    return uv


@pytest.fixture(scope="module")
def light_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv, root = _uv(), tmp_path_factory.mktemp("light")
    req = root / "requirements.txt"
    subprocess.run([uv, "export", "--package", "urp-eval", "--no-dev", "--frozen", "--no-hashes",
                    "--no-emit-workspace", "--no-header", "-o", str(req)], cwd=REPO, check=True, capture_output=True)
    venv = root / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "--python", str(python)]
    for args in (["-r", str(req)], ["--no-deps", str(REPO / "packages/urp-data"), str(REPO / "packages/urp-eval")]):
        res = subprocess.run([*install, "--offline", *args], capture_output=True, text=True, check=False)
        if res.returncode:  # not everything cached: the package index is allowed
            subprocess.run([*install, *args], check=True, capture_output=True)
    return venv


@pytest.mark.slow
def test_report_and_baselines_run_without_the_build_stack(light_env: Path, build: Path, tmp_path: Path) -> None:
    python, urp_eval = light_env / "bin" / "python", light_env / "bin" / "urp-eval"
    probe = f"import importlib.util as u; print(sorted(m for m in {HEAVY!r} if u.find_spec(m)))"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    # `predict --engine ray` needs Ray and urp_data.ray, not the build: its modules import here
    subprocess.run([python, "-c", "import urp_data.ray, urp_eval.predict_ray"], capture_output=True, check=True)
    preds = tmp_path / "knn.parquet"
    env = {**os.environ, "URP_LOG_LEVEL": "WARNING"}
    for argv in (["predict", "--backend", "knn", "--data", str(build), "--split", "unseen", "--out", str(preds)],
                 ["bias-report", "--data", str(build), "--predictions", str(preds), "--out", str(tmp_path / "r"),
                  "--permutations", "9"]):
        res = subprocess.run([urp_eval, *argv], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"summary.json", "groups.parquet", "report.html"}
    res = subprocess.run([light_env / "bin" / "urp-data", "build", "--region", "demo", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "urp-data[build]" in res.stderr
