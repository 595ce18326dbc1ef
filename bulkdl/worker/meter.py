"""Counting one file's received bytes and passing them on as throttled progress ticks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_TICK_SECONDS = 0.1

# A progress tick: (job index, bytes since the last tick, file size if known).
Send = Callable[[int, int, int | None], None]


class Meter:
    """Counts one file's received bytes; passes them on at most every 0.1 s (threads share it)."""

    def __init__(self, index: int, send: Send | None) -> None:
        self._index = index
        self._send = send
        self._lock = threading.Lock()
        self._unsent = 0
        self._last = time.monotonic()
        self.total = 0
        self.size: int | None = None  # the file's size once known

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n
            self._unsent += n
            now = time.monotonic()
            if now - self._last >= _TICK_SECONDS:
                self._flush(now)

    def flush(self) -> None:
        with self._lock:
            self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        if self._send is not None and self._unsent:
            self._send(self._index, self._unsent, self.size)
        self._unsent = 0
        self._last = now
