"""How many connections one big file uses: as few as fill the link, found by measuring.

A chunked file (plan.layout) starts on START connections. Its total rate is measured over windows of WINDOW
seconds, the first one beginning only after SETTLE seconds: a server's or TCP's first burst says nothing about
the steady rate. After each window the count doubles, up to the file's ``segments``, while the last doubling
raised the rate by at least GAIN; the first doubling that did not is undone (the threads above the count
finish their chunk and take no other) and the count stays. On a loopback where two cores, not the link, are
the limit, two connections win; behind a per-connection cap each doubling nearly doubles the rate, so the
count climbs to ``segments`` in three windows.

A Ramp is pure arithmetic on (time, bytes received) samples; transfer.py takes them and starts the threads.
"""

from __future__ import annotations

START = 2  # connections a chunked file begins with
SETTLE = 0.5  # seconds before the first window: the initial burst is not the rate
WINDOW = 0.5  # seconds each rate is measured over
GAIN = 1.25  # a doubling is kept only when the rate grew by at least this factor


class Ramp:
    def __init__(self, limit: int) -> None:
        self.width = min(START, limit)  # threads that may take a new chunk now
        self._limit = limit
        self._kept: tuple[int, float] | None = None  # the width before the last doubling, and its rate
        self._mark: tuple[float, int] | None = None  # when the current window began, and the bytes by then

    def step(self, now: float, received: int) -> bool:
        """Close the window at ``now`` with ``received`` bytes in all; True while the width may still change."""
        if self._mark is None:  # the settling time is over: the first window starts
            self._mark = (now, received)
            return True
        began, had = self._mark
        rate = (received - had) / max(now - began, 1e-6)
        self._mark = (now, received)
        if self._kept is not None and rate < self._kept[1] * GAIN:
            self.width = self._kept[0]  # the last doubling bought nothing: undo it
            return False
        if self.width >= self._limit:
            return False
        self._kept = (self.width, rate)
        self.width = min(self._limit, self.width * 2)
        return True
