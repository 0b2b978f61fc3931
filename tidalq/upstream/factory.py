"""The one place that picks the catalogues a daemon downloads through, from its settings
(``upstream``: ``hifi``, ``tidal``, or both in order), and builds the TIDAL account.
"""

from __future__ import annotations

import aiohttp

from tidalq.config import Settings
from tidalq.upstream.account import Account, AuthServer, TokenFile
from tidalq.upstream.api import UpstreamClient
from tidalq.upstream.base import Upstream
from tidalq.upstream.chain import InOrder
from tidalq.upstream.pace import Pace
from tidalq.upstream.tidal import TidalClient


def missing(settings: Settings) -> str | None:
    """Why no catalogue can be made from these settings, or None when one can."""
    if settings.upstream == ("hifi",) and not settings.api_urls:
        return ("no upstream configured: nothing can download until api_urls is set "
                "(or, with your own TIDAL account, upstream = \"tidal\" and tidalq login)")
    return None


def hosts(settings: Settings) -> list[str]:
    """The base URLs the configured catalogues talk to (for the address policy)."""
    found = [*settings.api_urls, settings.cover_url]
    if "tidal" in settings.upstream:
        found += [settings.tidal_api_url, settings.tidal_auth_url]
    return found


def make_account(settings: Settings, session: aiohttp.ClientSession | None = None) -> Account:
    """The TIDAL login of these settings' state folder (logged in or not)."""
    server = AuthServer(settings.tidal_auth_url, settings.tidal_client_id,
                        settings.tidal_client_secret, session)
    return Account(TokenFile(settings.login_file), server)


def make_upstream(session: aiohttp.ClientSession, settings: Settings,
                  account: Account | None = None) -> Upstream:
    members: list[tuple[str, Upstream]] = []
    for name in settings.upstream:
        if name == "tidal":
            members.append((name, TidalClient(
                session, account or make_account(settings, session), settings.tidal_api_url,
                settings.cover_url, Pace(settings.request_pace))))
        elif settings.api_urls or len(settings.upstream) == 1:
            members.append((name, UpstreamClient(session, settings.api_urls,
                                                 settings.cover_url)))
    return members[0][1] if len(members) == 1 else InOrder(members)
