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


# The decisions that need nothing of the file's own are made once: a run of 100,000 skips holds one, not
# 100,000.
_RESUMING = Decision(RESUME, "a partial download is on disk")
_FORCED = Decision(DOWNLOAD, "--force")
_NEW = Decision(DOWNLOAD, "not on disk")
_DELETED = Decision(DOWNLOAD, "deleted from disk since the last run")
_UNRECORDED = Decision(DOWNLOAD, "on disk, but no earlier run recorded it")
_CHANGED_LOCALLY = Decision(DOWNLOAD, "changed on disk since the last run (size or mtime)")
_NEW_DIGEST = Decision(DOWNLOAD, "the manifest's digest differs from the one recorded")
_NEW_SIZE = Decision(DOWNLOAD, "the manifest's size differs from the one recorded")
_PROVEN = Decision(SKIP, "size, mtime and digest match the last run")
_MOVED = Decision(DOWNLOAD, "the URL changed since the last run")
_NO_VALIDATORS = Decision(DOWNLOAD, "the server sent no ETag or Last-Modified last time")


def decide(job: Job, row: Row | None, local: os.stat_result | None, has_sidecar: bool, force: bool) -> Decision:
    if has_sidecar:
        return _RESUMING
    if force:
        return _FORCED
    if local is None:
        return _NEW if row is None else _DELETED
    if row is None:
        return _UNRECORDED
    if local.st_size != row.local_size or local.st_mtime_ns != row.local_mtime_ns:
        return _CHANGED_LOCALLY
    return _remote(job, row)


def _remote(job: Job, row: Row) -> Decision:
    recorded = dict(row.digests)
    comparable = 0
    for algorithm, expected in job.digests:
        if algorithm in recorded:
            if recorded[algorithm] != expected:
                return _NEW_DIGEST
            comparable += 1
    if job.size is not None and job.size != row.size:
        return _NEW_SIZE
    if job.digests and comparable == len(job.digests):
        return _PROVEN
    if row.url != job.shown_url:
        return _MOVED
    if not (row.etag or row.last_modified):
        return _NO_VALIDATORS
    condition = Condition(row.etag, row.last_modified, row.size, row.digests, row.local_mtime_ns)
    header = "If-None-Match" if row.etag else "If-Modified-Since"
    return Decision(CHECK, f"conditional GET ({header})", condition)
