"""Where the daemon may connect: manifests and CDN URLs come from servers we do not
control, and must not turn the daemon into a proxy into its own network.

- Link-local addresses (``169.254.0.0/16``, ``fe80::/10``: cloud metadata services),
  multicast and unspecified addresses are always refused.
- Loopback and private ranges are refused unless an upstream the user configured
  (``api_urls``, ``cover_url``) is itself there.

Both forms of a URL's host are checked: an address literal before the request starts
(a trace hook), a name through the connector's resolver, so the address actually dialled
is the one that was checked. A refused URL fails the track with ``ManifestError``.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tidalq.upstream.addresses import AddressRules, address_of


class AddressPolicy:
    """The rules (:class:`~tidalq.upstream.addresses.AddressRules`) the configured
    upstreams make, as hooks for the daemon's HTTP session."""

    def __init__(self, upstream_urls: tuple[str, ...] | list[str]) -> None:
        self.rules = AddressRules.for_upstreams(upstream_urls)

    @property
    def allowed(self) -> set[str]:
        return self.rules.allowed

    def check_url(self, url: str) -> None:
        self.rules.check_url(url)

    def trace_config(self) -> aiohttp.TraceConfig:
        """Checks address literals (which aiohttp dials without resolving) per request."""
        trace = aiohttp.TraceConfig()

        async def on_start(session: aiohttp.ClientSession, context: SimpleNamespace,
                           params: aiohttp.TraceRequestStartParams) -> None:
            # raw_host: an address literal is ASCII, and .host would IDNA-decode every time
            self.rules.check_host(params.url.raw_host or "", params.url)

        trace.on_request_start.append(on_start)
        return trace

    def resolver(self) -> AbstractResolver:
        return GuardedResolver(self.rules)


class GuardedResolver(AbstractResolver):
    """The default resolver, keeping only addresses the policy allows."""

    def __init__(self, rules: AddressRules) -> None:
        self.rules = rules
        self._inner: AbstractResolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = address_of(str(result["host"]))
            if address is not None:
                self.rules.check_address(address, host)
        return results

    async def close(self) -> None:
        await self._inner.close()

