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

import ipaddress
import socket
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tidalq.errors import ManifestError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(host: str) -> Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: Address) -> str:
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return "forbidden"
    if address.is_loopback:
        return "loopback"
    if address.is_private or address.is_reserved:
        return "private"
    return "public"


class AddressPolicy:
    """Which kinds of address the configured upstreams make acceptable."""

    def __init__(self, upstream_urls: tuple[str, ...] | list[str]) -> None:
        self._literals: dict[str, Address | None] = {}
        self.allowed = {"public"}
        for url in upstream_urls:
            host = urlsplit(url).hostname or ""
            address = _address(host)
            kind = "loopback" if host == "localhost" else _kind(address) if address else "public"
            if kind != "forbidden":
                self.allowed.add(kind)

    def check_address(self, address: Address, url_or_host: object) -> None:
        kind = _kind(address)
        if kind not in self.allowed:
            raise ManifestError(f"refusing to connect to {address} ({kind} address) for "
                                f"{str(url_or_host).split('?')[0]}: no configured upstream "
                                "is there")

    def check_url(self, url: str) -> None:
        self.check_host(urlsplit(url).hostname or "", url)

    def check_host(self, host: str, url: object) -> None:
        """Refuse an address literal (or ``localhost``) of a kind no upstream is at; a name
        is left to the resolver."""
        address = self._literal(host)
        if address is not None:
            self.check_address(address, url)

    def _literal(self, host: str) -> Address | None:
        """The address ``host`` stands for without resolving; parsed once per host (every
        request of every track asks)."""
        if host not in self._literals:
            if len(self._literals) >= 1024:
                self._literals.clear()
            address = _address(host)
            if address is None and (host == "localhost" or host.endswith(".localhost")):
                address = ipaddress.ip_address("127.0.0.1")
            self._literals[host] = address
        return self._literals[host]

    def trace_config(self) -> aiohttp.TraceConfig:
        """Checks address literals (which aiohttp dials without resolving) per request."""
        trace = aiohttp.TraceConfig()

        async def on_start(session: aiohttp.ClientSession, context: SimpleNamespace,
                           params: aiohttp.TraceRequestStartParams) -> None:
            # raw_host: an address literal is ASCII, and .host would IDNA-decode every time
            self.check_host(params.url.raw_host or "", params.url)

        trace.on_request_start.append(on_start)
        return trace

    def resolver(self) -> AbstractResolver:
        return GuardedResolver(self)


class GuardedResolver(AbstractResolver):
    """The default resolver, keeping only addresses the policy allows."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner: AbstractResolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = _address(str(result["host"]))
            if address is not None:
                self.policy.check_address(address, host)
        return results

    async def close(self) -> None:
        await self._inner.close()

