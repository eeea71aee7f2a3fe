"""scripts/check_docs.py on small pages: markers, links and anchors, and the order and stop of its blocks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_docs", REPO / "scripts" / "check_docs.py")
assert spec is not None and spec.loader is not None
check_docs = importlib.util.module_from_spec(spec)
sys.modules["check_docs"] = check_docs  # dataclasses look their module up there
spec.loader.exec_module(check_docs)


def _page(root: Path, name: str, lines: list[str]) -> Path:
    page = root / name
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")
    return page


def test_blocks_take_their_lane_from_the_marker_before_the_fence(tmp_path):
    page = _page(tmp_path, "a.md", [
        "# A", "```bash", "echo fast", "```", "<!-- docs: slow -->", "```bash", "echo slow", "```",
        "<!-- docs: skip gpu -->", "```bash", "echo gpu", "```", "```yaml", "a: 1", "```",
        "<!-- docs: skip -->", "text between: the marker belongs to no fence", "```bash", "echo also fast", "```"])
    found = check_docs.blocks(page)
    assert [(b.line, b.lane, b.reason, b.code) for b in found] == [
        (2, "fast", "", "echo fast\n"), (6, "slow", "", "echo slow\n"), (10, "skip", "gpu", "echo gpu\n"),
        (18, "fast", "", "echo also fast\n")]
    for marker in ("<!-- docs: skip -->", "<!-- docs: slwo -->", "<!-- docs: slow today -->"):
        _page(tmp_path, "b.md", [marker, "```bash", "echo", "```"])
        with pytest.raises(check_docs.DocsError, match="unknown marker"):
            check_docs.blocks(tmp_path / "b.md")


def test_links_anchors_and_named_paths_must_exist(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("")
    _page(tmp_path, "docs/guide.md", ["# The guide", "## Step `two`: go!", "```bash", "# Not a heading", "```",
                                      "## Step `two`: go!"])
    page = _page(tmp_path, "README.md", [
        "# Top", "[ok](docs/guide.md#step-two-go) [second](docs/guide.md#step-two-go-1) [up](#top)",
        "[gone](docs/missing.md) [bad anchor](docs/guide.md#not-a-heading) ![img](docs/pic.png)",
        "[web](https://example.org/nowhere) `configs/demo.yaml` `configs/train/RECIPE_SET.yaml`",
        "uv run x --config configs/other.yaml --out build/configs/x"])
    assert check_docs.broken_links(page, tmp_path) == [
        "README.md: link to docs/missing.md: docs/missing.md does not exist",
        "README.md: link to docs/guide.md#not-a-heading: no heading #not-a-heading in docs/guide.md",
        "README.md: link to docs/pic.png: docs/pic.png does not exist",
        "README.md: names configs/other.yaml, which does not exist"]


def test_the_repository_pages_have_no_broken_links():
    assert [p for page in check_docs.link_pages(REPO) for p in check_docs.broken_links(page, REPO)] == []


def test_blocks_run_in_order_and_the_first_failure_stops_the_run(tmp_path, capsys):
    page = _page(tmp_path, "p.md", [
        "```bash", "echo one > order", "```", "<!-- docs: skip needs a GPU -->", "```bash", "echo gpu >> order", "```",
        "<!-- docs: slow -->", "```bash", "echo slow >> order", "```",
        "```bash", "echo two >> order", "false", "echo after-false >> order", "```", "```bash", "echo three >> order",
        "```"])
    todo = check_docs.blocks(page)
    env = check_docs.clean_env(tmp_path / "home")
    assert not check_docs.run_all(todo, {"fast"}, tmp_path, env, tmp_path)
    assert (tmp_path / "order").read_text() == "one\ntwo\n"
    out, err = capsys.readouterr()
    assert "skip  " in out and "needs a GPU" in out and "slow; runs with --all" in out
    assert f"FAIL  {page}:12" in err
    (tmp_path / "order").unlink()
    todo = [b for b in todo if "false" not in b.code]
    assert check_docs.run_all(todo, {"fast", "slow"}, tmp_path, env, tmp_path)
    assert (tmp_path / "order").read_text() == "one\nslow\nthree\n"
