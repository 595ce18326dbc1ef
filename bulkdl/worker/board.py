"""The segment table of one file while its threads fetch it; work stealing happens here.

Segments are handed out in file order (``next``), to as many threads as the file may use: a thread that is
done with one takes the next that nobody has started, so with a big file's chunks the in-order hash follows
the download. Once none is left, a thread that is done takes the second half of the largest range still to
fetch (as aria2 and pget split), so the last seconds of a big file keep every connection busy instead of
waiting on one slow one.
The victim learns of it at its next chunk: it may only ever write up to its segment's end as it is now, and
a split never moves that end below what the victim has already claimed. The new segment gets a new index
(a new part file) and is recorded in the sidecar before the split is visible to any thread, so a kill at any
moment leaves parts that a later run can trust, and a sidecar that cannot be saved leaves the table as it was.

Only a range that will take a while yet is split: each split costs a request, and the cut connection drops
whatever the server had already pushed into it. A range that has run for STEAL_AFTER seconds and, at its
rate so far, needs more than STEAL_WORTH seconds more is a slow tail; a healthy one finishing a moment after
its siblings is left alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace

from .plan import Segment

STEAL_AFTER = 0.5  # seconds a range must have run before its rate says anything
STEAL_WORTH = 1.0  # seconds of work left that make a split worth a new request


class Board:
    def __init__(
        self,
        segments: Iterable[Segment],
        min_steal: int,
        on_split: Callable[[Segment, tuple[Segment, ...]], None] | None,
    ) -> None:
        """``on_split(new, table)`` records a split before it takes effect; None: never split."""
        self._lock = threading.Lock()
        self._segments = {s.index: s for s in segments}
        self._queue = deque(sorted(self._segments, key=lambda i: self._segments[i].start))  # not yet handed out
        self._received = 0  # bytes claimed by every thread: the file's progress, for the ramp
        self._have = dict.fromkeys(self._segments, 0)  # bytes in each part, as its thread last said
        self._began: dict[int, tuple[float, int]] = {}  # when each range's current attempt began, and its bytes
        self._min_steal = min_steal
        self._on_split = on_split

    def segments(self) -> tuple[Segment, ...]:
        """The current table, in file order."""
        with self._lock:
            return tuple(sorted(self._segments.values(), key=lambda s: s.start))

    def next(self) -> Segment | None:
        """The first segment in file order that no thread has taken yet, or None when all have been."""
        with self._lock:
            return self._segments[self._queue.popleft()] if self._queue else None

    def pending(self) -> int:
        """Segments no thread has taken yet."""
        with self._lock:
            return len(self._queue)

    def received(self) -> int:
        """Bytes claimed so far, over all segments."""
        with self._lock:
            return self._received

    def start(self, index: int, have: int) -> Segment:
        """A thread (re)starts segment ``index`` with ``have`` bytes in its part; its segment as it is now."""
        with self._lock:
            self._have[index] = have
            self._began[index] = (time.monotonic(), have)
            return self._segments[index]

    def left(self, index: int) -> int | None:
        """Bytes segment ``index`` still needs (None while the file's length is unknown)."""
        with self._lock:
            segment = self._segments[index]
            return None if segment.length is None else segment.length - self._have[index]

    def claim(self, index: int, n: int) -> int:
        """How many of ``n`` newly read bytes belong to segment ``index`` (fewer once its end moved)."""
        with self._lock:
            segment = self._segments[index]
            if segment.length is not None:
                n = max(0, min(n, segment.length - self._have[index]))
            self._have[index] += n
            self._received += n
            return n

    def steal(self, pause: Callable[[float], bool]) -> Segment | None:
        """Split the slowest range and return its second half, or None once none is worth splitting.

        While a range is too young to judge, wait with ``pause`` (which says True when the file stops).
        """
        if self._on_split is None:
            return None  # nowhere to record a new segment: a file without a sidecar is never split
        while True:
            with self._lock:
                left = {i: s.length - self._have[i] for i, s in self._segments.items() if s.length is not None}
                big = [i for i in left if left[i] // 2 >= self._min_steal]
                eta = {i: self._eta(i, left[i]) for i in big}
                slow = {i: t for i, t in eta.items() if t is not None and t > STEAL_WORTH}
                if slow:
                    return self._split(max(slow, key=lambda i: slow[i]), left)
                if None not in eta.values():
                    return None
            if pause(STEAL_AFTER / 5):
                return None

    def _split(self, index: int, left: dict[int, int]) -> Segment | None:
        """Cut range ``index`` in two, recorded first; None (and no change) when it cannot be recorded."""
        assert self._on_split is not None
        victim = self._segments[index]
        assert victim.end is not None
        thief = Segment(max(self._segments) + 1, victim.end - left[index] // 2, victim.end)
        table = {**self._segments, index: replace(victim, end=thief.start), thief.index: thief}
        try:
            self._on_split(thief, tuple(sorted(table.values(), key=lambda s: s.start)))
        except OSError:
            self._on_split = None  # a disk that cannot take a sidecar now: the ranges finish as they are
            return None
        self._segments = table
        self._have[thief.index] = 0
        return thief

    def _eta(self, index: int, left: int) -> float | None:
        """Seconds range ``index`` needs at its rate so far; None while it is too young to say."""
        if index not in self._began or left <= 0:
            return None
        began, had = self._began[index]
        elapsed = time.monotonic() - began
        if elapsed < STEAL_AFTER:
            return None
        rate = (self._have[index] - had) / elapsed
        return float("inf") if rate <= 0 else left / rate
