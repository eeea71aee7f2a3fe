"""docs/regions.md's generated reference matches the config dataclasses (scripts/region_reference.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "region_reference.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_committed_reference_is_up_to_date():
    out = _run("--check")
    assert out.returncode == 0, out.stderr


def test_a_stale_reference_is_caught_and_only_the_generated_part_is_rewritten(tmp_path):
    page = tmp_path / "regions.md"
    page.write_text("# Regions\n\nHand-written.\n\n<!-- generated: region reference -->\nold\n"
                    "<!-- end generated -->\n\nMore hand-written text.\n")
    stale = _run("--check", "--page", str(page))
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert _run("--page", str(page)).returncode == 0
    text = page.read_text()
    assert text.startswith("# Regions\n\nHand-written.\n") and text.endswith("More hand-written text.\n")
    assert "| `footprint_m` | a finite number > 0 and <= 1000000 |" in text and "\nold\n" not in text
    assert _run("--check", "--page", str(page)).returncode == 0
