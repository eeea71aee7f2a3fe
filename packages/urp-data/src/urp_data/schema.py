"""The URP data contract: columns, Arrow schema, build layout, prompts and answer parsing.

Everything that training (``urp_train``) and evaluation (``urp_eval``) need to agree on
lives here, so that neither imports the other. Coordinates are WGS84 degrees and are
always written in the order the name says: ``lat, lon`` in columns and prompts,
``lon, lat`` only where a geometry library (shapely, GeoJSON) requires x, y.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

SPLITS: tuple[str, ...] = ("train", "val", "test_seen", "test_unseen")
"""Split names, in the order they are written."""

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "seen": ("test_seen",),
    "unseen": ("test_unseen",),
    "test": ("test_seen", "test_unseen"),
    "all": SPLITS,
}

MANIFEST_NAME = "manifest.json"
SCORE_MAX = 9.9
"""Answers are scores from 0.0 to SCORE_MAX (GeoLLM / Urban-R1 convention)."""

BASE_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "h3_cell",
    "lat",
    "lon",
    "region",
    "group",
    "country",
    "split",
    "image",
    "address",
    "nearby_places",
    "geometry",
)

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
"""The Hugging Face ``datasets`` Image feature layout, so ``load_dataset`` decodes chips to PIL."""

PLACE_TYPE = pa.struct(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("distance_km", pa.float64()),
        ("direction", pa.string()),
    ]
)

COMPASS_8 = ("North", "North-East", "East", "South-East", "South", "South-West", "West", "North-West")


class SchemaError(ValueError):
    """A file or a value does not follow the URP data contract."""


@dataclass(frozen=True)
class IndicatorSpec:
    """How an indicator is named to the model; units are those of the raw column."""

    name: str
    description: str
    unit: str = ""


KNOWN_INDICATORS: dict[str, IndicatorSpec] = {
    s.name: s
    for s in (
        IndicatorSpec("population", "population", "people"),
        IndicatorSpec("gdp", "economic activity (GDP)", "USD"),
        IndicatorSpec("gdp_per_capita", "GDP per capita", "USD per person"),
        IndicatorSpec("night_light", "night-time light intensity", "radiance (DN)"),
        IndicatorSpec("carbon", "carbon emissions", "t CO2"),
        IndicatorSpec("poverty", "poverty level", "index"),
        IndicatorSpec("house_price", "house price", "currency per m2"),
        IndicatorSpec("census_count", "census count of residents", "people"),
    )
}


def indicator_spec(name: str, description: str | None = None, unit: str | None = None) -> IndicatorSpec:
    """Spec for ``name``: the known one, with the description or unit overridden if given."""
    base = KNOWN_INDICATORS.get(name, IndicatorSpec(name, name.replace("_", " ")))
    return IndicatorSpec(name, description or base.description, unit if unit is not None else base.unit)


INDICATOR_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,63}"
"""Indicator names: a letter, then letters, digits or ``_`` (64 at most); they become column names."""
_INDICATOR_NAME_RE = re.compile(INDICATOR_NAME_PATTERN)

RESERVED_NAMES: tuple[str, ...] = (*BASE_COLUMNS, "indicator", "score", "prediction", "completions", "n_parsed",
                                   "model", "backend", "grp", "truth", "pred", "anchor")
"""Column names of the contract's files (splits, predictions) and of the report's SQL: not indicator names."""


def check_indicator_names(names: Sequence[str]) -> None:
    """Raise SchemaError unless every name matches :data:`INDICATOR_NAME_PATTERN` and none collide.

    Collisions are checked ignoring case, with each other and with :data:`RESERVED_NAMES`:
    SQL engines (DuckDB) and some file systems treat ``Population`` and ``population`` as one
    name, so two such columns would be scored against each other.
    """
    seen: dict[str, str] = {n.lower(): n for n in RESERVED_NAMES}
    for name in names:
        if not isinstance(name, str) or not _INDICATOR_NAME_RE.fullmatch(name):
            raise SchemaError(f"indicator name {name!r} is not allowed: use a letter, then letters, digits or "
                              "'_' (at most 64), e.g. night_light")
        other = seen.get(name.lower())
        if other is not None:
            what = "a column of the data contract" if other in RESERVED_NAMES else "another indicator"
            raise SchemaError(f"indicator name {name!r} collides with {what}, {other!r} (names are compared "
                              "ignoring case); rename it")
        seen[name.lower()] = name


def arrow_schema(indicators: Sequence[str]) -> pa.Schema:
    """The Arrow schema of a split file with these indicator columns (float64, nullable).

    ``geometry`` is the chip footprint as WKB in EPSG:4326 (lon/lat axis order), declared in
    GeoParquet ``geo`` metadata so geopandas, DuckDB and QGIS read it as geometry.
    """
    fields = [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("h3_cell", pa.string(), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("country", pa.string()),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image", IMAGE_TYPE),
        pa.field("address", pa.string()),
        pa.field("nearby_places", pa.list_(PLACE_TYPE)),
    ]
    check_indicator_names(indicators)
    fields += [pa.field(name, pa.float64()) for name in indicators]
    fields.append(pa.field("geometry", pa.binary()))
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                # no "crs" key: GeoParquet then means OGC:CRS84 (lon/lat WGS84); null would mean unknown
            }
        },
    }
    hf = {"info": {"features": {f.name: _hf_feature(f.name, f.type) for f in fields}}}
    return pa.schema(fields, metadata={b"geo": json.dumps(geo).encode(), b"huggingface": json.dumps(hf).encode()})


def _hf_feature(name: str, typ: pa.DataType) -> dict[str, Any]:
    """Hugging Face ``datasets`` feature metadata, so ``load_dataset("parquet")`` decodes ``image`` to PIL."""
    if name == "image":
        return {"_type": "Image"}
    if pa.types.is_list(typ):
        inner = typ.value_type
        return {"feature": {f.name: _hf_feature(f.name, f.type) for f in inner}, "_type": "List"}
    return {"dtype": str(typ).replace("double", "float64"), "_type": "Value"}


def indicator_columns(schema: pa.Schema) -> list[str]:
    """Indicator columns of a split file: every float64 column that is not a base column.

    Raises SchemaError when their names break :func:`check_indicator_names` (a file not
    written by ``urp-data build``, or edited since).
    """
    names = [f.name for f in schema if f.name not in BASE_COLUMNS and pa.types.is_floating(f.type)]
    check_indicator_names(names)
    return names


def resolve_splits(name: str) -> tuple[str, ...]:
    """Split names for a user-facing split argument (``unseen`` -> ``test_unseen`` ...)."""
    if name in SPLITS:
        return (name,)
    if name in SPLIT_ALIASES:
        return SPLIT_ALIASES[name]
    raise SchemaError(f"unknown split {name!r}; choose one of {', '.join(SPLITS + tuple(SPLIT_ALIASES))}")


def split_path(build_dir: str | Path, split: str) -> Path:
    """Path of one split's Parquet file inside a build folder (``<out>/<region>``)."""
    if split not in SPLITS:
        raise SchemaError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return Path(build_dir) / f"{split}.parquet"


