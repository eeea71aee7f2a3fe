"""Host policy: what each public host the shipped recipes use allows, in one table.

A source's ``min_interval_s`` is what its config asks for; a host's policy is a floor under it
(:func:`pace_s`), so a recipe cannot send faster than the host's documented limit. Each row says
where its figures come from, and ``--dry-run`` prints that with the pace it will use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from urp_data.errors import InputError
from urp_data.util import settings

PUBLIC_URLS = {"nominatim": "https://nominatim.openstreetmap.org", "photon": "https://photon.komoot.io",
               "overpass": "https://overpass-api.de/api/interpreter"}
"""The public instances, used when a geocoder's or Overpass's ``url`` is not set."""


PUBLIC_MAX_REQUESTS = 500
"""More requests than this to a public instance (about 8 minutes at 1 request/s) are a bulk job."""


PUBLIC_MIN_INTERVAL_S = 1.0
"""The public Nominatim's absolute maximum: 1 request/s for the whole application."""


@dataclass(frozen=True)
class HostPolicy:
    """What one host allows, and where that is written."""

    host: str  # the host name, lower case, without port
    min_interval_s: float  # the least time between two requests to it, seconds (a floor under any config)
    window_s: float  # how long to back off after a 429 that carries no Retry-After, seconds
    source: str  # where the figures come from (a policy page, an issue thread)
    ranges: bool = True  # False: the host ignores Range, so files are downloaded whole (no range request)
    refused: str = ""  # non-empty: builds never send it a request, for this reason
    needs_contact: bool = False  # a public service whose policy asks every client to identify itself


POLICIES = {p.host: p for p in (
    HostPolicy("zenodo.org", 0.7, 60.0, "developers.zenodo.org#rate-limiting: 100 requests/min for guests "
               "(zenodo-rdm#1226, #1206); 0.7 s is ~86/min"),
    HostPolicy("nominatim.openstreetmap.org", PUBLIC_MIN_INTERVAL_S, 60.0,
               "operations.osmfoundation.org/policies/nominatim: an absolute maximum of 1 request/s",
               needs_contact=True),
    HostPolicy("photon.komoot.io", PUBLIC_MIN_INTERVAL_S, 60.0,
               "photon.komoot.io: fair use, no bulk geocoding; paced as the public Nominatim", needs_contact=True),
    HostPolicy("overpass-api.de", 1.0, 60.0, "dev.overpass-api.de/overpass-doc/en/preface/commons.html: a few slots "
               "per IP, ~10,000 queries/day; each query also waits for a slot named by /api/status",
               needs_contact=True),
    HostPolicy("data.worldpop.org", 0.1, 60.0, "WorldPop's server ignores Range (mapme.biodiversity#265, "
               "open-climate-service#297): files are downloaded whole, once", ranges=False),
    HostPolicy("tile.openstreetmap.org", 1.0, 60.0, "operations.osmfoundation.org/policies/tiles",
               refused="the OSM tile usage policy (operations.osmfoundation.org/policies/tiles) forbids bulk "
               "downloading from tile.openstreetmap.org at any pace; use another tile provider or a local raster"),
)}
"""The hosts the shipped recipes use, or that a recipe must never use for a build (ours: the
figures are the providers' or read off their issue trackers, as ``source`` says)."""


def policy(host_or_url: str) -> HostPolicy | None:
    """The policy of a host (``name``, ``name:port`` or a URL), or None for a host without one."""
    text = host_or_url if "//" in host_or_url else f"//{host_or_url}"
    name = (urlsplit(text).hostname or "").lower()
    while name:  # a.tile.openstreetmap.org falls under tile.openstreetmap.org
        if name in POLICIES:
            return POLICIES[name]
        name = name.partition(".")[2] if name.count(".") > 1 else ""
    return None


def pace_s(host_or_url: str, configured_s: float) -> float:
    """Seconds between two requests to a host: the configured pause, never under the host's policy."""
    p = policy(host_or_url)
    return max(configured_s, p.min_interval_s) if p else configured_s


def refuse_refused(url: str, what: str) -> None:
    """Raise an InputError (one line naming the policy) when ``url``'s host must not be used for builds."""
    p = policy(url)
    if p is not None and p.refused:
        raise InputError(f"{what}: {p.refused}")


_CONTACT = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+|https?://\S+")


def refuse_anonymous(url: str, what: str, user_agent: str) -> None:
    """Raise an InputError before the first request to a public service (Nominatim, Photon, Overpass)
    unless ``user_agent`` (``URP_USER_AGENT``) names the project and a contact (an e-mail or a URL),
    as their usage policies ask of every client."""
    p = policy(url)
    if p is None or not p.needs_contact:
        return
    if "urp" not in user_agent.lower() or not _CONTACT.search(user_agent) or user_agent == settings.USER_AGENT.default:
        raise InputError(f"{what}: the public {p.host} asks every client to identify itself ({p.source}); set "
                         "URP_USER_AGENT to name the project and your contact, e.g. "
                         "URP_USER_AGENT='urp-data/0.1 (your study; you@example.org)', or point the URL at a "
                         "self-hosted instance")


def is_public(provider: str, url: str | None) -> bool:
    """Whether ``url`` (None: the default) is the provider's public instance, whose usage policy applies."""
    host = urlsplit(url or PUBLIC_URLS[provider]).hostname or ""
    return host == urlsplit(PUBLIC_URLS[provider]).hostname
