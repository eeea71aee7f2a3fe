"""The dataset card quotes text from region files and online sources (issue 22): a geocoder address that
holds a backtick fence, a ``<script>`` or a ``---`` must stay text, rendered the way the Hub renders
Markdown (markdown-it, CommonMark with tables and raw HTML allowed) and then opened in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from markdown_it import MarkdownIt
from urp_data.contract import SPLITS, Manifest, split_path
from urp_data.outputs.card import render_card

HOSTILE = "Rua ```\n</code><script>console.error('card')</script>\n---\n# not a heading <img src=x onerror=console.error(2)>"


def _hostile_build(demo_build: Path, tmp_path: Path) -> Path:
    build = tmp_path / "demo"
    build.mkdir()
    for f in demo_build.iterdir():
        (build / f.name).write_bytes(f.read_bytes())
    first = next(s for s in SPLITS if pq.read_metadata(split_path(build, s)).num_rows)  # the card's example
    table = pq.read_table(split_path(build, first))
    address = table["address"].to_pylist()
    address[0] = HOSTILE
    pq.write_table(table.set_column(table.schema.get_field_index("address"), "address", pa.array(address, pa.string())),
                   split_path(build, first))
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["config"]["region"]["description"] = HOSTILE
    for info in manifest["indicators"].values():
        info["unit"] = info["licence"] = HOSTILE
    for i in manifest["inputs"]:
        i["licence"] = HOSTILE
    (build / "manifest.json").write_text(json.dumps(manifest))
    return build


@pytest.mark.slow
def test_quoted_text_stays_text_in_the_card(demo_build: Path, tmp_path: Path, browser) -> None:
    build = _hostile_build(demo_build, tmp_path)
    card = render_card(build, Manifest.from_dict(json.loads((build / "manifest.json").read_text())))
    body = card.split("\n---\n", 1)[1]  # after the YAML header
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    tokens = md.parse(body)
    flat = [t for tok in tokens for t in [tok, *(tok.children or [])]]
    assert not [t for t in flat if t.type in ("html_block", "html_inline")]  # no raw HTML reached the page
    assert not [t for t in tokens if t.type == "hr"]  # the quoted "---" is no rule
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[1:] == ["Splits", "How it was built", "Sources", "Indicators", "Prompt format", "Citation"]
    prompt = next(t for t in tokens if t.type == "fence" and t.info == "text")
    assert HOSTILE in prompt.content  # the whole address stays inside the prompt's code block
    page = tmp_path / "card.html"
    page.write_text(f"<!DOCTYPE html><html><body>{md.render(body)}</body></html>")
    rendered = browser(page, ["h1"])
    assert rendered.errors == []  # no injected script ran, no injected image handler fired
