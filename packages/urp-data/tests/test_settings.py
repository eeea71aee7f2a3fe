"""urp_data.util.settings is the one reference for the URP_* environment: nothing the code reads is missing."""

from __future__ import annotations

import re
from pathlib import Path

from urp_data.util import settings

REPO = Path(__file__).resolve().parents[3]


def test_every_urp_variable_the_code_names_is_documented_in_settings():
    named = set()
    for src in REPO.glob("packages/*/src/**/*.py"):
        named |= set(re.findall(r"\bURP_[A-Z_]*[A-Z]\b", src.read_text()))
    documented = {s.name for s in settings.SETTINGS}
    assert named - documented == set()
    table = settings.__doc__ or ""
    assert all(f"``{name}``" in table for name in documented)


def test_a_setting_is_read_when_asked_for_and_falls_back_to_its_default(monkeypatch, tmp_path):
    from urp_data.util.fs import cache_dir

    monkeypatch.setenv("URP_CACHE_DIR", str(tmp_path))
    assert cache_dir("http") == tmp_path / "http"
    monkeypatch.setenv("URP_CACHE_DIR", "")
    assert cache_dir("http") == Path.home() / ".cache" / "urp" / "http"
    monkeypatch.delenv("URP_REGIONS_DIR", raising=False)
    assert settings.REGIONS_DIR.get() is None