# --------------------------------------------------------------------------- score scale


@dataclass(frozen=True)
class ScoreScale:
    """Maps raw indicator values to 0.0–SCORE_MAX scores and back.

    Fitted on the train split only: ``quantiles`` are the train values at 0, 1, ..., 100
    percent. A value's score is its empirical percentile times SCORE_MAX / 100, so scores
    are uniform on train whatever the raw distribution (population and night light are
    heavily skewed). ``to_value`` inverts by linear interpolation between quantiles.
    """

    quantiles: tuple[float, ...]

    @classmethod
    def fit(cls, values: Sequence[float] | np.ndarray, n: int = 101) -> ScoreScale:
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            raise SchemaError("cannot fit a score scale on no finite values")
        return cls(tuple(float(q) for q in np.quantile(arr, np.linspace(0, 1, n))))

    def _grid(self) -> np.ndarray:
        return np.linspace(0.0, SCORE_MAX, len(self.quantiles))

    def breakpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, scores) of the piecewise-linear value -> score map: the unique quantiles, each
        with the mean score of its tied run (reports compute scores in SQL from these)."""
        uq, inv = np.unique(np.asarray(self.quantiles), return_inverse=True)
        return uq, np.bincount(inv, self._grid()) / np.bincount(inv)

    def to_score(self, value: float | np.ndarray) -> Any:
        """Score(s) in [0, SCORE_MAX]; a value equal to a run of tied quantiles gets their mean score."""
        uq, grid = self.breakpoints()
        v = np.asarray(value, dtype=np.float64)
        out = np.where(np.isfinite(v), np.interp(v, uq, grid), np.nan)
        return float(out) if out.ndim == 0 else out

    def to_value(self, score: float | np.ndarray) -> Any:
        """Raw value(s) for score(s); scores outside [0, SCORE_MAX] are clipped."""
        s = np.clip(np.asarray(score, dtype=np.float64), 0.0, SCORE_MAX)
        out = np.interp(s, self._grid(), np.asarray(self.quantiles))
        out = np.where(np.isfinite(np.asarray(score, dtype=np.float64)), out, np.nan)
        return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- manifest


@dataclass
class IndicatorInfo:
    """What the manifest records for one indicator: provenance, honesty flags and the fitted score scale.

    ``resolution_km`` is the ground size of the source's smallest unit (a pixel, a typical
    polygon; None when it is a whole country), ``radius_km`` the radius a label is pooled over
    (None when it is not pooled). ``derived_from_prompt`` is true when the label is computed
    from the same inputs the prompt shows (e.g. GeoNames population and the nearby-places
    list): a model can then score well by reading the prompt, not the place. The defaults
    let manifests written before these fields load.
    """

    name: str
    description: str
    unit: str
    source: str
    resolution: str
    licence: str = ""
    scale: list[float] | None = None
    resolution_km: float | None = None
    radius_km: float | None = None
    derived_from_prompt: bool = False

    def support_km(self) -> float | None:
        """Ground distance over which one label pools its inputs: the larger of the source
        resolution and the aggregation diameter (two disks of radius r share inputs up to 2r apart)."""
        parts = [v for v in (self.resolution_km, 2 * self.radius_km if self.radius_km else None) if v]
        return max(parts) if parts else None

    def warning(self) -> str | None:
        """A one-line caveat for reports, or None."""
        if self.derived_from_prompt:
            return (f"{self.name} is derived from what the prompt shows ({self.source}); "
                    "good scores may come from reading the prompt, not the place")
        return None

    def score_scale(self) -> ScoreScale | None:
        return ScoreScale(tuple(self.scale)) if self.scale else None

    def spec(self) -> IndicatorSpec:
        """How the indicator is named in prompts: training and evaluation both render from this."""
        return IndicatorSpec(self.name, self.description, self.unit)


@dataclass
class Manifest:
    """``manifest.json`` of a build: what was built from what, and how to read it back."""

    region: str
    resolution: int
    indicators: dict[str, IndicatorInfo]
    config: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    build_time: str = ""
    notes: list[str] = field(default_factory=list)
    group_labels: dict[str, str] = field(default_factory=dict)
    """Readable names of geographic groups (``PRY-86a95ec07ffffff`` -> ``PRY · Alto Paraná · Ciudad del Este``)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        inds = {k: IndicatorInfo(**v) for k, v in d.get("indicators", {}).items()}
        rest = {k: v for k, v in d.items() if k != "indicators" and k in cls.__dataclass_fields__}
        return cls(indicators=inds, **rest)


