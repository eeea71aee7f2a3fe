"""The build's ``README.md``: a Hugging Face dataset card, so a build folder is a dataset as it is.

The YAML front matter maps the four split files to split names (``datasets.load_dataset(build_dir)``
then returns ``train``, ``val``, ``test_seen`` and ``test_unseen`` with decoded images) and gives
the Hub its licence, task and size fields; the body says how the build was made, from what
(every source with its licence), what each indicator means and what a prompt looks like.
Everything comes from the manifest and the split files, so the card never disagrees with them.
"""

from __future__ import annotations

import html
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from urp_data.contract import SPLITS, Manifest, render_prompt, split_path
from urp_data.util.fs import atomic_write_text

CARD_NAME = "README.md"

URBAN_R1_BIBTEX = """@article{wang2025urbanr1,
  title   = {Urban-R1: Reinforced MLLMs Mitigate Geospatial Biases for Urban General Intelligence},
  author  = {Wang, Qiongyan and Zou, Xingchen and Jiang, Yutian and Wen, Haomin and Wei, Jiaheng
             and Wen, Qingsong and Liang, Yuxuan},
  journal = {arXiv preprint arXiv:2510.16555},
  year    = {2025}
}"""

# (pattern in a free-text licence, Hub licence id or None for public domain, restrictiveness):
# 0 public domain, 1 attribution, 2 share-alike, 3 non-commercial.
_LICENCES: tuple[tuple[str, str | None, int], ...] = (
    (r"cc[ -]?by[ -]nc[ -]sa[ -]?4\.0", "cc-by-nc-sa-4.0", 3),
    (r"cc[ -]?by[ -]nc[ -]?4\.0", "cc-by-nc-4.0", 3),
    (r"cc[ -]?by[ -]sa[ -]?4\.0", "cc-by-sa-4.0", 2),
    (r"\bodbl\b", "odbl", 2),
    (r"cc[ -]?by[ -]?4\.0", "cc-by-4.0", 1),
    (r"\bodc[ -]by\b", "odc-by", 1),
    (r"\bmit\b", "mit", 1),
    (r"\bapache", "apache-2.0", 1),
    (r"\bcc0\b", "cc0-1.0", 0),
    (r"\bpddl\b", "pddl", 0),
    (r"public domain", None, 0),
)

_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def classify_licence(text: str) -> tuple[str | None, int] | None:
    """(Hub licence id, restrictiveness) of a free-text licence, or None when not recognised.

    ``"A | B"`` is a choice between licences: the least restrictive recognised one counts.
    """
    options = []
    for part in text.split("|"):
        found = next(((hub, rank) for pat, hub, rank in _LICENCES if re.search(pat, part, re.IGNORECASE)), None)
        if found is None:
            continue
        options.append(found)
    return min(options, key=lambda o: o[1]) if options else None


def dataset_licence(licences: list[str]) -> str:
    """The Hub ``license`` of a build: its most restrictive source licence, or ``other``.

    ``other`` when a source licence is missing or unrecognised, when the most restrictive rank
    holds two different licences (e.g. ODbL and CC BY-SA do not combine into either), or when
    every source is public domain (the Hub has no id for it). The card lists every source.
    """
    found = [f for f in (classify_licence(t) for t in licences) if f is not None]
    if not licences or len(found) < len(licences):
        return "other"
    top = max(rank for _, rank in found)
    ids = {hub for hub, rank in found if rank == top}
    hub = ids.pop() if len(ids) == 1 else None
    return hub or "other"


def size_category(n: int) -> str:
    return next((label for limit, label in _SIZES if n < limit), "n>100M")


def front_matter(manifest: Manifest) -> dict[str, Any]:
    counts = manifest.counts.get("per_split", {})
    licence = dataset_licence([i.get("licence", "") for i in manifest.inputs])
    meta: dict[str, Any] = {
        "pretty_name": f"urp {manifest.region}: urban region profiling",
        "license": licence,
    }
    if licence == "other":
        meta["license_name"] = "mixed: see Sources"
    meta.update({
        "task_categories": ["image-text-to-text", "visual-question-answering"],
        "tags": ["geospatial", "remote-sensing", "satellite-imagery", "urban", "h3", "urban-region-profiling"],
        "size_categories": [size_category(sum(counts.values()))],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": s, "path": split_path(".", s).name} for s in SPLITS]}],
    })
    return meta


