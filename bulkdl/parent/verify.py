"""``bulkdl verify``: re-hash the files on disk against the manifest's digests and the state's, offline.

Hashing runs on threads: hashlib releases the GIL for large buffers, so files hash in parallel.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from .. import errors
from ..hashing import hash_file
from ..values import FileResult, Job, Status
from .state import Row

VERIFIED, CORRUPT, MISSING, UNVERIFIED = Status.VERIFIED, Status.CORRUPT, Status.MISSING, Status.UNVERIFIED


def verify(jobs: tuple[Job, ...], rows: dict[str, Row], workers: int) -> list[FileResult]:
    with ThreadPoolExecutor(max_workers=workers) as threads:
        return list(threads.map(lambda job: _verify_one(job, rows.get(job.name)), jobs))


def _verify_one(job: Job, row: Row | None) -> FileResult:
    started = time.monotonic()
    result = FileResult(job.index, job.name, job.shown_url, MISSING, None, 0, None, 0.0)
    try:
        found = os.lstat(job.path)
        if not stat.S_ISREG(found.st_mode):  # a symlink's target may hold the bytes, but the mirror does not
            return replace(result, status=CORRUPT, error=f"not a regular file: {_kind(found)}", code=errors.LOCAL_IO)
        size = found.st_size
        recorded = dict(row.digests) if row else {}
        digests = hash_file(job.path, {"sha256", *dict(job.digests), *recorded})
    except FileNotFoundError:
        return replace(result, error="not on disk", code=errors.MISSING)
    except OSError as exc:
        return replace(result, status=CORRUPT, error=f"cannot read: {exc.strerror}", code=errors.local_code(exc))
    problems = _mismatches(job, row, size, digests)
    status = CORRUPT if problems else (VERIFIED if job.digests or row else UNVERIFIED)
    notes = () if status != UNVERIFIED else ("no digest in the manifest or the state to compare with",)
    elapsed = time.monotonic() - started
    error = "; ".join(text for _, text in problems) or None
    code = problems[0][0] if problems else None
    return replace(
        result, status=status, size=size, sha256=digests["sha256"], elapsed=elapsed, error=error, notes=notes, code=code
    )


def _kind(found: os.stat_result) -> str:
    if stat.S_ISLNK(found.st_mode):
        return "a symlink"
    return "a directory" if stat.S_ISDIR(found.st_mode) else "a special file"


def _mismatches(job: Job, row: Row | None, size: int, digests: dict[str, str]) -> list[tuple[str, str]]:
    """(code, message) of each way the file differs from what the manifest and the state expect."""
    problems = []
    expected_size = job.size if job.size is not None else (row.size if row else None)
    if expected_size is not None and size != expected_size:
        problems.append((errors.SIZE, f"size mismatch: {size} bytes on disk, expected {expected_size}"))
    sources = [("manifest", dict(job.digests)), ("state", dict(row.digests) if row else {})]
    for source, expected in sources:
        for algorithm, hex_digest in expected.items():
            if digests[algorithm] != hex_digest:
                problems.append(
                    (
                        errors.CHECKSUM,
                        f"{algorithm} mismatch: {source} says {hex_digest}, file has {digests[algorithm]}",
                    )
                )
                break
    return problems
