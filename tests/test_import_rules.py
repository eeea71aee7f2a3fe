"""The import rule of pyproject.toml's import-linter contracts: kept by the code, and broken by one arrow
that runs back up.

``lint-imports`` runs on a copy of the three packages' sources (first on ``PYTHONPATH``, so the copy
is what it reads), once as they are and once with a single bad import added.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for pkg in ("urp_data", "urp_train", "urp_eval"):
        shutil.copytree(ROOT / "packages" / pkg.replace("_", "-") / "src" / pkg, src / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return src


def _lint(tmp_path: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--no-cache", str(tmp_path / "pyproject.toml")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _add_import(module: Path, line: str) -> None:
    text = module.read_text()
    module.write_text(text.replace("from __future__ import annotations\n", f"from __future__ import annotations\n\n{line}\n", 1))


def test_the_code_keeps_every_contract(tmp_path):
    res = _lint(tmp_path, _copy(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # the contract reaching up into the build
    ("urp_data/contract/columns.py", "import urp_data.build.run", "urp_data layers"),
    # a source reaching up into the build (the old cycle: budget -> pipeline -> sources)
    ("urp_data/sources/imagery/xyz.py", "from urp_data.build import plan", "urp_data layers"),
    # evaluation reaching past the contract into the build stack
    ("urp_eval/metrics.py", "from urp_data.sources import vectors", "urp-train and urp-eval import only"),
    # training importing evaluation
    ("urp_train/rewards.py", "import urp_eval.metrics", "never import each other"),
])
def test_one_arrow_back_up_breaks_a_contract(tmp_path, module, line, broken):
    src = _copy(tmp_path)
    _add_import(src / module, line)
    res = _lint(tmp_path, src)
    assert res.returncode == 1, res.stdout + res.stderr
    assert broken in res.stdout.split("Broken contracts")[1]  # the contract this arrow breaks, among those broken
    assert f"{module.removesuffix('.py').replace('/', '.')} -> " in res.stdout  # the report names the bad import
