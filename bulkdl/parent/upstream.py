"""What a worker's result means for the copy the mirror already holds: gone upstream, or revalidated.

The worker knows only what the server answered; the parent knows whether a copy the state recorded is in
place. A 404 or 410 (from every source) for such a file keeps the copy, and its state row, and says so:
rsync and bandersnatch keep a file upstream dropped until told to delete it, and prune removes it only once
the manifest no longer lists it. The same answer for a file the mirror does not hold is a failure.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

from ..values import FileResult, Status
from ..worker.heads import GONE
from .state import Row

_REVALIDATED = ("revalidated (--revalidate)",)  # asked although the state proved the copy by its digest


def settle(result: FileResult, row: Row | None, dest: Path, revalidating: bool) -> FileResult:
    """``result`` as the summary, the report and the state should see it; ``row``: the state's for its path
    before the run; ``revalidating``: asked only because of --revalidate."""
    if result.status == Status.FAILED and result.http_status in GONE and row is not None:
        result = _gone(result, row, dest)
    if revalidating:
        result = replace(result, notes=(*_REVALIDATED, *result.notes))
    return result


def _gone(result: FileResult, row: Row, dest: Path) -> FileResult:
    try:
        local = os.stat(dest.joinpath(*result.name.split("/")))
    except OSError:  # deleted from disk since: nothing is kept, so the file failed
        return result
    if not stat.S_ISREG(local.st_mode):
        return result
    # The state's digests describe the copy only while it has the size and mtime it was recorded with.
    recorded = (local.st_size, local.st_mtime_ns) == (row.local_size, row.local_mtime_ns)
    return replace(
        result,
        status=Status.GONE,
        error=f"gone upstream (HTTP {result.http_status}); local copy kept",
        size=local.st_size,
        sha256=row.sha256 if recorded else None,
        digests=row.digests if recorded else (),
    )
