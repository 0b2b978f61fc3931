"""The one place that picks the catalogue a daemon downloads through, from its settings.

Today: the hifi-api servers of ``api_urls``. A second :class:`~tidalq.upstream.base.Upstream`
(the user's own TIDAL account) joins here, beside the settings it reads, and nowhere else.
"""

from __future__ import annotations

import aiohttp

from tidalq.config import Settings
from tidalq.upstream.api import UpstreamClient
from tidalq.upstream.base import Upstream


def missing(settings: Settings) -> str | None:
    """Why no catalogue can be made from these settings, or None when one can."""
    if not settings.api_urls:
        return "no upstream configured: nothing can download until api_urls is set"
    return None


def hosts(settings: Settings) -> list[str]:
    """The base URLs the configured catalogue talks to (for the address policy)."""
    return [*settings.api_urls, settings.cover_url]


def make_upstream(session: aiohttp.ClientSession, settings: Settings) -> Upstream:
    return UpstreamClient(session, settings.api_urls, settings.cover_url)