def load_manifest(build_dir: str | Path) -> Manifest:
    """Read ``<build_dir>/manifest.json``; a clear error when it is missing or not a manifest."""
    path = Path(build_dir) / MANIFEST_NAME
    if not path.is_file():
        raise SchemaError(f"{path} not found: is {build_dir} a build folder written by `urp-data build`?")
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise SchemaError(f"{path} is not a valid urp manifest ({exc}); rebuild the region") from exc


# --------------------------------------------------------------------------- prompts

SYSTEM_PROMPT = (
    "You are an urban analyst. You estimate socioeconomic indicators of a location from a "
    "satellite image and a description of its surroundings."
)


def compass_direction(bearing_deg: float) -> str:
    """8-point compass word for a bearing in degrees clockwise from north."""
    return COMPASS_8[int(((bearing_deg % 360) + 22.5) // 45) % 8]


def _places_lines(places: Sequence[Mapping[str, Any]] | None) -> list[str]:
    lines = []
    for p in places or ():
        lines.append(f"{p['distance_km']:.1f} km {p['direction']}: {p['name']}")
    return lines


Drop = Literal["image", "text"] | None


def render_prompt(row: Mapping[str, Any], indicator: str, *, spec: IndicatorSpec | None = None,
                  drop: Drop = None) -> str:
    """The user prompt for (row, indicator), in the GeoLLM / Urban-R1 style.

    ``drop="text"`` keeps only the coordinates (the paper's image-only ablation); ``drop="image"``
    changes nothing here (the caller leaves the image out of the message).
    """
    spec = spec or indicator_spec(indicator)
    lines = [f"Coordinates: ({row['lat']:.5f}, {row['lon']:.5f})"]  # lat, lon order
    if drop != "text":
        lines.append(f'Address: "{row.get("address") or "unknown"}"')
        places = _places_lines(row.get("nearby_places"))
        lines.append("Nearby Places:")
        lines.append('"')
        lines.extend(places or ["none known"])
        lines.append('"')
    unit = f" (measured in {spec.unit})" if spec.unit else ""
    lines.append("")
    lines.append(
        f"Task: estimate the {spec.description}{unit} of this area on a scale from 0.0 (lowest) to "
        f"{SCORE_MAX} (highest), relative to other areas of this dataset."
    )
    lines.append(
        "First reason about the evidence inside <think> </think> tags, then give only the score "
        "with one decimal inside <answer> </answer> tags, e.g. <think>...</think><answer>5.3</answer>."
    )
    return "\n".join(lines)


def render_messages(row: Mapping[str, Any], indicator: str, *, spec: IndicatorSpec | None = None,
                    drop: Drop = None) -> list[dict[str, Any]]:
    """Chat messages (TRL conversational format) for (row, indicator): an image slot unless dropped."""
    content: list[dict[str, Any]] = []
    if drop != "image":
        content.append({"type": "image"})
    content.append({"type": "text", "text": render_prompt(row, indicator, spec=spec, drop=drop)})
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": content},
    ]


def render_answer(score: float, reasoning: str = "") -> str:
    """A completion in the answer format: the target for SFT, a reference for rewards."""
    return f"<think>{reasoning}</think><answer>{score:.1f}</answer>"


# --------------------------------------------------------------------------- answers

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)  # ASCII digits only: "６" is not a number here
_TAG_RE = re.compile(r"<(/?)(think|answer)>", re.IGNORECASE)
_BLOCK_RE = re.compile(rf"\s*(?:{_NUMBER})\s*[^<\d]{{0,20}}", re.ASCII)
MAX_ANSWER_CHARS = 200_000
"""Longer completions are not parsed (bounded time on runaway generations)."""

