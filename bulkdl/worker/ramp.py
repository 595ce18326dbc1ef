"""How many connections one big file uses: as few as keep its rate, found by measuring.

A chunked file (plan.layout) starts on all the connections it may use (its ``segments``), as aria2c's ``-x``
and rclone's multi-thread streams do: a server that caps each connection then gets every one of them from the
first byte, and any measuring that starts lower costs that server the capacity left unused while it measures
(a doubling ramp from 2 to 16 made a 1 GiB file behind a 20 MiB/s cap 0.65 times as fast as the link).

Then it narrows. The total rate is measured over windows of WINDOW seconds, the first beginning SETTLE
seconds in: a server's or TCP's first burst says nothing about the steady rate. The full width's rate is the
best of its first BASELINE windows, so that one stalled window (a cold server, a lost packet) does not make
half the connections look as good. Then the width halves after each window while the halved width keeps at
least 1/GAIN of the best rate seen; the first halving that loses more is undone and the width stays. A
halving is measured only once it has taken effect (the threads above the width finish the chunk they hold,
then wait), so a window never credits the narrower width with the wider one's bytes, and a halving the file
ends before measuring is not kept (``kept``). Where one connection fills the link, or two cores are the limit
(loopback), the file ends on one or two connections; behind a per-connection cap the first halving halves
the rate and the width goes back to all.

A window measured low after a halving (a new burst elsewhere, a connection still growing its TCP window)
undoes that halving: such errors leave more connections, never fewer. Only a full width stalled for all of
its first BASELINE windows can still be narrowed wrongly.

A Ramp is pure arithmetic on (time, bytes received) samples; Lanes holds the threads above the width;
transfer.py takes the samples and starts the threads.
"""

from __future__ import annotations

import threading

SETTLE = 0.5  # seconds before the first window: the initial burst is not the rate
WINDOW = 0.3  # seconds each rate is measured over
GAIN = 1.25  # a halving is kept while the rate stays above the best seen divided by this
BASELINE = 2  # windows the first width is measured over before its first halving


class Ramp:
    def __init__(self, limit: int) -> None:
        self.width = limit  # threads that may take a new chunk now
        self._best: tuple[int, float] | None = None  # the narrowest width that kept the best rate, and that rate
        self._mark: tuple[float, int] | None = None  # when the current window began, and the bytes by then
        self._looks = 0  # windows at the first width that saw bytes
        self.rate = 0.0  # bytes a second over the last window

    @property
    def kept(self) -> int:
        """The width to hold once no more is measured: not a halving still waiting for its window."""
        return self.width if self._best is None or self.width >= self._best[0] else self._best[0]

    def begin(self, now: float, received: int) -> None:
        """Open a window at ``now``, with ``received`` bytes in all so far: the current width has taken effect."""
        self._mark = (now, received)

    def step(self, now: float, received: int) -> bool:
        """Close the window at ``now`` with ``received`` bytes in all; True while the width may still change."""
        assert self._mark is not None, "a window is closed only after it was opened"
        began, had = self._mark
        rate = self.rate = (received - had) / max(now - began, 1e-6)
        self._mark = None
        measuring = self._looks < BASELINE
        if not measuring and self._best is not None and rate < self._best[1] / GAIN:
            self.width = self._best[0]  # the last halving lost rate: undo it
            return False
        self._best = (self.width, max(rate, self._best[1] if self._best else 0.0))
        if measuring:
            # The first width is what every halving is held against: one stalled window (a cold server, a
            # lost packet) would make half the connections look as good; its best of BASELINE windows is taken,
            # and a window without a byte is no look at all.
            self._looks += rate > 0
            if self._looks < BASELINE:
                return True
        if self.width == 1:
            return False
        self.width //= 2
        return True


class Lanes:
    """The threads of one chunked file and the ramp's width: thread ``n`` takes a chunk only while ``n`` is
    below the width, and waits above it until the width grows back or the ramp is over."""

    def __init__(self, width: int) -> None:
        self._changed = threading.Condition()
        self._width = width
        self._busy: set[int] = set()  # threads holding a chunk
        self._over = False  # the width is final: a thread above it stops

    def enter(self, n: int) -> bool:
        """Before thread ``n`` takes a chunk: True once it may (it holds a lane until ``leave``), False if it is
        to stop."""
        with self._changed:
            self._changed.wait_for(lambda: n < self._width or self._over)
            if n >= self._width:
                return False
            self._busy.add(n)
            return True

    def leave(self, n: int) -> None:
        with self._changed:
            self._busy.discard(n)
            self._changed.notify_all()

    def narrowed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every thread above the width to have let go of its chunk; True
        once so."""
        with self._changed:
            return self._changed.wait_for(lambda: max(self._busy, default=-1) < self._width, timeout)

    def resize(self, width: int) -> None:
        with self._changed:
            self._width = width
            self._changed.notify_all()

    def end(self, width: int) -> None:
        """The width is final: threads waiting above it stop."""
        with self._changed:
            self._width, self._over = width, True
            self._changed.notify_all()
