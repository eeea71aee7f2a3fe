"""Host policy: which hosts are public services with usage limits, and what those limits are."""

from __future__ import annotations

from urllib.parse import urlsplit

PUBLIC_URLS = {"nominatim": "https://nominatim.openstreetmap.org", "photon": "https://photon.komoot.io"}
"""The public instances, used when ``geocoder.url`` is not set."""


PUBLIC_MAX_REQUESTS = 500
"""More requests than this to a public instance (about 8 minutes at 1 request/s) are a bulk job."""


PUBLIC_MIN_INTERVAL_S = 1.0
"""The public Nominatim's absolute maximum: 1 request/s for the whole application."""


def is_public(provider: str, url: str | None) -> bool:
    """Whether ``url`` (None: the default) is the provider's public instance, whose usage policy applies."""
    host = urlsplit(url or PUBLIC_URLS[provider]).hostname or ""
    return host == urlsplit(PUBLIC_URLS[provider]).hostname
