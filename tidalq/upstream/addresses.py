"""Which addresses the daemon (and its decoder programs, which fetch CDN files) may connect
to; the reasons are in :mod:`tidalq.upstream.netguard`. Plain rules over :mod:`ipaddress`,
so a decoder program applies them without loading the daemon's HTTP client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from tidalq.errors import ManifestError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
KINDS = ("public", "private", "loopback")  # the kinds an upstream can make acceptable


def address_of(host: str) -> Address | None:
    """The address a host literal stands for (an IPv4-mapped IPv6 one as IPv4); None for
    a name."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def kind_of(address: Address) -> str:
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return "forbidden"
    if address.is_loopback:
        return "loopback"
    if address.is_private or address.is_reserved:
        return "private"
    return "public"


class AddressRules:
    """The kinds of address that are acceptable: public ones, and those where a configured
    upstream is."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = {"public", *(k for k in allowed if k in KINDS)}
        self._literals: dict[str, Address | None] = {}

    @classmethod
    def for_upstreams(cls, upstream_urls: Iterable[str]) -> AddressRules:
        kinds = set()
        for url in upstream_urls:
            host = urlsplit(url).hostname or ""
            address = address_of(host)
            kinds.add("loopback" if host == "localhost" else
                      kind_of(address) if address else "public")
        return cls(kinds)

    def check_address(self, address: Address, url_or_host: object) -> None:
        kind = kind_of(address)
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
            address = address_of(host)
            if address is None and (host == "localhost" or host.endswith(".localhost")):
                address = ipaddress.ip_address("127.0.0.1")
            self._literals[host] = address
        return self._literals[host]
