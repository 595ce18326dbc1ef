"""What a run does with each file, cheapest first. Pure: ``--dry-run`` prints exactly what a run would do.

1. a partial download is on disk                               → resume it
2. ``--force``                                                 → download
3. the file on disk is not the one the state recorded          → download
4. the manifest's digests match the state's, size/mtime too    → skip, no request at all
5. the state has the server's validators                       → conditional GET; 304 → skip
6. otherwise                                                   → download
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..values import Condition, Job
from .state import Row

RESUME, DOWNLOAD, SKIP, CHECK = "resume", "download", "skip", "check"


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    reason: str
    condition: Condition | None = None


def decide(job: Job, row: Row | None, local: os.stat_result | None, has_sidecar: bool, force: bool) -> Decision:
    if has_sidecar:
        return Decision(RESUME, "a partial download is on disk")
    if force:
        return Decision(DOWNLOAD, "--force")
    if local is None:
        return Decision(DOWNLOAD, "not on disk" if row is None else "deleted from disk since the last run")
    if row is None:
        return Decision(DOWNLOAD, "on disk, but no earlier run recorded it")
    if (local.st_size, local.st_mtime_ns) != (row.local_size, row.local_mtime_ns):
        return Decision(DOWNLOAD, "changed on disk since the last run (size or mtime)")
    return _remote(job, row)


def _remote(job: Job, row: Row) -> Decision:
    recorded = dict(row.digests)
    comparable = [(algorithm, expected) for algorithm, expected in job.digests if algorithm in recorded]
    if any(recorded[algorithm] != expected for algorithm, expected in comparable):
        return Decision(DOWNLOAD, "the manifest's digest differs from the one recorded")
    if job.size is not None and job.size != row.size:
        return Decision(DOWNLOAD, "the manifest's size differs from the one recorded")
    if job.digests and len(comparable) == len(job.digests):
        return Decision(SKIP, "size, mtime and digest match the last run")
    if row.url != job.shown_url:
        return Decision(DOWNLOAD, "the URL changed since the last run")
    if not (row.etag or row.last_modified):
        return Decision(DOWNLOAD, "the server sent no ETag or Last-Modified last time")
    condition = Condition(row.etag, row.last_modified, row.size, row.digests, row.local_mtime_ns)
    header = "If-None-Match" if row.etag else "If-Modified-Since"
    return Decision(CHECK, f"conditional GET ({header})", condition)
