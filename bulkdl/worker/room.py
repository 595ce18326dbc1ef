"""Whether a file may be written here at all: its size against max_size and the free disk space.

Checked before the first byte is written, so a file that cannot fit fails with the figures a user needs
instead of filling the disk for the files after it.

The free space is read once per directory and again only after the files admitted since may have used a
share of it (1/_SHARE), not for every file: a statvfs per 16 KiB file is pure cost. A file that needs more
than that share always gets a fresh reading, so one that cannot fit still fails here with the figures;
several worker processes each admit up to their share before reading again, and what they all admit beyond
the true free space fails at the write, with the disk's own ENOSPC.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from ..errors import DISK_FULL, TOO_LARGE, LocalError, PermanentError
from ..sizes import format_size

_SHARE = 16
_lock = threading.Lock()  # the files of a worker's threads are admitted one at a time
_known: dict[Path, tuple[int, int]] = {}  # directory → (free bytes when last read, bytes admitted since)


def check(directory: Path, size: int | None, have: int, parts: int, max_size: int | None) -> None:
    """Refuse a file of ``size`` bytes (``have`` already on disk, in ``parts`` parts) that is too large.

    A size learned only at the end is checked as it grows (transfer.py); the writes say if the disk fills.
    """
    if size is None:
        return
    if max_size is not None and size > max_size:
        raise PermanentError(
            f"too large: the server offers {format_size(size)}, max_size is {format_size(max_size)}", code=TOO_LARGE
        )
    # Several parts are copied into a new file, so until the rename the parts and the copy coexist.
    needed = size - have + (size if parts > 1 else 0)
    free = _admit(directory, needed)
    if free is not None:
        raise LocalError(_refusal(directory, size, have, parts, needed, free), DISK_FULL)


def _refusal(directory: Path, size: int, have: int, parts: int, needed: int, free: int) -> str:
    """Why a file does not fit, with the figures, and what to do about it.

    A file in several parts (segments, or a big file's chunks) is on disk twice at its peak: the assembly
    copies every part into the file it renames into place, and only then removes the parts. One part is
    renamed into place itself. ``segments: 1`` alone is not one part: a file larger than chunk_size still
    comes in chunks of it.
    """
    on_disk = f", {format_size(have)} of it on disk already" if have else ""
    head = f"not enough space: needs {format_size(needed)}, {format_size(free)} free in {directory}"
    todo = f"free {format_size(needed - free)} more there"
    if parts == 1:
        return f"{head}: the file is {format_size(size)}{on_disk}; {todo}"
    why = (
        f"in {parts} parts the file is on disk twice until it is renamed into place, as its parts "
        f"({format_size(size)}{on_disk}) and as the assembled copy ({format_size(size)})"
    )
    if have:  # a resume goes on with the parts it has, whatever the manifest now says
        return f"{head}: {why}; {todo}"
    unit, name = (2**30, "GiB") if size >= 2**30 else (2**20, "MiB")
    whole = f"chunk_size: {-(-size // unit)}{name}"  # rounded up: not below the file's size
    return (
        f"{head}: {why}; {todo}, or give this file segments: 1 and {whole}: in one part it is renamed into "
        f"place without a copy and needs {format_size(size)}"
    )


def _admit(directory: Path, needed: int) -> int | None:
    """Count ``needed`` bytes against the directory's free space; if they do not fit, the free bytes."""
    with _lock:
        free, admitted = _known.get(directory, (0, 0))
        if (admitted + needed) * _SHARE > free:
            free, admitted = shutil.disk_usage(directory).free, 0
        if needed > free:
            _known[directory] = (free, admitted)
            return free
        _known[directory] = (free, admitted + needed)
        return None
