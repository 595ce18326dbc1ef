"""Whether an answer's bytes may be appended where a part continues: checked before its first byte is written.

A part only ever grows by bytes that belong exactly at its end, from the same version of the file. Anything
else is a changed file (restart), a server that does not honour ranges (one stream), or a mirror that serves
something else (dropped).
"""

from __future__ import annotations

from ..errors import PermanentError, RangeNotHonoured, RemoteChanged
from . import net
from .plan import Plan


def check(current: Plan | None, first: int, head: net.Head) -> None:
    """Accept a response only if its bytes belong exactly where the part continues."""
    if current is not None and (change := changed(current, head)):
        raise RemoteChanged(change)
    if head.ranged and head.start != first:
        raise RangeNotHonoured(f"asked for bytes {first}- and got bytes {head.start}-")
    if not head.ranged and first > 0 and (current is None or current.ranged):
        raise RangeNotHonoured("server ignored Range")


def check_mirror(current: Plan, first: int, head: net.Head) -> None:
    """A mirror's validators are its own: it must agree on the size and answer exactly the range asked."""
    if head.total is not None and head.total != current.size:
        raise PermanentError(f"disagrees on the size: {head.total} bytes, not {current.size}")
    if head.start != first or (not head.ranged and first > 0):
        raise RangeNotHonoured(f"asked for bytes {first}- and got bytes {head.start}-")


def changed(current: Plan, head: net.Head) -> str | None:
    """How the file differs from the version the plan was made for, or None when nothing says it does."""
    if head.total is not None and current.size is not None and head.total != current.size:
        return f"size changed from {current.size} to {head.total} bytes"
    if current.etag and head.etag and head.etag != current.etag:
        return f"ETag changed from {current.etag} to {head.etag}"
    if current.last_modified and head.last_modified and head.last_modified != current.last_modified:
        return f"Last-Modified changed from {current.last_modified} to {head.last_modified}"
    return None
