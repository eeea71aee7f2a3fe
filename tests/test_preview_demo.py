"""The demo build as a Hugging Face dataset (its card) and as a preview page rendered by a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from urp_data.cli import main
from urp_data.contract import SPLITS, load_manifest, render_prompt, split_path
from urp_data.outputs.card import text as card_text

SPLIT_RGB = {"train": (31, 119, 180), "test_unseen": (214, 39, 40)}
BUFFER_RGB = (208, 208, 208)  # rgba(120, 120, 120, 0.35) over white


def near(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tol).sum())


def test_card_makes_the_build_a_dataset_with_four_named_splits(demo_build: Path, tmp_path: Path) -> None:
    import datasets

    m = load_manifest(demo_build)
    ds = datasets.load_dataset(str(demo_build), cache_dir=str(tmp_path / "hf"))
    assert list(ds) == list(SPLITS)  # without the card's configs, datasets would merge test_* into "test"
    assert {s: ds[s].num_rows for s in SPLITS} == m.counts["per_split"]
    img = ds["test_unseen"][0]["image"]
    assert isinstance(img, Image.Image) and img.size == (448, 448) and np.asarray(img).std() > 5

    text = (demo_build / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == list(SPLITS)
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"]
    # GeoNames is CC BY 4.0 and the census tracts come under MIT: two attribution licences, so "other"
    assert meta["license"] == "other"
    for source in m.inputs:  # as the card quotes a string from a source: one line, Markdown escaped
        assert card_text(source["licence"]) in text
    for name in m.indicators:
        assert f"| `{name}` |" in text
    first = pq.read_table(split_path(demo_build, "train")).slice(0, 1).to_pylist()[0]
    name, info = next(iter(m.indicators.items()))
    assert render_prompt(first, name, spec=info.spec()) in text
    assert "arXiv:2510.16555" in text


def test_groups_have_readable_labels(demo_build: Path) -> None:
    m = load_manifest(demo_build)
    groups = {g for per in m.counts["per_group"].values() for g in per}
    assert set(m.group_labels) == groups
    for g in m.config["unseen_groups"]:
        assert m.group_labels[g].startswith("PRY · Alto Paraná") and "Ciudad del Este" in m.group_labels[g] \
            or "Presidente Franco" in m.group_labels[g]
    assert len(set(m.group_labels.values())) == len(groups)  # distinct: the offset from the place tells them apart
    assert len(m.config["buffer_cells"]) == m.counts["buffer_dropped"] > 0


@pytest.mark.slow
def test_preview_renders_offline_in_chromium(demo_build: Path, tmp_path: Path, browser,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "preview.html"
    assert main(["preview", str(demo_build), "--out", str(out), "--per-split", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = browser(out, ["#map", "#histograms", "#gallery", "#gallery img"],
                   ready="document.querySelectorAll('#map .scatterlayer .point').length > 0")
    assert page.errors == []
    assert page.requests and all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    assert page.images_ok
    (box,) = page.boxes["#map"]
    assert box[2] > 800 and box[3] > 400
    the_map = page.crop(box)
    assert near(the_map, SPLIT_RGB["train"]) > 500 and near(the_map, SPLIT_RGB["test_unseen"]) > 500
    assert near(the_map, BUFFER_RGB, tol=6) > 500  # the dropped buffer cells are shaded
    (hist,) = page.boxes["#histograms"]
    assert near(page.crop(hist), (255, 255, 255)) < 0.97 * hist[2] * hist[3]
    chips = page.boxes["#gallery img"]
    assert len(chips) == 3 * len(SPLITS)
    for chip in chips:
        pixels = page.crop(chip)
        assert pixels.shape[0] > 100 and pixels.std() > 5  # a real picture, not a blank box


def test_preview_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, demo_build: Path) -> None:
    assert main(["preview", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json not found" in err
    (tmp_path / "a-file").write_text("")
    assert main(["preview", str(demo_build), "--out", str(tmp_path / "a-file" / "p.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err
    assert main(["preview", "--build", str(demo_build), "--per-split", "-1"]) == 2
    assert "per_split must be 0 or more" in capsys.readouterr().err
    assert main(["preview"]) == 2 and "missing --build" in capsys.readouterr().err


@pytest.mark.slow
def test_the_browser_check_sees_network_requests_and_errors(tmp_path: Path, browser) -> None:
    page_file = tmp_path / "needs-network.html"
    page_file.write_text('<!DOCTYPE html><html><body><img src="https://example.org/tile.png">'
                         '<script>console.error("broken")</script></body></html>')
    page = browser(page_file, ["img"])
    assert "https://example.org/tile.png" in page.requests
    assert any("broken" in e for e in page.errors) and not page.images_ok


@pytest.mark.slow
def test_hostile_names_stay_text(demo_build: Path, tmp_path: Path, browser) -> None:
    hostile = '<img src="x" onerror="console.error(1)">"</script><script>console.error(2)</script>'
    build = tmp_path / "demo"
    build.mkdir()
    for f in demo_build.iterdir():
        (build / f.name).write_bytes(f.read_bytes())
    unseen = pq.read_table(split_path(build, "test_unseen"))
    address = unseen["address"].to_pylist()
    address[0] = hostile
    pq.write_table(unseen.set_column(unseen.schema.get_field_index("address"), "address",
                                     pa.array(address, pa.string())), split_path(build, "test_unseen"))
    manifest = json.loads((build / "manifest.json").read_text())
    group = unseen["group"][0].as_py()
    manifest["group_labels"][group] = hostile
    (build / "manifest.json").write_text(json.dumps(manifest))
    assert main(["preview", str(build), "--per-split", "1"]) == 0
    page = browser(build / "preview.html", ["#gallery img"],
                   ready="document.querySelectorAll('#map .scatterlayer .point').length > 0")
    assert page.errors == [] and page.images_ok  # no injected script ran, no injected image loaded
    assert all(u.startswith(("file:", "data:")) for u in page.requests) and not any(u.endswith("/x")
                                                                                      for u in page.requests)
    assert len(page.boxes["#gallery img"]) == len(SPLITS)
