"""One run at a time per destination: an exclusive flock on ``<dest>/.bulkdl/lock``.

The kernel drops a flock when its holder dies, however it dies, so a killed run never leaves a stale lock.
The holder writes its pid into the file so that the run it turns away can say who holds the destination.

The lock dies with the run's process, but a Dask run's writers are elsewhere: a task of a bulkdl killed a
moment ago writes on until its worker notices (bulkdl.client-lost-after, cluster/task.py). So every Dask
worker process serving a run holds a shared flock on ``<dest>/.bulkdl/writers`` while it may write into dest,
and a run that takes the lock then waits (``WRITERS_WAIT`` at most) to take that one exclusively, and lets it
go at once: from then on no earlier run's worker writes into dest, and two writers never share a part.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from ..errors import BulkdlError

WRITERS_WAIT = 90.0  # seconds: the workers' client-lost-after (20 s), then their files' next read


class Locked(BulkdlError):
    """Another run holds the destination."""


def writers_path(dest: Path) -> Path:
    return dest / ".bulkdl" / "writers"


class DestinationLock:
    def __init__(self, dest: Path) -> None:
        self.path = dest / ".bulkdl" / "lock"
        self._fd: int | None = None

    def __enter__(self) -> DestinationLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise Locked(f"another bulkdl run holds {self.path.parent.parent} (pid {holder})") from None
        _write_over(fd, f"{os.getpid()}\n")
        self._fd = fd
        try:
            _no_writers_left(self.path.parent.parent)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays for the next run
            self._fd = None


def _no_writers_left(dest: Path, wait: float = WRITERS_WAIT) -> None:
    """Return once no worker of an earlier run may write into ``dest`` any more; Locked after ``wait`` s."""
    try:
        fd = os.open(writers_path(dest), os.O_RDWR)
    except FileNotFoundError:  # no Dask run ever wrote here (it makes the file)
        return
    deadline, said = time.monotonic() + wait, False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Named now as this run's: a task of an earlier run that starts only later writes nothing.
                _write_over(fd, f"pid {os.getpid()}\n")
                return  # closing lets it go: this run's own workers take it shared
            except BlockingIOError:
                if not said:  # a cron mail that shows a run slow to start says why
                    print(
                        f"bulkdl: waiting up to {wait:g} s for the Dask workers of an earlier run to stop writing "
                        f"into {dest}",
                        file=sys.stderr,
                    )
                    said = True
                if time.monotonic() >= deadline:
                    raise Locked(
                        f"the Dask workers of an earlier bulkdl run still write into {dest} after {wait:g} s "
                        "(that bulkdl was killed; its workers stop once they miss it for "
                        "bulkdl.client-lost-after): run again later, or restart those workers"
                    ) from None
                time.sleep(0.2)
    finally:
        os.close(fd)


def mark_writers(dest: Path, run: str) -> None:
    """Name the Dask run ``run`` as the one whose tasks may write into ``dest`` (it holds the lock)."""
    fd = os.open(writers_path(dest), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _write_over(fd, f"{run}\n")
    finally:
        os.close(fd)


def _write_over(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)
