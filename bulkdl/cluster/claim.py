"""One writer per file across a Dask cluster, within a run: a flock on a lock file of its own under dest.

A local run has one process per file by construction, and the destination lock keeps other runs out
(parent/lock.py waits for an earlier Dask run's writers too). On a cluster, the scheduler may take a worker
for dead while its process lives on (a network partition, a stalled host): it runs the task again elsewhere,
and two processes would write one file's parts, where a truncation by one under the other's writes leaves
wrong bytes. So a task's thread claims a file before it touches any of its parts, and one that finds it
claimed fails the file (worker_busy) rather than wait: the next run fetches it.

``dest/.bulkdl/file-locks/<sha256 of the name>``, flocked (over NFS the kernel makes that a lock the server
holds), is removed by its holder while it still holds it. A claimer that locked a file a holder had just
removed sees that the name now points elsewhere, or nowhere, and tries again, so two claimers never both
believe they hold one name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def locks_dir(dest_state: Path) -> Path:
    """Under ``dest/.bulkdl/`` (``dest_state``)."""
    return dest_state / "file-locks"


@contextlib.contextmanager
def claimed(directory: Path, name: str) -> Iterator[bool]:
    """Hold ``name`` for the block; False (and nothing held) when another process holds it."""
    path = directory / hashlib.sha256(name.encode()).hexdigest()
    fd = _lock(path)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def _lock(path: Path) -> int | None:
    while True:  # the directory is the client's to make, once a run (client.py)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            named = os.stat(path)
        except FileNotFoundError:
            named = None
        held = os.fstat(fd)
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # its holder removed it between our open and our lock: claim the name anew
