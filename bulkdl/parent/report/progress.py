"""Live progress on a terminal: one overall line and a row per file in flight. Draws nothing when off.

The parent's loop calls tick() for every progress tick and finished() for every result, thousands of times a
second on a big batch, so both only count. The frame is built when rich's Live refresh thread asks for it
(``__rich_console__``, REFRESH_PER_SECOND times a second), from a snapshot of those counters; it never holds
more rows than the terminal has lines, so neither a redraw nor the last one at stop costs more with 100,000
files than with ten.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from types import TracebackType

from rich.console import Console, ConsoleOptions, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ...sizes import format_size
from ...values import FileResult

REFRESH_PER_SECOND = 8
RATE_WINDOW_SECONDS = 5.0  # long enough to smooth the bursts in which the parent drains ticks
_FIXED_LINES = 3  # the overall line, the "more in flight" line, and the line the cursor waits on
_BAR_WIDTH = 30


@dataclass(slots=True)
class _Flight:
    """A file that has sent bytes and has no result yet: what its row shows."""

    name: str
    got: int  # bytes received, at most ``size`` (a segment that restarts sends some twice)
    size: int | None


@dataclass(frozen=True, slots=True)
class _Frame:
    """What one frame shows, copied under the lock so that drawing it needs none."""

    done: int
    files: int
    settled: int  # bytes of finished files and received bytes of files in flight
    total: int  # known sizes; a finished file counts what it ended with
    sized: bool  # every file's size known (from the manifest, or its answer): the bar is by bytes, else by files
    rate: float  # bytes per second, over the last RATE_WINDOW_SECONDS
    eta: float | None
    rows: tuple[tuple[str, int, int | None], ...]
    more: int  # files in flight without a row


class _Window:
    """Bytes per second over the last RATE_WINDOW_SECONDS, from the running total sampled at each frame."""

    def __init__(self, now: float) -> None:
        self._samples = deque([(now, 0)])

    def rate(self, now: float, received: int) -> float:
        samples = self._samples
        samples.append((now, received))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW_SECONDS:
            samples.popleft()  # the oldest kept sample is the last one at or before the window's start
        then, before = samples[0]
        return (received - before) / (now - then) if now > then else 0.0


class ProgressView:
    """Files done/total, bytes, rate and ETA, plus a row per file in flight; draws nothing when disabled.

    ``clock`` is for tests, which move time themselves.
    """

    def __init__(
        self,
        enabled: bool,
        names: Mapping[int, str],
        sizes: Mapping[int, int | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._names, self._sizes, self._clock = names, sizes, clock
        self._learnt: dict[int, int] = {}  # sizes the manifest did not give, from the first tick that knew
        self._total = sum(size for size in sizes.values() if size is not None)
        self._unsized = sum(size is None for size in sizes.values())
        self._done = self._done_bytes = self._received = self._flight_bytes = 0
        self._flight: dict[int, _Flight] = {}
        self._finished: set[int] = set()
        self._started = clock()
        self._window = _Window(self._started)
        self._lock = threading.Lock()  # ticks come from the parent's loop, frames from rich's refresh thread
        self._live: Live | None = None
        if enabled:
            self._live = Live(
                self,
                console=Console(file=sys.stdout),
                refresh_per_second=REFRESH_PER_SECOND,
                transient=True,
            )

    def __enter__(self) -> ProgressView:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()

    @property
    def active(self) -> list[str]:
        """The files that have a row of their own right now."""
        with self._lock:
            return [flight.name for flight in self._flight.values()]

    def tick(self, index: int, n: int, size: int | None) -> None:
        # A file's last tick travels on another channel than its result and may arrive after it.
        if self._live is None or index in self._finished:
            return
        with self._lock:
            self._received += n
            flight = self._flight.get(index)
            if flight is None:
                flight = self._flight[index] = _Flight(self._names[index], 0, self._size_of(index))
            if flight.size is None and size is not None:
                flight.size = self._learnt[index] = size
                self._total += size
                self._unsized -= 1
            got = flight.got + n if flight.size is None else min(flight.got + n, flight.size)
            self._flight_bytes += got - flight.got
            flight.got = got

    def finished(self, result: FileResult) -> None:
        """Count the file done, whatever its status; its row leaves. The total takes the size it ended with."""
        if self._live is None or result.index in self._finished:
            return
        with self._lock:
            self._finished.add(result.index)
            flight = self._flight.pop(result.index, None)
            got = flight.got if flight is not None else 0
            expected = self._size_of(result.index)
            self._learnt.pop(result.index, None)
            final = result.size if result.size is not None else got  # a failed file: what it received
            self._total += final - (expected or 0)
            self._unsized -= expected is None
            self._flight_bytes -= got
            self._done_bytes += final
            self._done += 1

    def _size_of(self, index: int) -> int | None:
        size = self._sizes.get(index)
        return self._learnt.get(index) if size is None else size

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        yield _draw(self._frame(max(0, options.size.height - _FIXED_LINES)))

    def _frame(self, room: int) -> _Frame:
        with self._lock:
            now = self._clock()
            rate = self._window.rate(now, self._received)
            rows = tuple((f.name, f.got, f.size) for f in islice(self._flight.values(), room))
            return _Frame(
                done=self._done,
                files=len(self._names),
                settled=self._done_bytes + self._flight_bytes,
                total=self._total,
                sized=self._unsized == 0,
                rate=rate,
                eta=self._eta(rate, now - self._started),
                rows=rows,
                more=len(self._flight) - len(rows),
            )

    def _eta(self, rate: float, elapsed: float) -> float | None:
        """From the bytes left once every size is known, else from the files left at the pace so far."""
        if self._unsized == 0:
            left = self._total - self._done_bytes - self._flight_bytes
            return left / rate if rate > 0 else (0.0 if left <= 0 else None)
        if self._done == 0:
            return None
        return elapsed * (len(self._names) - self._done) / self._done


def _draw(frame: _Frame) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    grid.add_column(width=_BAR_WIDTH)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    # Bytes over a total that leaves out the sizes still unknown would read as done long before the end
    # (a manifest without sizes, a cluster's files before they start): until all are known, the bar counts files.
    if frame.sized:
        bar = ProgressBar(total=frame.total or None, completed=frame.settled, width=_BAR_WIDTH)
        amount = f"{format_size(frame.settled)}/{format_size(frame.total)}"
    else:
        bar = ProgressBar(total=frame.files, completed=frame.done, width=_BAR_WIDTH)
        amount = f"{format_size(frame.settled)} so far"
    grid.add_row(
        Text(f"all files {frame.done}/{frame.files}", style="bold"),
        bar,
        Text(amount, style="green"),
        Text(f"{format_size(int(frame.rate))}/s", style="red"),
        Text(f"ETA {_clock_time(frame.eta)}", style="cyan"),
    )
    for name, got, size in frame.rows:
        shown = format_size(got) if size is None else f"{format_size(got)}/{format_size(size)}"
        grid.add_row(Text(name), ProgressBar(total=size, completed=got, width=_BAR_WIDTH), Text(shown), "", "")
    if frame.more:
        grid.add_row(Text(f"and {frame.more} more in flight", style="dim"))
    return grid


def _clock_time(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02}:{secs:02}"
