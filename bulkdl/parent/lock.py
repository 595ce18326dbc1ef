"""One run at a time per destination: an exclusive flock on ``<dest>/.bulkdl/lock``.

The kernel drops a flock when its holder dies, however it dies, so a killed run never leaves a stale lock.
The holder writes its pid into the file so that the run it turns away can say who holds the destination.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import BulkdlError


class Locked(BulkdlError):
    """Another run holds the destination."""


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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays for the next run
            self._fd = None
