"""The prompt a model sees for a sample, and the answer format it is trained to write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from urp_data.contract.columns import SCORE_MAX, IndicatorSpec, indicator_spec

COMPASS_8 = ("North", "North-East", "East", "South-East", "South", "South-West", "West", "North-West")

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
