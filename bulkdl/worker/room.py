"""Whether a file may be written here at all: its size against max_size and the free disk space.

Checked before the first byte is written, so a file that cannot fit fails with the figures a user needs
instead of filling the disk for the files after it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import LocalError, PermanentError
from ..sizes import format_size


def check(directory: Path, size: int | None, have: int, parts: int, max_size: int | None) -> None:
    """Refuse a file of ``size`` bytes (``have`` already on disk, in ``parts`` parts) that is too large.

    A size learned only at the end is checked as it grows (transfer.py); the writes say if the disk fills.
    """
    if size is None:
        return
    if max_size is not None and size > max_size:
        raise PermanentError(f"too large: the server offers {format_size(size)}, max_size is {format_size(max_size)}")
    # Several parts are copied into a new file, so until the rename the parts and the copy coexist.
    needed = size - have + (size if parts > 1 else 0)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise LocalError(
            f"not enough space: needs {format_size(needed)}, {format_size(free)} free"
            + (" (its parts and the assembled copy coexist until the rename)" if parts > 1 else "")
        )