# Answers are found by one scan for the four tags rather than by a lazy ``<answer>(.*?)</answer>``
# search: that search restarts at every unmatched ``<answer>`` and takes quadratic time on a
# completion that repeats the tag. Every function below is linear in the completion's length.


def _tags(completion: str) -> list[tuple[str, int, int]]:
    """The think/answer tags of a completion as (tag as written, start, end), in order."""
    return [(m.group(0), m.start(), m.end()) for m in _TAG_RE.finditer(completion)]


def parse_number(text: str) -> float | None:
    """The first number in ``text`` as a finite float, or None.

    Accepts signs, decimals, exponents and thousands separators ("1,234.5"); rejects
    inf/NaN and overflowing literals such as 1e309. Text only: never evaluated.
    """
    if not isinstance(text, str):
        return None
    m = _NUMBER_RE.search(text)
    if m is None:
        return None
    try:
        value = float(m.group(0).replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _answer_block(completion: str, tags: list[tuple[str, int, int]]) -> str | None:
    opens = [t for t in tags if t[0].lower() == "<answer>"]
    closes = [t for t in tags if t[0].lower() == "</answer>"]
    if len(opens) != 1 or len(closes) != 1 or opens[0][2] > closes[0][1]:
        return None  # none, several (ambiguous) or nested answer blocks
    return completion[opens[0][2]:closes[0][1]]


def parse_answer(completion: str) -> float | None:
    """The score inside the single ``<answer>…</answer>`` of a completion, or None (unparsed).

    None when the completion is not text, is too long, has no answer block, has more than
    one or nested ones (ambiguous), or the block's first number is not finite or lies
    outside the 0.0–SCORE_MAX scale: such answers count as unparsed everywhere (rewards,
    predictions, metrics), so one runaway ``1e300`` cannot dominate a mean. Tags match in
    any case. Linear time in the completion's length.
    """
    if not isinstance(completion, str) or len(completion) > MAX_ANSWER_CHARS:
        return None
    block = _answer_block(completion, _tags(completion))
    value = parse_number(block) if block is not None else None
    return value if value is not None and 0.0 <= value <= SCORE_MAX else None


def is_well_formed(completion: str) -> bool:
    """True iff the completion is exactly ``<think>…</think>`` then ``<answer>`` with one score.

    Lower-case tags, nothing but white space around the two blocks, no other think or
    answer tag in any case, and an answer :func:`parse_answer` accepts. Linear time.
    """
    if not isinstance(completion, str) or len(completion) > MAX_ANSWER_CHARS:
        return False
    tags = _tags(completion)
    if [t[0] for t in tags] != ["<think>", "</think>", "<answer>", "</answer>"]:
        return False
    outside = (completion[:tags[0][1]], completion[tags[1][2]:tags[2][1]], completion[tags[3][2]:])
    if any(part.strip() for part in outside):
        return False
    block = completion[tags[2][2]:tags[3][1]]
    return (_BLOCK_RE.fullmatch(block) is not None and len(_NUMBER_RE.findall(block)) == 1
            and parse_answer(completion) is not None)
