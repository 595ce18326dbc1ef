"""When to try again and how long to wait: a small value, as urllib3's ``Retry``, and the loop that uses it.

Transient failures are retried with exponential backoff and full jitter (AWS's "Exponential Backoff And
Jitter"); a server's Retry-After wins, up to a cap. The budget counts failures in a row: it starts again
whenever the attempt moved bytes, so a long download over a flaky link is not failed for its total of
hiccups. Every wait watches a Halt, so a sibling's failure or the end of the run ends it at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import TOO_SLOW, TransientError

_T = TypeVar("_T")
_HALT_POLL = 0.05  # seconds between looks at the run's stop flag while waiting on a file's own abort


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Cancelled(Exception):
    """The run is stopping, or a sibling segment failed: the part stays as it is, resumable."""


class Halt:
    """One file's stop: set by its own failure (``abort``) or by the run's stop flag, whichever comes first."""

    def __init__(self, stop: StopFlag) -> None:
        self._stop = stop
        self._abort = threading.Event()

    def abort(self) -> None:
        self._abort.set()

    def is_set(self) -> bool:
        return self._abort.is_set() or self._stop.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True (early) once the file is to stop."""
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._abort.wait(min(left, _HALT_POLL))
        return True

    def check(self) -> None:
        if self.is_set():
            raise Cancelled


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int  # failures in a row allowed after the first attempt
    max_retry_after: float = 60.0  # a server's Retry-After is honoured up to this many seconds
    base: float = 0.5  # the first backoff is uniform in [0, base)
    cap: float = 30.0

    def gives_up(self, failures: int) -> bool:
        return failures > self.retries

    def delay(self, failures: int, retry_after: float | None, draw: Callable[[float, float], float]) -> float:
        """Seconds to wait before attempt ``failures + 1``; ``draw`` is random.uniform but for tests."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        return draw(0, min(self.cap, self.base * 2 ** (failures - 1)))


def retrying(
    attempt: Callable[[], _T],
    position: Callable[[], int],
    policy: RetryPolicy,
    halt: Halt,
    retried: list[str],
    on_retry: Callable[[str, float, int], None] | None = None,
) -> _T:
    """Run ``attempt`` until it succeeds; TransientErrors are retried per ``policy`` and noted in ``retried``.

    ``on_retry(reason, delay, failures)`` hears of each retry before its wait (the run's log, when asked for).
    """
    failures, mark = 0, position()
    while True:
        halt.check()
        try:
            return attempt()
        except TransientError as exc:
            if position() > mark:
                failures, mark = 0, position()
            failures += 1
            if policy.gives_up(failures):
                raise TransientError(f"{exc} (gave up after {failures} attempts)", code=exc.code) from None
            retried.append(str(exc))
            delay = policy.delay(failures, exc.retry_after, random.uniform)
            if on_retry is not None:
                on_retry(str(exc), delay, failures)
            if halt.wait(delay):
                raise Cancelled from None


class SpeedGuard:
    """aria2's lowest-speed-limit: a stream slower than ``min_speed`` over a whole window is given up on.

    A read timeout catches a server that sends nothing; this catches one that trickles.
    """

    def __init__(self, min_speed: int, window: float) -> None:
        self._min_speed = min_speed
        self._window = window
        self._start = time.monotonic()
        self._bytes = 0

    def add(self, n: int) -> None:
        if not self._min_speed:
            return
        self._bytes += n
        elapsed = time.monotonic() - self._start
        if elapsed < self._window:
            return
        speed = self._bytes / elapsed
        if speed < self._min_speed:
            raise TransientError(
                f"too slow: {speed:.0f} B/s over {elapsed:.0f} s (min_speed is {self._min_speed} B/s)", code=TOO_SLOW
            )
        self._start, self._bytes = time.monotonic(), 0