def _example(build_dir: Path, manifest: Manifest) -> tuple[str, str, str] | None:
    """(sample id, indicator, rendered prompt) for the first sample of the first non-empty split."""
    if not manifest.indicators:
        return None
    name, info = next(iter(manifest.indicators.items()))
    for s in SPLITS:
        pf = pq.ParquetFile(split_path(build_dir, s))
        if pf.metadata.num_rows:
            row = next(pf.iter_batches(batch_size=1, columns=["sample_id", "lat", "lon", "address",
                                                               "nearby_places"])).to_pylist()[0]
            return row["sample_id"], name, render_prompt(row, name, spec=info.spec())
    return None


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-!|~>])")


def text(v: Any) -> str:
    """``v`` as literal text in Markdown: one line, HTML characters as entities, Markdown punctuation
    backslash-escaped (strings in the card come from region files and online sources)."""
    one = " ".join(str(v).split())
    return _MARKDOWN.sub(r"\\\1", html.escape(one, quote=False))


def code(v: Any) -> str:
    """``v`` as an inline code span, delimited by more backticks than any run inside it."""
    one = " ".join(str(v).split())
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", one)), default=0) + 1)
    return f"{ticks} {one} {ticks}" if "`" in one else f"{ticks}{one}{ticks}"


def fenced(body: str, lang: str) -> list[str]:
    """``body`` in a fenced code block whose fence is longer than any backtick run inside it."""
    ticks = "`" * max(3, max((len(r) for r in re.findall(r"`+", body)), default=0) + 1)
    return [ticks + lang, body, ticks]


def _cell(v: Any) -> str:
    return text(v) if v not in (None, "") else "–"


def _derived_from_prompt(spec: dict[str, Any]) -> str:
    """Whether the prompt text carries the indicator's own source (a shortcut the model can read)."""
    if spec.get("type") == "geonames_population":
        return "yes: summed from the GeoNames places the address and nearby places come from"
    if spec.get("method") == "by_country":
        return "yes: one value per country, and the address names the country"
    return "no"


def _how_built(manifest: Manifest) -> list[str]:
    """The card's bullet points on sampling, chips, splits and scores, from the manifest's region config."""
    region = manifest.config.get("region", {})
    sampling, splits, chip = region.get("sampling", {}), region.get("splits", {}), region.get("chip", {})
    rule = manifest.config.get("splits", {})  # the buffer and block rule the build used (urp_data.sampling.splits)
    counts = manifest.counts
    requested = f", {sampling['samples']} samples requested" if sampling.get("samples") else ""
    held_out = "".join(f" ({what} {', '.join(splits[key])})" for what, key in
                       (("countries", "unseen_countries"), ("continents", "unseen_continents")) if splits.get(key))
    size = chip.get("size_px", "?")
    return [
        (f"- **Region**: {code(manifest.region)}; H3 resolution {manifest.resolution}; sampling mode "
        f"{code(sampling.get('mode', '?'))}{text(requested)}, seed {text(sampling.get('seed'))}."),
        (f"- **Chips**: {text(size)}×{text(size)} px over ~{text(chip.get('footprint_m', '?'))} m, "
        f"{text(chip.get('format', '?'))}; "
        f"cells without imagery skipped: {counts.get('skipped_no_imagery', 0)}"
        + "".join(f"; failed and skipped, {text(reason)}: {text(n)}"
                  for reason, n in counts.get("skipped_failed", {}).items())
        + "."
        + (f" {text(sc['chips'])} chips were cut from satellite scenes acquired {text(sc['first_acquired'])} to "
           f"{text(sc['last_acquired'])} (median cloud cover {text(sc['median_cloud_cover'])} %); each row names its "
           "scene in `scene_id`, `scene_datetime` and `scene_cloud_cover`." if (sc := counts.get("scenes")) else "")),
        (f"- **Splits**: grouped by {code(splits.get('group_by', '?'))}; `test_unseen` is "
        f"{len(manifest.config.get('unseen_groups', []))} whole group(s){text(held_out)} that never appear in train or "
        f"val; the other cells go to val / test_seen / train by a seeded hash of their H3 block at resolution "
        f"{text(rule.get('block_resolution', '?'))} (fractions {text(splits.get('val_fraction'))} / "
        f"{text(splits.get('test_seen_fraction'))}); held-out cells whose chip could touch a train chip, and seen "
        f"cells within {text(rule.get('buffer_km', '?'))} km of an unseen cell ({text(rule.get('buffer_reason', '?'))}), "
        "are dropped "
        f"({counts.get('buffer_dropped', 0)} cells)."),
        ("- **Score scale**: indicators are asked as 0.0–9.9 scores, the percentile on the train split "
        "(the quantiles are in `manifest.json`)."),
    ]


