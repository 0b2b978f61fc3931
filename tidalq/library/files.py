"""Putting bytes into the library durably: sync, rename (a copy beside the target first
across filesystems), sync the folder. Every write into the library goes through here."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from tidalq.media import tags, verify
from tidalq.models import TrackMeta


def sync_file(path: Path) -> None:
    """The file's bytes on disk, so that the rename that publishes it never publishes a
    file a power cut would leave empty."""
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


def move_into_place(staging: Path, target: Path, check_lease: Callable[[], None]) -> None:
    """Rename a synced staging file onto ``target``, if the lease still holds. A target
    on another filesystem gets a copy beside it first, so the final step is always one
    rename. Durable once the target's folder is synced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    check_lease()
    try:
        os.replace(staging, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _publish_across_filesystems(staging, target, check_lease)


def _publish_across_filesystems(staging: Path, target: Path,
                                check_lease: Callable[[], None]) -> None:
    tmp = target.with_name(f".{secrets.token_hex(6)}.tidalq-tmp")
    try:
        with staging.open("rb") as src, tmp.open("xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        check_lease()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    staging.unlink()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, data: bytes, staging_dir: Path) -> None:
    place_bytes(target, data, staging_dir)
    fsync_dir(target.parent)


def place_bytes(target: Path, data: bytes, staging_dir: Path) -> None:
    """Write ``data`` whole to ``target`` by rename; durable once the folder is synced."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir / f"{secrets.token_hex(8)}.tmp{target.suffix}"
    tmp.write_bytes(data)
    sync_file(tmp)
    move_into_place(tmp, target, lambda: None)



def copy_if_ours(path: Path, staging: Path, meta: TrackMeta) -> bool:
    if tags.read_identity(path)[0] != str(meta.id):
        return False
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, staging)
    return True


def add_tags_and_sync(staging: Path, fields: dict[str, list[str]]) -> verify.AudioFacts:
    facts = tags.add_fields(staging, fields)
    sync_file(staging)
    return facts


def replace_if_ours(staging: Path, target: Path, meta: TrackMeta) -> bool:
    """Under the folder's lock: the file still holds this track, so the copy replaces it."""
    if tags.read_identity(target)[0] != str(meta.id):
        return False
    move_into_place(staging, target, lambda: None)
    fsync_dir(target.parent)
    return True
