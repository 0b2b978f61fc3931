"""A CDN file's bytes over blocking sockets, for a decoder program
(:mod:`tidalq.media.decoder_program`) that writes and decodes them where they arrive, so
the body of a track never passes through the daemon.

The rules are the daemon's fetcher's (:mod:`tidalq.media.fetch`): a cut body resumes with
``Range`` when the server sends ``Accept-Ranges: bytes`` (else the file starts over), a
bounded number of times; a 403 means the signed URL expired (``CdnExpired``); redirects
are followed; every address dialled is checked against the daemon's rules
(:mod:`tidalq.upstream.addresses`) before the connection is made, and the connection is
made to the address that was checked. A connection is kept for the next file from the
same server when this one was read to its end.
"""

from __future__ import annotations

import errno
import functools
import http.client
import os
import selectors
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from tidalq.errors import CdnExpired, DownloadError, ManifestError, UpstreamUnavailable
from tidalq.upstream.addresses import AddressRules, address_of

CHUNK_BYTES = 256 * 1024
MAX_RESUMES = 5
MAX_REDIRECTS = 10
NEXT_ADDRESS_S = 0.25  # a server's next address is tried after this long without answer
REDIRECTS = (301, 302, 303, 307, 308)
_CUTS = (OSError, http.client.HTTPException)  # timeouts and resets are OSErrors
# how a request on a kept connection the server closed meanwhile fails
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class CdnSettings:
    """How the daemon's fetcher talks to the CDN, passed to a decoder program."""

    connect_timeout_s: float = 10
    read_timeout_s: float = 30
    user_agent: str = "tidalq"
    allowed: tuple[str, ...] | None = None  # address kinds; None: no check (tests' pipelines)

    @classmethod
    def of_json(cls, fields: dict[str, Any]) -> CdnSettings:
        """What :func:`dataclasses.asdict` made, back from JSON (its tuple a list)."""
        allowed = fields.get("allowed")
        return cls(**{**fields, "allowed": None if allowed is None else tuple(allowed)})


class StartOver(Exception):
    """The file must be taken again from its first byte (the server cannot resume)."""


class Cut(Exception):
    """The body ended early; ``resumable`` says whether Range may continue it."""

    def __init__(self, resumable: bool) -> None:
        super().__init__("body cut short")
        self.resumable = resumable


