"""Session fixtures shared by the cross-package tests: a real demo build and a tiny offline VLM."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `demo` region built offline from data/ (the same build as the README's first command)."""
    from urp_data.pipeline import build_region

    return build_region("demo", out=tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2.5-VL-shaped model with the real Qwen2.5 vocabulary, built offline."""
    from urp_train.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")
