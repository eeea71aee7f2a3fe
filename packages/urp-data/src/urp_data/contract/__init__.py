"""The URP data contract: columns, Arrow schema, build layout, score scale, manifest, prompts, answers.

Everything that training (``urp_train``) and evaluation (``urp_eval``) need to agree on lives
here, so that neither imports the other; both import these names from ``urp_data.contract``.
Coordinates are WGS84 degrees, always written in the order the name says: ``lat, lon`` in
columns and prompts, ``lon, lat`` only where a geometry library (shapely, GeoJSON) requires x, y.
"""

from __future__ import annotations

from urp_data.contract.answers import MAX_ANSWER_CHARS, is_well_formed, parse_answer, parse_number
from urp_data.contract.columns import (
    BASE_COLUMNS,
    IMAGE_TYPE,
    INDICATOR_NAME_PATTERN,
    KNOWN_INDICATORS,
    MANIFEST_NAME,
    PLACE_TYPE,
    RESERVED_NAMES,
    SCORE_MAX,
    SPLIT_ALIASES,
    SPLITS,
    IndicatorSpec,
    arrow_schema,
    check_indicator_names,
    indicator_columns,
    indicator_spec,
    resolve_splits,
    split_path,
)
from urp_data.contract.manifest import IndicatorInfo, Manifest, load_manifest
from urp_data.contract.prompts import (
    COMPASS_8,
    SYSTEM_PROMPT,
    compass_direction,
    render_answer,
    render_messages,
    render_prompt,
)
from urp_data.contract.scale import ScoreScale
from urp_data.errors import SchemaError

__all__ = [
    "BASE_COLUMNS", "COMPASS_8", "IMAGE_TYPE", "INDICATOR_NAME_PATTERN", "KNOWN_INDICATORS", "MANIFEST_NAME",
    "MAX_ANSWER_CHARS", "PLACE_TYPE", "RESERVED_NAMES", "SCORE_MAX", "SPLITS", "SPLIT_ALIASES", "SYSTEM_PROMPT",
    "IndicatorInfo", "IndicatorSpec", "Manifest", "SchemaError", "ScoreScale", "arrow_schema",
    "check_indicator_names", "compass_direction", "indicator_columns", "indicator_spec", "is_well_formed",
    "load_manifest", "parse_answer", "parse_number", "render_answer", "render_messages", "render_prompt",
    "resolve_splits", "split_path",
]