class CdnBody:
    """``chunks(offset)`` yields the file's bytes from ``offset`` on, resuming a cut body;
    raises :class:`StartOver` when what was taken cannot be continued."""

    def __init__(self, url: str, settings: CdnSettings, connections: Connections) -> None:
        self.url = url
        self.settings = settings
        self._connections = connections
        self.total: int | None = None
        self.cuts = 0  # cut bodies so far, starting over included

    def chunks(self, offset: int) -> Iterator[bytes]:
        while True:
            try:
                for chunk in self._once(offset):
                    offset += len(chunk)
                    yield chunk
                return
            except Cut as cut:
                self.cuts += 1
                if self.cuts > MAX_RESUMES:
                    raise UpstreamUnavailable("the CDN kept cutting the download short") \
                        from None
                if not cut.resumable and offset:
                    raise StartOver from None

    def _once(self, have: int) -> Iterator[bytes]:
        try:
            resp, conn = self._get(have)
        except ssl.SSLCertVerificationError as exc:  # no cut: asking again changes nothing
            raise UpstreamUnavailable(f"the CDN's certificate was refused: "
                                      f"{exc.verify_message}") from exc
        except _CUTS as exc:
            raise Cut(resumable=have > 0) from exc
        done = have
        try:
            if resp.status == 416 and have:
                self.cuts += 1
                raise StartOver  # what we have is not a prefix of this file
            if resp.status not in (200, 206):
                raise status_error(resp.status, self.url)
            if resp.status == 200 and have:
                raise StartOver  # the server sends the whole file again
            length = resp.getheader("Content-Length")
            self.total = have + int(length) if length and length.isdigit() else None
            resumable = (resp.getheader("Accept-Ranges") or "").lower() == "bytes"
            while True:
                try:
                    chunk = resp.read1(CHUNK_BYTES)
                except _CUTS:
                    raise Cut(resumable) from None
                if not chunk:
                    break
                done += len(chunk)
                yield chunk
            if self.total is not None and done != self.total:
                raise Cut(resumable)
        finally:
            whole = self.total is not None and done == self.total
            resp.close()  # the answer is over for the connection (its socket stays open)
            self._connections.done(conn, keep=whole and not resp.will_close)

    def _get(self, have: int) -> tuple[http.client.HTTPResponse, _Connection]:
        url = self.url
        headers = {"User-Agent": self.settings.user_agent, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        for _ in range(MAX_REDIRECTS + 1):
            resp, conn = self._request(url, headers)
            location = resp.getheader("Location")
            if resp.status not in REDIRECTS or not location:
                return resp, conn
            self._connections.done(conn, keep=False)
            url = urljoin(url, location)
        raise UpstreamUnavailable(f"the CDN redirected more than {MAX_REDIRECTS} times")

    def _request(self, url: str, headers: dict[str, str]
                 ) -> tuple[http.client.HTTPResponse, _Connection]:
        """GET ``url``; a kept connection the server has closed meanwhile is replaced
        once (that is no cut of the body)."""
        parts = urlsplit(url)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        conn, kept = self._connections.to(url, self.settings)
        while True:
            try:
                conn.request("GET", target, headers=headers)
                return conn.getresponse(), conn
            except BaseException as exc:
                conn.close()
                if not (kept and isinstance(exc, _STALE)):
                    raise
                conn, kept = self._connections.fresh(url, self.settings), False


def status_error(status: int, url: str) -> DownloadError:
    if status == 403:
        return CdnExpired("the CDN refused the signed URL (expired)")
    return UpstreamUnavailable(f"the CDN answered {status} for {url.split('?')[0]}")


class _Connection(http.client.HTTPConnection):
    """A connection to the address the rules passed (TLS named for the host)."""

    def __init__(self, scheme: str, host: str, port: int, settings: CdnSettings) -> None:
        super().__init__(host, port, timeout=settings.read_timeout_s)
        self.scheme = scheme
        self.settings = settings

    def connect(self) -> None:
        sock = _dial(self.host, self.port, self.settings)
        if self.scheme == "https":
            sock = _tls().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


@functools.cache
def _rules(allowed: tuple[str, ...]) -> AddressRules:
    """The daemon's address rules, made once per program for the kinds it allows."""
    return AddressRules(allowed)


def _dial(host: str, port: int, settings: CdnSettings) -> socket.socket:
    """A connection to ``host``, every address it names checked first."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:  # no cut: it names nothing to connect to
        raise UpstreamUnavailable(f"the CDN's host {host} could not be resolved: "
                                  f"{exc.strerror}") from exc
    if settings.allowed is not None:
        rules = _rules(settings.allowed)
        for *_, sockaddr in found:
            address = address_of(str(sockaddr[0]))
            if address is not None:
                rules.check_address(address, host)
    sock = connect_first(found, settings.connect_timeout_s)
    sock.settimeout(settings.read_timeout_s)
    return sock


AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def connect_first(found: Sequence[AddrInfo], timeout_s: float) -> socket.socket:
    """The first of ``found`` to answer, trying the next one whenever the last tried has
    not answered within :data:`NEXT_ADDRESS_S` (RFC 8305's "happy eyeballs"): an address
    that never answers, as IPv6 does on many home networks, costs a moment, not the
    connect timeout."""
    deadline = time.monotonic() + timeout_s
    waiting = selectors.DefaultSelector()
    last: OSError | None = None
    try:
        for family, kind, proto, _, sockaddr in found:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            if (failed := sock.connect_ex(sockaddr)) not in (0, errno.EINPROGRESS):
                sock.close()
                last = OSError(failed, f"{os.strerror(failed)} ({sockaddr[0]})")
                continue
            waiting.register(sock, selectors.EVENT_WRITE)
            wait = min(NEXT_ADDRESS_S, deadline - time.monotonic())
            won, last = _answered(waiting, wait, last)
            if won is not None:
                return won
        while waiting.get_map() and (left := deadline - time.monotonic()) > 0:
            won, last = _answered(waiting, left, last)
            if won is not None:
                return won
        timed_out = bool(waiting.get_map())
    finally:
        for key in list(waiting.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        waiting.close()
    if timed_out or last is None:
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    raise last


def _answered(waiting: selectors.BaseSelector, wait_s: float, last: OSError | None
              ) -> tuple[socket.socket | None, OSError | None]:
    """A socket among ``waiting`` that connected within ``wait_s`` (taken out of it), and
    the last failure seen; those that failed are closed."""
    for key, _ in waiting.select(max(wait_s, 0)):
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        waiting.unregister(sock)
        failed = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not failed:
            sock.setblocking(True)
            return sock, last
        last = OSError(failed, os.strerror(failed))
        sock.close()
    return None, last


class Connections:
    """A decoder program's open connection, kept for the next file from the same server."""

    def __init__(self) -> None:
        self._kept: tuple[tuple[str, str, int], _Connection] | None = None

    def to(self, url: str, settings: CdnSettings) -> tuple[_Connection, bool]:
        """A connection for ``url``: the kept one if it goes there (True), else new."""
        key = _checked_origin(url, settings)
        if self._kept is not None:
            kept_key, conn = self._kept
            self._kept = None
            if kept_key == key and conn.settings == settings:
                return conn, True
            conn.close()
        return _Connection(*key, settings), False

    def fresh(self, url: str, settings: CdnSettings) -> _Connection:
        return _Connection(*_checked_origin(url, settings), settings)

    def done(self, conn: _Connection, keep: bool) -> None:
        """Keep ``conn`` for the next file if its answer was read whole, else close it."""
        if not keep:
            conn.close()
            return
        if self._kept is not None:
            self._kept[1].close()
        self._kept = ((conn.scheme, conn.host, conn.port), conn)


def _checked_origin(url: str, settings: CdnSettings) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, its host refused here if it is an address literal
    the rules refuse (a name is checked where it is resolved)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UpstreamUnavailable(f"the CDN URL is not http(s): {url.split('?')[0]}")
    host = parts.hostname or ""
    try:
        host.encode("idna")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (UnicodeError, ValueError) as exc:  # the manifest named no place to go
        raise ManifestError(f"the CDN URL names no valid host and port: "
                            f"{url.split('?')[0]}") from exc
    if settings.allowed is not None:
        _rules(settings.allowed).check_host(host, url)
    return parts.scheme, host, port
