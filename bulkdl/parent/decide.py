"""What a run does with each file, cheapest first. Pure: ``--dry-run`` prints exactly what a run would do.

1. a partial download is on disk                               → resume it
2. ``--force``                                                 → download
3. the file on disk is not the one the state recorded          → download; but with digests in the
   manifest (and a size that fits)                             → adopt: hash it, keep it if they match
4. the manifest's digests match the state's, size/mtime too    → skip, no request at all
   (``--revalidate``: a conditional GET all the same, or a plain GET whose bytes are compared with the pinned
   digest when the state has no validators for this URL: upstream may have changed or removed the file)
5. the state has the server's validators                       → conditional GET; 304 → skip
6. otherwise                                                   → download
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ..values import Condition, Job
from .state import Row

RESUME, DOWNLOAD, SKIP, CHECK, ADOPT = "resume", "download", "skip", "check", "adopt"


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    reason: str
    condition: Condition | None = None
    revalidating: bool = False  # --revalidate asks about a file the state already proves current
    # What became of the copy in dest, when that is why the file is fetched: a download of it says so first
    # (run._with_cause), so that the summary can name each file someone removed or edited (ON_DISK).
    cause: str | None = None


def _because(reason: str) -> Decision:
    """A download whose reason is what became of the copy in dest."""
    return Decision(DOWNLOAD, reason, cause=reason)


# The decisions that need nothing of the file's own are made once: a run of 100,000 skips holds one, not
# 100,000.
_RESUMING = Decision(RESUME, "a partial download is on disk")
_FORCED = Decision(DOWNLOAD, "--force")
_NEW = Decision(DOWNLOAD, "not on disk")
_DELETED = _because("deleted from disk since the last run")
_UNRECORDED = _because("on disk, but no earlier run recorded it")
_CHANGED_LOCALLY = _because("changed on disk since the last run (size or mtime)")
_NOT_A_FILE = _because("on disk, but not a regular file (a symlink, a directory or a FIFO)")
_IF_MATCHING = ": kept if its bytes match the manifest's digests"
_WRONG_SIZE = ", and its size is not the manifest's"
# The causes of a copy someone removed or edited in the mirror (not one no row described: a seeded mirror's
# files are new to the state, and the summary lists them as new anyway).
ON_DISK = frozenset(
    {_DELETED.reason, _CHANGED_LOCALLY.reason, _CHANGED_LOCALLY.reason + _WRONG_SIZE, _NOT_A_FILE.reason}
)
_NEW_DIGEST = Decision(DOWNLOAD, "the manifest's digest differs from the one recorded")
_NEW_SIZE = Decision(DOWNLOAD, "the manifest's size differs from the one recorded")
_PROVEN = Decision(SKIP, "size, mtime and digest match the last run")
_MOVED = Decision(DOWNLOAD, "the URL changed since the last run")
_NO_VALIDATORS = Decision(DOWNLOAD, "the server sent no ETag or Last-Modified last time")
_REVALIDATE = {
    header: f"--revalidate: conditional GET ({header}) though size, mtime and digest match the last run"
    for header in ("If-None-Match", "If-Modified-Since")
}
_REVALIDATE_MOVED = f"--revalidate: plain GET, its bytes compared with the pinned digest ({_MOVED.reason})"
_REVALIDATE_ANONYMOUS = f"--revalidate: plain GET, its bytes compared with the pinned digest ({_NO_VALIDATORS.reason})"


def decide(
    job: Job, row: Row | None, local: os.stat_result | None, has_sidecar: bool, force: bool, revalidate: bool = False
) -> Decision:
    if has_sidecar:
        return _RESUMING
    if force:
        return _FORCED
    if local is None:
        return _NEW if row is None else _DELETED
    if not stat.S_ISREG(local.st_mode):  # a symlink or a directory in its place: never the mirror's file
        return _NOT_A_FILE
    if row is None:
        return _adoption(job, local, _UNRECORDED, None, revalidate)
    if local.st_size != row.local_size or local.st_mtime_ns != row.local_mtime_ns:
        return _adoption(job, local, _CHANGED_LOCALLY, row, revalidate)
    return _remote(job, row, revalidate)


def started_over(problem: str) -> Decision:
    """A partial download on disk that the worker will remove rather than continue (worker/parts.partial)."""
    return Decision(DOWNLOAD, f"a partial download is on disk that cannot be continued ({problem}): from the start")


def _adoption(job: Job, local: os.stat_result, otherwise: Decision, row: Row | None, revalidate: bool) -> Decision:
    """A copy on disk that no row describes (none, or one of another size or mtime) is hashed in the worker
    rather than fetched again, when the manifest pins a digest to hold it to: reading a file costs a fraction
    of downloading it, and a mirror seeded by rsync, a lost state, a touched file or a kill -9 between
    install and record would otherwise cost a download each. Without such a digest, or with --revalidate
    (which asks the server about every file: adopting would ask nothing), ``otherwise``.

    The row's validators and digests go along when the row is this URL's: if the bytes turn out to be the
    very ones recorded, the server's ETag still describes them."""
    if not job.digests:
        return otherwise
    if job.size != local.st_size and job.size is not None:
        return _because(otherwise.reason + _WRONG_SIZE)
    if revalidate:
        return otherwise
    etag, modified = None, None
    recorded: tuple[tuple[str, str], ...] = ()
    if row is not None and row.url == job.shown_url:  # another URL's validators say nothing of this one
        etag, modified, recorded = row.etag, row.last_modified, row.digests
    condition = Condition(etag, modified, local.st_size, recorded, local.st_mtime_ns, adopt=True)
    return Decision(ADOPT, otherwise.reason + _IF_MATCHING, condition, cause=otherwise.cause)


def _remote(job: Job, row: Row, revalidate: bool) -> Decision:
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
        return _revalidation(job, row) if revalidate else _PROVEN
    if row.url != job.shown_url:
        return _MOVED
    if not (row.etag or row.last_modified):
        return _NO_VALIDATORS
    return Decision(CHECK, f"conditional GET ({_header(row)})", _condition(row))


def _revalidation(job: Job, row: Row) -> Decision:
    """A request for a file the state proves current, so that a change or a removal upstream is noticed.

    Without validators for this URL no answer can say "unchanged" (304): the file is fetched and its bytes
    compared with the pinned digest, and the copy on disk is replaced only by bytes that match it.
    """
    if row.url != job.shown_url:
        return Decision(CHECK, _REVALIDATE_MOVED, _condition(row, False), True)
    if not (row.etag or row.last_modified):
        return Decision(CHECK, _REVALIDATE_ANONYMOUS, _condition(row, False), True)
    return Decision(CHECK, _REVALIDATE[_header(row)], _condition(row), True)


def _header(row: Row) -> str:
    return "If-None-Match" if row.etag else "If-Modified-Since"


def _condition(row: Row, validators: bool = True) -> Condition:
    """What the worker needs to know of the copy on disk; ``validators``: send the state's (the URL's own)."""
    etag, modified = (row.etag, row.last_modified) if validators else (None, None)
    return Condition(etag, modified, row.size, row.digests, row.local_mtime_ns)
