"""Durable writes: the one recipe every file bulkdl finishes goes through.

temp file in the target directory → write → fsync → ``os.replace`` → fsync the directory. A reader of the
final name sees the old content or the new, never a mix, even across a power cut; the temp file is removed
on any failure.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _read_umask() -> int:
    # The only portable way to read the umask is to set it; do it once, at import, before any thread runs.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; a finished file gets the mode any other new file would get.
FILE_MODE = 0o666 & ~_read_umask()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(final: Path) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``final``; on clean exit it durably replaces ``final``."""
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, FILE_MODE)
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
