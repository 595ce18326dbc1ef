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

from ..values import FileResult, Job, Status
from ..worker.heads import GONE
from .state import Row

_REVALIDATED = ("revalidated (--revalidate)",)  # asked although the state proved the copy by its digest


def settle(result: FileResult, job: Job, row: Row | None, dest: Path, revalidating: bool) -> FileResult:
    """``result`` as the summary, the report and the state should see it; ``row``: the state's for its path
    before the run; ``revalidating``: asked only because of --revalidate."""
    if result.status == Status.FAILED and result.http_status in GONE and row is not None:
        result = _gone(result, job, row, dest)
    if revalidating and result.status == Status.SKIPPED:  # a 304: the copy was asked about, and is current
        result = replace(result, notes=(*_REVALIDATED, *result.notes))
    return result


def _gone(result: FileResult, job: Job, row: Row, dest: Path) -> FileResult:
    try:
        local = os.lstat(dest.joinpath(*result.name.split("/")))  # a symlink in its place is no copy kept
    except OSError:  # deleted from disk since: nothing is kept, so the file failed
        return result
    if not stat.S_ISREG(local.st_mode):
        return result
    # The state's digests describe the copy only while it has the size and mtime it was recorded with.
    recorded = (local.st_size, local.st_mtime_ns) == (row.local_size, row.local_mtime_ns)
    unlike = _unlike(job, row) if recorded else "it changed on disk since bulkdl recorded it"
    if unlike is not None:
        # Kept, but not the file the manifest asks for: the run must not say the mirror is whole (exit 0, a
        # trace for downstream), nor let prune go ahead.
        return replace(result, error=f"gone upstream (HTTP {result.http_status}); local copy kept, but {unlike}")
    return replace(
        result,
        status=Status.GONE,
        error=f"gone upstream (HTTP {result.http_status}); local copy kept",
        size=local.st_size,
        sha256=row.sha256 if recorded else None,
        digests=row.digests if recorded else (),
    )


def _unlike(job: Job, row: Row) -> str | None:
    """How the recorded copy differs from what the manifest pins now, if it does."""
    if job.size is not None and job.size != row.size:
        return f"the manifest now wants {job.size} bytes, the copy has {row.size}"
    recorded = dict(row.digests)
    for algorithm, expected in job.digests:
        if recorded.get(algorithm, expected) != expected:
            return f"the manifest now pins another {algorithm} than the copy's"
    return None
