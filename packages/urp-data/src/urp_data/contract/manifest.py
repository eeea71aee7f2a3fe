"""``manifest.json``: what a build was made from, and how to read it back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from urp_data.contract.columns import MANIFEST_NAME, IndicatorSpec
from urp_data.contract.scale import ScoreScale
from urp_data.errors import SchemaError


@dataclass
class IndicatorInfo:
    """What the manifest records for one indicator: provenance, honesty flags and the fitted score scale.

    ``resolution_km`` is the ground size of the source's smallest unit (a pixel, a typical
    polygon; None when it is a whole country), ``radius_km`` the radius a label is pooled over
    (None when it is not pooled). ``derived_from_prompt`` is true when the label is computed
    from the same inputs the prompt shows (e.g. GeoNames population and the nearby-places
    list): a model can then score well by reading the prompt, not the place. ``method`` says
    how a sample's value is computed from the source (e.g. an area-weighted sum). The defaults
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
    method: str = ""

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
