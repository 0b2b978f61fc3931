"""Trusting a file tidalq verified: at publish, the staging file (already decoded in full)
gets an extended attribute ``user.tidalq.verified`` holding its size and modification time
in nanoseconds; rename keeps both. Later, a file whose size and mtime still match is taken
as verified without decoding it again — a re-run over a full library costs a stat and a
getxattr per track. Anything that changes the file (another tagger, a truncation, a copy
without attributes) changes what is compared, and the file is decoded as before.

Filesystems without user extended attributes (some network mounts) simply trust nothing:
every check decodes, as it did before this existed. `tidalq verify` decodes regardless.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

ATTRIBUTE = "user.tidalq.verified"
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.ENOSPC,
                errno.E2BIG}


def _stamp(path: Path) -> bytes:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def mark_verified(path: Path) -> bool:
    """Record that ``path`` decoded in full, as it is now; False where attributes are not
    kept (nothing is trusted there)."""
    try:
        os.setxattr(path, ATTRIBUTE, _stamp(path))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise
    return True


def still_verified(path: Path) -> bool:
    """Whether ``path`` is the very file tidalq verified (same size and mtime)."""
    try:
        return os.getxattr(path, ATTRIBUTE) == _stamp(path)
    except OSError:
        return False
