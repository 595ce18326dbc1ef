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


@contextlib.contextmanager
def replacing(final: Path) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``final``; on clean exit it durably replaces ``final``."""
    tmp = temp_path(final)
    # 0o666 less the umask: a finished file gets the mode any other new file would get.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def write_bytes(final: Path, data: bytes) -> None:
    with replacing(final) as out:
        out.write(data)


def swap_bytes(final: Path, data: bytes) -> None:
    """Atomic but not durable: for bookkeeping that a power cut may lose, never tear.

    A sidecar is such a thing: lost or empty after a crash, it only makes the next run start its file over,
    so the two fsyncs ``write_bytes`` would spend (a third of a small file's cost) buy nothing.
    """
    tmp = temp_path(final)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
