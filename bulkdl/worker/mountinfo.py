"""Whether a file's bytes may be read through a memory mapping: only where they live on a local file system.

A read that fails through a mapping is not an OSError but a SIGBUS, and the process dies: on NFS, SMB or a
FUSE file system a page that was evicted and is read again can fail (a soft mount's timeout, a server's
error), and the worker would die with every file it has in flight. On a local file system the pages the
assembly maps are the ones just written. Anything not known to be local is read through a buffer instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_LOCAL = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs", "jfs", "tmpfs", "ramfs", "overlay"}
)
MOUNTINFO = "/proc/self/mountinfo"

# Per device, shared by a worker's threads without a lock: two that both miss compute the same answer.
_known: dict[int, bool] = {}


def mappable(fd: int) -> bool:
    """Whether the file open as ``fd`` may be read through a mapping."""
    device = os.fstat(fd).st_dev
    known = _known.get(device)
    if known is None:
        known = _known[device] = _fstype(device) in _LOCAL
    return known


def refused(fd: int) -> None:
    """A mapping of ``fd`` failed: its file system is read through a buffer from now on."""
    _known[os.fstat(fd).st_dev] = False


def _fstype(device: int) -> str | None:
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="replace") as lines:
            return fstype_of(lines, device)
    except OSError:  # no /proc (not Linux, a chroot): nothing is known to be local
        return None


def fstype_of(lines: Iterable[str], device: int) -> str | None:
    """The file system type of ``device`` in mountinfo ``lines`` (proc(5)): the field after the " - "
    that ends the optional fields, on the line whose third field is the device's major:minor."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and "-" in fields[3:]:
            after = fields.index("-", 3) + 1
            if after < len(fields):
                return fields[after]
    return None
