"""The one exception tree of tidalq, and the stable failure codes jobs carry.

::

    TidalqError                     base of everything tidalq raises on purpose
    ├── InvalidInput                bad input from a user, a client, a config file   (INVALID)
    │   └── ConfigError             the config file or environment is wrong
    ├── JobNotFound                 no job has that id (or prefix)
    │   └── FollowNotFound          no follow has that id
    ├── AmbiguousJobId              a prefix matches more than one job
    ├── IllegalTransition           the job's status does not allow the operation
    ├── LeaseLost                   a worker's lease token no longer owns the job
    ├── StoreUnavailable            the job store cannot be reached or is broken
    ├── DaemonUnreachable           the CLI cannot talk to the daemon
    ├── RpcError                    the daemon answered a JSON-RPC error
    ├── ProtocolError               a control-socket message cannot be handled (protocol.py)
    ├── SocketInUse                 another daemon answers on the control socket (server.py)
    ├── Interrupted                 an album stopped between tracks for shutdown (pipeline.py)
    └── DownloadError               one attempt at a download failed; has ``code`` and ``retryable``
        ├── RateLimited             the upstream asked us to slow down      (RATE_LIMITED)
        ├── UpstreamUnavailable     5xx, timeouts, resets, bad answers      (UPSTREAM_UNAVAILABLE)
        ├── AuthFailed              the upstream's token is broken          (AUTH)
        ├── UpstreamNotFound        the id does not exist upstream          (NOT_FOUND)
        ├── PreviewOnly             only a 30 s preview is served           (PREVIEW_ONLY)
        ├── QualityUnavailable      served quality below the job's minimum  (QUALITY_UNAVAILABLE)
        ├── ManifestError           a manifest we cannot use                (MANIFEST)
        ├── CdnExpired              a signed CDN URL expired (403)          (CDN_EXPIRED)
        ├── IntegrityFailed         a file failed verification              (INTEGRITY)
        ├── DiskFull                ENOSPC while writing                    (DISK_FULL)
        ├── PermissionDenied        EACCES/EPERM while writing              (PERMISSION)
        └── FilesystemError         any other OSError of a path or a file   (FILESYSTEM)

A cancelled job carries ``CANCELLED`` from the store; its download is stopped by asyncio
cancellation, not by an exception of ours.

Foreign exceptions (aiohttp, redis, sqlite3, mutagen, OSError) are translated at one
boundary each and chained with ``from``.
"""

from __future__ import annotations

import errno
from enum import StrEnum


class FailureCode(StrEnum):
    """Stable codes stored in a job's ``failureCode``; scripts may match on them."""

    RATE_LIMITED = "RATE_LIMITED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    NOT_FOUND = "NOT_FOUND"
    PREVIEW_ONLY = "PREVIEW_ONLY"
    QUALITY_UNAVAILABLE = "QUALITY_UNAVAILABLE"
    AUTH = "AUTH"
    INTEGRITY = "INTEGRITY"
    DISK_FULL = "DISK_FULL"
    PERMISSION = "PERMISSION"
    CANCELLED = "CANCELLED"
    INVALID = "INVALID"
    MANIFEST = "MANIFEST"
    CDN_EXPIRED = "CDN_EXPIRED"
    STALLED = "STALLED"
    NO_UPSTREAM = "NO_UPSTREAM"
    FILESYSTEM = "FILESYSTEM"
    ALBUMS_FAILED = "ALBUMS_FAILED"  # an artist job whose album jobs did not all complete
    INTERNAL = "INTERNAL"


class TidalqError(Exception):
    """Base of every error tidalq raises on purpose."""


class InvalidInput(TidalqError):
    """Raised when input from a user, client or file is malformed; ``field`` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(InvalidInput):
    """Raised when the config file or the environment holds an unknown key or a bad value."""


class JobNotFound(TidalqError):
    """Raised when no job has the given id or prefix."""


class FollowNotFound(JobNotFound):
    """Raised when no follow has the given id."""


class AmbiguousJobId(TidalqError):
    """Raised when a job id prefix matches more than one job."""


class IllegalTransition(TidalqError):
    """Raised when a job's status does not allow the requested operation."""


class LeaseLost(TidalqError):
    """Raised when a worker's lease token no longer owns the job it names."""


class StoreUnavailable(TidalqError):
    """Raised when the job store cannot be reached or answers nonsense."""


class DaemonUnreachable(TidalqError):
    """Raised when the CLI cannot connect to the daemon's control socket."""


class RpcError(TidalqError):
    """Raised by the client when the daemon answers with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class DownloadError(TidalqError):
    """Raised when one attempt at a download fails; says whether another attempt can help."""

    code: FailureCode = FailureCode.INTERNAL
    retryable: bool = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(DownloadError):
    """Raised on HTTP 429; ``retry_after_s`` holds the server's Retry-After when given."""

    code = FailureCode.RATE_LIMITED
    retryable = True


class UpstreamUnavailable(DownloadError):
    """Raised on 5xx, connection errors, timeouts and unusable answers from a server."""

    code = FailureCode.UPSTREAM_UNAVAILABLE
    retryable = True


class AuthFailed(DownloadError):
    """Raised when a server reports a broken TIDAL token (401/403, subStatus)."""

    code = FailureCode.AUTH
    retryable = True


class UpstreamNotFound(DownloadError):
    """Raised when the upstream says the track or album does not exist."""

    code = FailureCode.NOT_FOUND


class PreviewOnly(DownloadError):
    """Raised when only a 30-second preview is served; it is never saved as the track."""

    code = FailureCode.PREVIEW_ONLY


class QualityUnavailable(DownloadError):
    """Raised when the served quality is below the job's minimum."""

    code = FailureCode.QUALITY_UNAVAILABLE


class ManifestError(DownloadError):
    """Raised when a manifest is garbage, hostile or encrypted."""

    code = FailureCode.MANIFEST


class CdnExpired(DownloadError):
    """Raised when a signed CDN URL answers 403: a fresh manifest is needed."""

    code = FailureCode.CDN_EXPIRED
    retryable = True


class IntegrityFailed(DownloadError):
    """Raised when a downloaded file fails verification; it never reaches the library."""

    code = FailureCode.INTEGRITY


class DiskFull(DownloadError):
    """Raised on ENOSPC while staging or publishing."""

    code = FailureCode.DISK_FULL  # the job fails; the worker pool pauses until space returns


class PermissionDenied(DownloadError):
    """Raised on EACCES/EPERM while staging or publishing."""

    code = FailureCode.PERMISSION


class FilesystemError(DownloadError):
    """Raised on any other OSError of a path or a file (I/O error, a name too long for the
    filesystem, a file where a folder should be); another attempt may help unless the
    path itself is wrong."""

    code = FailureCode.FILESYSTEM
    retryable = True

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EINVAL}


def from_os_error(exc: OSError) -> DownloadError:
    """Translate a filesystem error into the download error a job should carry (a timeout
    or a dropped connection is an OSError too, but says nothing of the disk)."""
    if isinstance(exc, TimeoutError | ConnectionError):
        return UpstreamUnavailable(f"network error: {exc or type(exc).__name__}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"disk full: {exc}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(f"permission denied: {exc}")
    return FilesystemError(f"filesystem error: {exc}", retryable=exc.errno not in _PATH_ERRNOS)
