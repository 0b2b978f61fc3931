"""Which daemons share a library, and which of them are alive: one lock file each.

Every daemon holds an exclusive ``flock`` on ``<library>/.tidalq/daemons/<instance>.lock``
for its whole life and stages its downloads in ``<library>/.tidalq/staging/<instance>/``.
The kernel drops the lock when the process dies, whatever PID namespace or container it
ran in, so a lock file that can be locked belongs to a dead daemon: its staging folder is
removed and the leases it held may be reaped at once. Nothing probes pids, and a daemon
never touches the staging folder of a daemon that is alive.

Lease holders are named ``host:pid:instance`` (see :func:`worker_name`); the instance part
is what :func:`dead_instances` reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def daemons_dir(library: Path) -> Path:
    return library / ".tidalq" / "daemons"


def staging_root(library: Path) -> Path:
    return library / ".tidalq" / "staging"


def worker_name(instance_id: str) -> str:
    """The lease holder's name: readable (host, pid) and exact (the instance)."""
    return f"{socket.gethostname()}:{os.getpid()}:{instance_id}"


def instance_of(worker: str) -> str:
    return worker.rsplit(":", 1)[-1]


class Instance:
    """This daemon's lock on its library, held until :meth:`release`."""

    def __init__(self, library: Path, instance_id: str, fd: int) -> None:
        self.library = library
        self.id = instance_id
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, library: Path) -> Instance:
        """Create and lock this daemon's lock file (OSError when the library is unusable)."""
        folder = daemons_dir(library)
        folder.mkdir(parents=True, exist_ok=True)
        instance_id = secrets.token_hex(6)
        # locked under a name no one looks at, then renamed: a lock file is never seen
        # unlocked while its daemon lives
        tmp = folder / f".{instance_id}.new"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{worker_name(instance_id)}\n".encode())
        os.rename(tmp, folder / f"{instance_id}{LOCK_SUFFIX}")
        return cls(library, instance_id, fd)

    @property
    def staging_dir(self) -> Path:
        return staging_root(self.library) / self.id

    def release(self, clean: bool = True) -> None:
        """Drop the lock; ``clean`` (nothing of ours left in the store) also removes this
        daemon's staging folder and lock file, else the next daemon finds them dead."""
        if self._fd is None:
            return
        if clean:
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                (daemons_dir(self.library) / f"{self.id}{LOCK_SUFFIX}").unlink()
        os.close(self._fd)
        self._fd = None


def live_instances(library: Path) -> set[str]:
    """The instance ids of this library's daemons that are alive (their lock is held),
    this one's included. Proof on one machine; a network filesystem's locks prove less,
    and several machines share a Redis store, whose clock judges leases instead."""
    folder = daemons_dir(library)
    alive: set[str] = set()
    for lock in folder.glob(f"*{LOCK_SUFFIX}") if folder.is_dir() else ():
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            alive.add(lock.name.removesuffix(LOCK_SUFFIX))
        finally:
            os.close(fd)  # closing drops a lock this look took
    return alive


def dead_instances(library: Path, own: str) -> set[str]:
    """Find daemons of this library that died, remove their staging folders and lock
    files, and return their instance ids. A lock held by anyone means alive."""
    folder = daemons_dir(library)
    dead: set[str] = set()
    if not folder.is_dir():
        return dead
    for lock in folder.glob(f"*{LOCK_SUFFIX}"):
        instance_id = lock.name.removesuffix(LOCK_SUFFIX)
        if instance_id != own and _clean_if_dead(library, lock, instance_id):
            dead.add(instance_id)
    _remove_orphan_staging(library, folder)
    return dead


def _clean_if_dead(library: Path, lock: Path, instance_id: str) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False  # removed by another daemon's clean-up meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its daemon is alive
        shutil.rmtree(staging_root(library) / instance_id, ignore_errors=True)
        lock.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _remove_orphan_staging(library: Path, folder: Path) -> None:
    """Staging folders with no lock file at all (a daemon killed mid-clean-up, or files
    of an older tidalq) belong to nobody alive."""
    root = staging_root(library)
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if (folder / f"{entry.name}{LOCK_SUFFIX}").exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.info("removed stale staging entry %s", entry.name)
