"""Deadlines on sockets: one watchdog thread per process shuts a socket down when its deadline passes.

A socket timeout bounds each recv, not a whole exchange: a server that sends its response head one byte a
second never trips it, and urllib3 has no total timeout. net.py asks for a deadline around receiving each
response head. There may be a request every millisecond, so a deadline costs one heap push and one flag
under a lock, never a thread or a timer of its own; a cancelled deadline stays in the heap until it is
due, or until cancelled ones are half of the heap and it is compacted, so memory follows the number of
requests in flight.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any

_COMPACT_AT = 256  # cancelled entries before compaction is worth a pass over the heap


class Watch:
    """One socket's deadline; mutable, and only ever touched under the watchdog's lock."""

    __slots__ = ("done", "fired", "sock", "when")

    def __init__(self, when: float, sock: socket.socket) -> None:
        self.when = when
        self.sock = sock
        self.done = False  # cancelled, or fired
        self.fired = False


class _Watchdog:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also the child's state after a fork: the parent's thread does not exist there.
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()  # ties in the heap compare by this, never by Watch
        self._cancelled = 0  # done entries still in the heap
        self._thread: threading.Thread | None = None

    def watch(self, sock: Any, seconds: float) -> Watch | None:
        """Shut ``sock`` down ``seconds`` from now unless cancelled first; None if it is no socket."""
        raw = _raw_socket(sock)
        if raw is None:
            return None
        watch = Watch(time.monotonic() + seconds, raw)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bulkdl-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (watch.when, next(self._order), watch))
            if self._heap[0][2] is watch:  # the earliest now: the thread sleeps until a later one
                self._cond.notify()
        return watch

    def cancel(self, watch: Watch) -> bool:
        """Stop watching; True when the deadline passed first and the socket was shut down."""
        with self._cond:
            if not watch.done:
                watch.done = True
                self._cancelled += 1
                if self._cancelled > _COMPACT_AT and 2 * self._cancelled > len(self._heap):
                    self._heap = [entry for entry in self._heap if not entry[2].done]
                    heapq.heapify(self._heap)
                    self._cancelled = 0
            return watch.fired

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, watch = heapq.heappop(self._heap)
                    if watch.done:
                        self._cancelled -= 1
                        continue
                    watch.done = watch.fired = True
                    # Under the lock: the owner closes the socket only after cancel(), so this fd is still
                    # the socket it was, not a new one that reused the number.
                    _shut(watch.sock)
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def pending(self) -> int:
        """Entries in the heap, cancelled ones included (for tests of the memory bound)."""
        with self._cond:
            return len(self._heap)


def _raw_socket(sock: Any) -> socket.socket | None:
    """The OS socket under ``sock``: an SSLSocket is one; urllib3's SSLTransport (TLS in TLS) wraps one."""
    for _ in range(4):
        if isinstance(sock, socket.socket):
            return sock
        sock = getattr(sock, "socket", None)
    return None


def _shut(sock: socket.socket) -> None:
    """Shut the connection down at the OS level, so that a thread blocked reading it wakes with EOF.

    socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops the TLS object the reading thread
    is still using, which would turn its next read into a ValueError instead of a clean end of stream.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_watchdog = _Watchdog()
watch = _watchdog.watch
cancel = _watchdog.cancel
pending = _watchdog.pending
os.register_at_fork(after_in_child=_watchdog._reset)