def _intro(manifest: Manifest) -> list[str]:
    """The YAML front matter, the title and what the dataset is, with how to load it."""
    region = manifest.config.get("region", {})
    try:
        version = metadata.version("urp-data")
    except metadata.PackageNotFoundError:
        version = "unknown"
    front = yaml.safe_dump(front_matter(manifest), sort_keys=False, allow_unicode=True).strip()
    lines = ["---", front, "---", "", f"# urp dataset {code(manifest.region)}", ""]
    if region.get("description"):
        lines += [text(region["description"]), ""]
    return [
        *lines,
        ("Urban region profiling samples (one per H3 cell): a satellite image chip, an address and nearby "
        "places, and indicator values, in geographic splits for training and for measuring geographic bias "
        f"(the Urban-R1 setting). Built by urp's `urp-data build` (urp-data {version}) on "
        f"{manifest.build_time or 'an unknown date'}."),
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("path/to/this/folder")  # or the Hub repository id',
        'ds["test_unseen"][0]["image"]  # a PIL image',
        "```",
        "",
    ]


def _splits(manifest: Manifest) -> list[str]:
    counts = manifest.counts.get("per_split", {})
    return ["## Splits", "", "| split | samples |", "|---|---|", *[f"| {s} | {counts.get(s, 0)} |" for s in SPLITS], ""]


def _sources(manifest: Manifest) -> list[str]:
    """The inputs with their roles and licences, and the attribution they ask for."""
    lines = ["## Sources", "", "| role | source | licence |", "|---|---|---|"]
    for i in manifest.inputs:
        source = Path(str(i.get("path"))).name if i.get("sha256") else i.get("path")  # a file: its name only
        lines.append(f"| {_cell(i.get('role'))} | {_cell(source)} | {_cell(i.get('licence'))} |")
    return [
        *lines,
        "",
        ("Attribution: satellite imagery, gazetteer, POI and indicator data belong to the sources above; "
        "keep their licence terms and credit them when you redistribute this dataset "
        "(GeoNames: CC BY 4.0, geonames.org; OpenStreetMap: © OpenStreetMap contributors, ODbL)."),
        "",
    ]


def _indicators(manifest: Manifest) -> list[str]:
    lines = ["## Indicators", "",
             "| indicator | description | unit | resolution | source | licence | derived from the prompt |",
             "|---|---|---|---|---|---|---|"]
    specs = {s.get("name"): s for s in manifest.config.get("region", {}).get("indicators", [])}
    for name, info in manifest.indicators.items():
        source = Path(info.source).name if "/" in info.source else info.source
        lines.append(f"| {code(name)} | {_cell(info.description)} | {_cell(info.unit)} | {_cell(info.resolution)} | "
                     f"{_cell(source)} | {_cell(info.licence)} | {_derived_from_prompt(specs.get(name, {}))} |")
    return [*lines, "", "Missing values are null, never 0.", ""]


def _prompt_format(build_dir: Path, manifest: Manifest) -> list[str]:
    """The rendered prompt of one real sample, and the answer format."""
    lines = ["## Prompt format", ""]
    example = _example(build_dir, manifest)
    if example:
        sid, ind, prompt = example
        lines += [("Each (sample, indicator) pair is one question; the user turn holds the image and this text "
                  f"(`urp_data.contract.render_prompt`, here for {code(sid)} and {code(ind)}):"),
                  "", *fenced(prompt, "text"), "",
                  "The answer is `<think>…</think><answer>5.3</answer>`: a score from 0.0 to 9.9.", ""]
    return lines


def render_card(build_dir: str | Path, manifest: Manifest) -> str:
    """The dataset card of the build in ``build_dir`` (its split files must be written)."""
    lines = [*_intro(manifest), *_splits(manifest), "## How it was built", "", *_how_built(manifest), "",
             *_sources(manifest), *_indicators(manifest), *_prompt_format(Path(build_dir), manifest),
             "## Citation", "", "Cite Urban-R1 for the method and credit the sources listed above:", "",
             "```bibtex", URBAN_R1_BIBTEX, "```", ""]
    return "\n".join(lines)


def write_card(build_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``README.md`` into a build folder (atomically: temp name, then rename)."""
    path = Path(build_dir) / CARD_NAME
    atomic_write_text(path, render_card(build_dir, manifest))
    return path
