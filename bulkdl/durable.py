"""Durable writes: the one recipe every file bulkdl finishes goes through.

temp file in the target directory → write → fsync → ``os.replace`` → fsync the directory. A reader of the
final name sees the old content or the new, never a mix, even across a power cut; the temp file is removed
on any failure. The temp name is fixed (``.<name>.bulkdl-tmp``): the destination lock means one writer,
so a temp left by a killed run is simply truncated and reused by the next.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".bulkdl-tmp"


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{TEMP_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(path: Path, final: Path, fd: int, sync_dir: bool = True) -> None:
    """Make the finished file at ``path`` (open as ``fd``) durable, then atomically the content of ``final``.

    Without ``sync_dir`` the caller promises to fsync ``final``'s directory before anything relies on the
    rename having survived a power cut (a run's downloads: see state.State.commit).
    """
    os.fsync(fd)
    os.replace(path, final)
    if sync_dir:
        fsync_dir(final.parent)


@contextlib.contextmanager
def replacing(final: Path, sync: bool = True) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``final``; on clean exit it replaces ``final``, durably unless ``sync`` is off.

    Without ``sync`` the swap is still atomic, only not durable: for bookkeeping a power cut may lose but
    never tear. A sidecar is such a thing (lost or empty, it only makes the next run start its file over),
    and the two fsyncs would be a third of a small file's cost.
    """
    tmp = temp_path(final)
    # 0o666 less the umask: a finished file gets the mode any other new file would get.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            if sync:
                install(tmp, final, out.fileno())
            else:
                os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(final: Path, data: bytes, sync: bool = True) -> None:
    with replacing(final, sync) as out:
        out.write(data)
